"""A peer that goes silent while traffic flows is found in well under heartbeat_fail (issue 16).

The spec's rule (a heartbeat after heartbeat_time, lost heartbeat_fail after
the first unanswered one: 135 s of silence with the defaults) stays the rule
on an idle link. When this side keeps sending data and nothing at all comes
back (no data, no control) for heartbeat_time, it probes at once and declares
the peer lost (P3-E505) after the probe deadline: max(10 s, 3 heartbeat round
trips), never more than heartbeat_fail. Machine-level tests, then the
virtual-time harness on real packets (the harness feeds the sessions the
dataplanes' packet counters as the runtime does).
"""

from __future__ import annotations

import re

import pytest

from p3hw.constants import SILENT_PEER_DEADLINE_MIN_S, SILENT_PEER_PROBES
from p3hw.protocol.liveness import Liveness, LivenessAction
from p3hw.protocol.recovery import ScheduleReconnect, SyslogMessage
from p3hw.protocol.session import SessionConfig
from p3hw.simulators.harness import DropControl, Harness, Side
from p3hw.wire.control import MsgType

HEARTBEAT_TIME_S = 15.0
HEARTBEAT_FAIL_S = 120.0
REPORT_EVERY_S = 0.5  # the runtime reads the counters twice a second


def drive(liveness: Liveness, until_s: float, *, sending: bool, answer_after_s: float | None = None,
          start_s: float = 0.0) -> list[tuple[float, LivenessAction]]:
    """Virtual time: traffic reports every REPORT_EVERY_S, the machine's timers, optional answers."""
    happened: list[tuple[float, LivenessAction]] = []
    answers: list[float] = []
    report_s = start_s
    while True:
        timer = liveness.get_timer()
        candidates = [t for t in (timer, report_s, *answers) if t is not None]
        now = min(candidates)
        if now > until_s or liveness.lost:
            return happened
        if answers and now == min(answers):
            answers.remove(now)
            liveness.heard_from_peer(now)
        if now == report_s:
            liveness.traffic(now, sent=sending, received=False)
            report_s += REPORT_EVERY_S
        if timer is not None and now >= timer:
            liveness.handle_timer(now)
            for action in liveness.events():
                happened.append((now, action))
                if action is LivenessAction.SEND_HEARTBEAT and answer_after_s is not None:
                    answers.append(now + answer_after_s)


def test_silent_peer_that_is_sent_data_is_probed_then_lost_after_the_probe_deadline() -> None:
    liveness = Liveness(0.0, HEARTBEAT_TIME_S, HEARTBEAT_FAIL_S)
    happened = drive(liveness, 1000.0, sending=True)
    probes = [at for at, action in happened if action is LivenessAction.SEND_HEARTBEAT]
    step = SILENT_PEER_DEADLINE_MIN_S / SILENT_PEER_PROBES
    assert probes == pytest.approx([HEARTBEAT_TIME_S + step * n for n in range(SILENT_PEER_PROBES)])
    assert happened[-1] == (HEARTBEAT_TIME_S + SILENT_PEER_DEADLINE_MIN_S, LivenessAction.PEER_SILENT)


def test_idle_silent_peer_keeps_the_spec_timers() -> None:
    liveness = Liveness(0.0, HEARTBEAT_TIME_S, HEARTBEAT_FAIL_S)
    happened = drive(liveness, 1000.0, sending=False)
    assert happened[-1] == (HEARTBEAT_TIME_S + HEARTBEAT_FAIL_S, LivenessAction.PEER_LOST)


def test_one_way_traffic_with_answered_heartbeats_is_never_declared_lost() -> None:
    """A UDP stream with no return traffic: only heartbeat answers come back, and that is enough."""
    liveness = Liveness(0.0, HEARTBEAT_TIME_S, HEARTBEAT_FAIL_S)
    happened = drive(liveness, 3600.0, sending=True, answer_after_s=0.2)
    assert not liveness.lost
    assert {action for _, action in happened} == {LivenessAction.SEND_HEARTBEAT}
    assert len(happened) <= 3600.0 / HEARTBEAT_TIME_S


def test_probe_deadline_grows_with_a_long_round_trip_and_never_passes_heartbeat_fail() -> None:
    liveness = Liveness(0.0, HEARTBEAT_TIME_S, HEARTBEAT_FAIL_S)
    assert liveness.probe_deadline_s == SILENT_PEER_DEADLINE_MIN_S
    liveness.rtt_s = 5.0
    assert liveness.probe_deadline_s == 15.0
    short = Liveness(0.0, 1.0, 3.0)
    assert short.probe_deadline_s == 3.0
    # With a heartbeat_fail that short the spec's rule decides: P3-E500, as before.
    assert drive(short, 100.0, sending=True)[-1] == (4.0, LivenessAction.PEER_LOST)


def busy_harness(seed: int = 1) -> Harness:
    config = SessionConfig("primary", "aes-256-gcm", "10.255.0.1", "10.255.0.2",
                           heartbeat_time_s=HEARTBEAT_TIME_S, heartbeat_fail_s=HEARTBEAT_FAIL_S)
    return Harness(seed=seed, primary_config=config, data_interval_s=0.05)


def lost_at_s(side: Side) -> float:
    line = next(a for a in side.recovery_actions if isinstance(a, SyslogMessage) and a.severity == "err")
    found = re.search(r"time_s=([\d.]+)", line.message)
    assert found is not None
    return float(found.group(1))


def test_link_cut_while_traffic_flows_is_detected_by_both_sides_in_well_under_heartbeat_fail() -> None:
    harness = busy_harness()
    harness.run_until(100.0)
    for link in (harness.to_primary, harness.to_secondary):
        link.config.loss = 1.0
    harness.run_until(400.0)
    for side in (harness.primary, harness.secondary):
        assert side.lost is not None and side.lost.reason_code == "P3-E505", side.lost
        assert "heartbeat probe(s) unanswered" in side.lost.detail
        # Last packet received just before 100 s: probes from 115 s, lost at 125 s -- not at 235 s.
        assert 100.0 + HEARTBEAT_TIME_S + SILENT_PEER_DEADLINE_MIN_S - 0.1 <= lost_at_s(side) <= 126.0
    assert any(isinstance(a, ScheduleReconnect) for a in harness.secondary.recovery_actions)


def test_silence_shorter_than_the_probe_deadline_is_survived() -> None:
    harness = busy_harness()
    harness.run_until(100.0)
    for link in (harness.to_primary, harness.to_secondary):
        link.config.loss = 1.0
    harness.run_until(120.0)   # probing since about 115 s
    for link in (harness.to_primary, harness.to_secondary):
        link.config.loss = 0.0
    harness.run_until(400.0)
    assert harness.primary.lost is None and harness.secondary.lost is None


def test_secondary_finds_a_primary_that_dropped_the_session_and_whose_shutdown_was_lost() -> None:
    """The issue's case: the primary ends the session on its own (a failed rekey), its SHUTDOWN is
    lost, and the secondary keeps sealing data into the dead session -- for 25 s, not 135 s."""
    harness = busy_harness()
    harness.to_primary.drop_rules.append(DropControl(MsgType.SWITCH_ACK, count=5))
    harness.to_secondary.drop_rules.append(DropControl(MsgType.SHUTDOWN, count=1))
    harness.run_until(1.0)
    harness.rekey()
    harness.run_until(300.0)
    primary, secondary = harness.primary, harness.secondary
    assert primary.lost is not None and primary.lost.reason_code == "P3-E402"
    assert secondary.lost is not None and secondary.lost.reason_code == "P3-E505"
    waited_s = lost_at_s(secondary) - lost_at_s(primary)
    assert waited_s <= HEARTBEAT_TIME_S + SILENT_PEER_DEADLINE_MIN_S + 1.0
