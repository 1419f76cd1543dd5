"""Heartbeats in virtual time: when they are sent, when the peer is declared lost."""

from __future__ import annotations

import pytest

from p3hw.protocol.liveness import Liveness, LivenessAction
from p3hw.protocol.recovery import ScheduleReconnect, SyslogMessage, TerminateEnterpriseConnections
from p3hw.protocol.session import SessionConfig
from p3hw.simulators.harness import Harness
from p3hw.simulators.link import LinkConfig
from p3hw.wire.control import MsgType


def _drive(liveness: Liveness, until_s: float) -> list[tuple[float, LivenessAction]]:
    happened = []
    while (timer := liveness.get_timer()) is not None and timer <= until_s:
        liveness.handle_timer(timer)
        happened += [(timer, action) for action in liveness.events()]
    return happened


def test_heartbeat_after_heartbeat_time_then_lost_after_heartbeat_fail() -> None:
    liveness = Liveness(now=0.0, heartbeat_time_s=15.0, heartbeat_fail_s=120.0)
    liveness.handle_timer(14.999)
    assert liveness.events() == []
    happened = _drive(liveness, 1000.0)
    sends = [at for at, action in happened if action is LivenessAction.SEND_HEARTBEAT]
    # One heartbeat every heartbeat_time while unanswered, lost heartbeat_fail after the first.
    assert sends == [15.0 * n for n in range(1, 9)]
    assert happened[-1] == (135.0, LivenessAction.PEER_LOST)
    assert liveness.get_timer() is None


def test_any_answer_restarts_the_idle_clock() -> None:
    liveness = Liveness(now=0.0, heartbeat_time_s=15.0, heartbeat_fail_s=120.0)
    assert _drive(liveness, 15.0) == [(15.0, LivenessAction.SEND_HEARTBEAT)]
    liveness.heard_from_peer(15.2)
    assert liveness.get_timer() == 30.2
    liveness.heard_from_peer(29.0)
    happened = _drive(liveness, 200.0)
    assert happened[0] == (44.0, LivenessAction.SEND_HEARTBEAT)
    assert happened[-1] == (164.0, LivenessAction.PEER_LOST)


def _harness(heartbeat_time_s: float, heartbeat_fail_s: float, data_interval_s: float = 0.05) -> Harness:
    config = SessionConfig(
        "primary", "aes-256-gcm", "10.255.0.1", "10.255.0.2",
        heartbeat_time_s=heartbeat_time_s, heartbeat_fail_s=heartbeat_fail_s,
    )
    return Harness(seed=1, primary_config=config, data_interval_s=data_interval_s)


def test_idle_session_stays_up_on_heartbeats_alone() -> None:
    harness = _harness(15.0, 120.0)
    harness.run_until(600.0)
    assert harness.primary.lost is None and harness.secondary.lost is None
    # Each side's heartbeat is answered, so neither needs many: about one per 15 s in all.
    heartbeats = harness.primary.control_sent["HEARTBEAT"] + harness.secondary.control_sent["HEARTBEAT"]
    assert 600 / 15 - 2 <= heartbeats <= 2 * 600 / 15
    assert harness.primary.control_sent["HEARTBEAT_ACK"] + harness.secondary.control_sent["HEARTBEAT_ACK"] == heartbeats


def test_idle_link_cut_is_detected_by_both_sides_at_heartbeat_fail_with_e500() -> None:
    harness = _harness(15.0, 120.0, data_interval_s=0.0)
    harness.run_until(100.0)
    last_heard = {side.name: side.session.liveness.last_heard_s for side in (harness.primary, harness.secondary)}
    for link in (harness.to_primary, harness.to_secondary):
        link.config.loss = 1.0
    harness.run_until(400.0)
    for side in (harness.primary, harness.secondary):
        assert side.lost is not None and side.lost.reason_code == "P3-E500"
        # First heartbeat heartbeat_time after the last message heard, lost heartbeat_fail later.
        assert side.recovery_actions[0] == TerminateEnterpriseConnections(side.recovery.peer, "P3-E500")
        syslog = side.recovery_actions[1]
        assert isinstance(syslog, SyslogMessage) and syslog.reason_code == "P3-E500"
        lost_at = last_heard[side.name] + 15.0 + 120.0
        assert f"time_s={lost_at:.3f}" in syslog.message
    reconnect = harness.secondary.recovery_actions[2]
    assert isinstance(reconnect, ScheduleReconnect) and reconnect.wait_s == 5.0
    assert len(harness.primary.recovery_actions) == 2  # the primary never reconnects (spec §2.1.2)


def test_shutdown_from_the_peer_ends_the_session_with_e501() -> None:
    harness = _harness(15.0, 120.0)
    harness.run_until(1.0)
    harness.do(harness.primary, "shutdown")
    harness.run_until(2.0)
    assert harness.primary.lost is not None and harness.primary.lost.reason_code == "P3-E504"
    assert harness.secondary.lost is not None and harness.secondary.lost.reason_code == "P3-E501"
    assert harness.primary.control_sent[MsgType.SHUTDOWN.name] == 1


def test_heartbeat_round_trip_is_measured_over_the_link() -> None:
    """Status shows the heartbeat RTT (spec §2.1.1.1): twice the one-way delay of the link."""
    config = SessionConfig("primary", "aes-256-gcm", "10.255.0.1", "10.255.0.2", heartbeat_time_s=2.0,
                           heartbeat_fail_s=10.0)
    harness = Harness(primary_config=config, data_interval_s=0.0, to_secondary=LinkConfig(delay_s=0.030),
                      to_primary=LinkConfig(delay_s=0.020))
    assert harness.secondary.session.status().heartbeat_rtt_ms is None
    # Idle past heartbeat_time: the secondary (last to hear) sends one; its answer resets the primary's clock.
    harness.run_until(3.0)
    assert harness.secondary.control_sent["HEARTBEAT"] == 1
    assert harness.secondary.session.status().heartbeat_rtt_ms == pytest.approx(50.0, abs=0.5)
