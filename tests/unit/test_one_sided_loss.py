"""A loss seen on one side is told to the other (issue 16): SHUTDOWN with the reason code.

In virtual time, on real packets (two native dataplanes): one side declares
the session lost on its own -- a rekey step unanswered four times (P3-E402),
heartbeats unanswered (P3-E500), its token removed (P3-E602) -- while the link toward the other side still
works. The other side must end its session within a second (P3-E501 naming
the cause) and, as a secondary, start the §2.1.7 reconnect schedule, instead
of sealing into a dead session until its own heartbeat_fail (135 s with the
spec's default timers). The links are idle (no data stream): the spec's
heartbeat timers alone decide, as on a quiet tunnel.
"""

from __future__ import annotations

import re

from p3hw.crypto.keysource import SoftwareKeySource
from p3hw.protocol.recovery import ScheduleReconnect, SyslogMessage
from p3hw.protocol.session import SessionConfig
from p3hw.reasons import P3Error
from p3hw.simulators.harness import DropControl, Harness, Side
from p3hw.simulators.link import LinkConfig
from p3hw.wire.control import MsgType

ONE_WAY_S = 0.005
#: The spec's defaults (Appendix A): a silent peer is declared lost 15 + 120 s after it was last heard.
HEARTBEAT_TIME_S = 15.0
HEARTBEAT_FAIL_S = 120.0


def idle_harness(key_source: SoftwareKeySource | None = None) -> Harness:
    config = SessionConfig("primary", "aes-256-gcm", "10.255.0.1", "10.255.0.2",
                           heartbeat_time_s=HEARTBEAT_TIME_S, heartbeat_fail_s=HEARTBEAT_FAIL_S)
    return Harness(seed=3, primary_config=config, data_interval_s=0.0, key_source=key_source,
                   to_secondary=LinkConfig(delay_s=ONE_WAY_S), to_primary=LinkConfig(delay_s=ONE_WAY_S))


class RemovableToken(SoftwareKeySource):
    """The primary's key source on a PKCS#11 token that can be pulled out."""

    removed = False

    def random_bytes(self, length: int) -> bytes:
        if self.removed:
            raise P3Error("PKCS11_TOKEN", "token 'p3hw' is gone (CKR_TOKEN_NOT_PRESENT)")
        return super().random_bytes(length)


def lost_at_s(side: Side) -> float:
    """The virtual time of the side's loss, from its reason-coded syslog line."""
    line = next(a for a in side.recovery_actions if isinstance(a, SyslogMessage) and a.severity == "err")
    found = re.search(r"time_s=([\d.]+)", line.message)
    assert found is not None, line.message
    return float(found.group(1))


def test_primary_failed_rekey_ends_the_secondarys_session_within_a_second() -> None:
    harness = idle_harness()
    harness.to_primary.drop_rules.append(DropControl(MsgType.SWITCH_ACK, count=5))
    harness.run_until(1.0)
    harness.rekey()
    harness.run_until(300.0)
    primary, secondary = harness.primary, harness.secondary
    assert primary.lost is not None and primary.lost.reason_code == "P3-E402"
    assert primary.control_sent[MsgType.SHUTDOWN.name] == 1
    assert secondary.lost is not None and secondary.lost.reason_code == "P3-E501"
    assert "P3-E402" in secondary.lost.detail and "SWITCH of rekey 1" in secondary.lost.detail
    assert lost_at_s(secondary) - lost_at_s(primary) < 1.0
    # The secondary starts the §2.1.7 schedule at once: first attempt 5 s later.
    reconnect = next(a for a in secondary.recovery_actions if isinstance(a, ScheduleReconnect))
    assert reconnect.wait_s == 5.0 and reconnect.at_s - lost_at_s(secondary) == 5.0


def test_heartbeats_lost_one_way_end_the_other_side_within_a_second() -> None:
    """The primary hears nothing (its inbound link is cut); the secondary still hears the primary."""
    harness = idle_harness()
    harness.run_until(10.0)
    harness.to_primary.config.loss = 1.0
    harness.run_until(400.0)
    primary, secondary = harness.primary, harness.secondary
    assert primary.lost is not None and primary.lost.reason_code == "P3-E500"
    assert secondary.lost is not None and secondary.lost.reason_code == "P3-E501"
    assert "P3-E500" in secondary.lost.detail
    assert lost_at_s(secondary) - lost_at_s(primary) < 1.0
    assert any(isinstance(a, ScheduleReconnect) for a in secondary.recovery_actions)


def test_secondary_heartbeat_loss_ends_the_primarys_session_within_a_second() -> None:
    harness = idle_harness()
    harness.run_until(10.0)
    harness.to_secondary.config.loss = 1.0
    harness.run_until(400.0)
    primary, secondary = harness.primary, harness.secondary
    assert secondary.lost is not None and secondary.lost.reason_code == "P3-E500"
    assert primary.lost is not None and primary.lost.reason_code == "P3-E501"
    assert lost_at_s(primary) - lost_at_s(secondary) < 1.0


def test_a_side_ended_by_the_peers_shutdown_does_not_answer_with_its_own() -> None:
    harness = idle_harness()
    harness.run_until(1.0)
    harness.do(harness.primary, "shutdown")
    harness.run_until(2.0)
    assert harness.secondary.lost is not None and harness.secondary.lost.reason_code == "P3-E501"
    assert harness.secondary.control_sent[MsgType.SHUTDOWN.name] == 0
    assert harness.secondary.control_sent[MsgType.ACK.name] >= 1


def test_token_removed_on_the_primary_ends_the_secondarys_session_within_a_second() -> None:
    token = RemovableToken()
    harness = idle_harness(key_source=token)
    harness.run_until(1.0)
    token.removed = True
    harness.rekey()
    harness.run_until(300.0)
    primary, secondary = harness.primary, harness.secondary
    assert primary.lost is not None and primary.lost.reason_code == "P3-E602"
    assert secondary.lost is not None and secondary.lost.reason_code == "P3-E501"
    assert "P3-E602" in secondary.lost.detail and "CKR_TOKEN_NOT_PRESENT" in secondary.lost.detail
    assert lost_at_s(secondary) - lost_at_s(primary) < 1.0
