"""In-band rekeying in the two-sided harness, with a data stream flowing both ways.

The long runs, lost steps and the loss/reordering property test are in
test_harness_rekey.py (from a real handshake).

Every test checks what a user cares about: data packets delivered, none
rejected or reordered because of a rekey, and the session's fate.
"""

from __future__ import annotations

import pytest

from p3hw.crypto.keysource import KeySource, SoftwareKeySource
from p3hw.protocol.recovery import ScheduleReconnect
from p3hw.protocol.session import SessionConfig
from p3hw.reasons import P3Error
from p3hw.simulators.harness import DropControl, Harness, HarnessReport
from p3hw.wire.control import MsgType

P_ADDR, S_ADDR = "10.255.0.1", "10.255.0.2"


def make_harness(
    seed: int = 0, cipher: str = "aes-256-gcm", data_interval_s: float = 0.002, key_source: KeySource | None = None,
    **overrides: object,
) -> Harness:
    settings: dict[str, object] = {
        "rekey_wait_s": 3600.0, "grace_s": 1.0, "retransmit_s": 0.5,
        "heartbeat_time_s": 15.0, "heartbeat_fail_s": 120.0,
    }
    settings.update(overrides)
    config = SessionConfig("primary", cipher, P_ADDR, S_ADDR, **settings)  # type: ignore[arg-type]
    return Harness(seed=seed, primary_config=config, data_interval_s=data_interval_s, key_source=key_source)


def assert_nothing_lost(report: HarnessReport) -> None:
    assert report.data_delivered == report.data_sent
    assert report.data_dropped_by_link == 0
    assert report.data_rejected == {}
    assert report.data_out_of_order == 0
    assert report.rekey_rejected == 0 and report.rekey_out_of_order == 0
    assert report.control_rejected == {}
    assert report.key_mismatch_violations == 0
    assert report.install_errors == []
    assert report.sessions_lost == []


@pytest.mark.parametrize("cipher", ["aes-128-gcm", "aes-256-ccm", "aes-128-ctr"])
def test_rekeys_work_with_every_cipher_family(cipher: str) -> None:
    harness = make_harness(cipher=cipher, rekey_wait_s=0.5)
    harness.run_until(5.2)
    harness.quiesce()
    assert len(harness.primary.rekeys_completed) >= 9
    assert_nothing_lost(harness.report())


def test_rekey_happens_every_rekey_wait_seconds() -> None:
    harness = make_harness(rekey_wait_s=60.0, data_interval_s=0.05)
    harness.run_until(59.0)
    assert harness.primary.rekeys_completed == []
    harness.run_until(305.0)
    harness.quiesce()
    assert len(harness.primary.rekeys_completed) == 5
    assert_nothing_lost(harness.report())


def test_rekey_on_demand_starts_at_once_and_does_not_stack() -> None:
    harness = make_harness()
    harness.run_until(1.0)
    assert harness.rekey() is True
    assert harness.rekey() is False  # one is already running
    harness.run_until(1.1)
    assert len(harness.primary.rekeys_completed) == 1
    assert harness.rekey() is True
    harness.run_until(2.0)
    harness.quiesce()
    assert len(harness.primary.rekeys_completed) == 2
    assert_nothing_lost(harness.report())


def test_rekey_with_pfs_exchanges_shares_and_loses_nothing() -> None:
    harness = make_harness(rekey_wait_s=0.3, pfs=True)
    harness.run_until(3.2)
    harness.quiesce()
    assert len(harness.primary.rekeys_completed) >= 9
    assert_nothing_lost(harness.report())


# Which link carries which message: REKEY and SWITCH go to the secondary.
def test_secondary_learns_of_a_failed_rekey_from_the_primary_and_schedules_reconnect() -> None:
    harness = make_harness(heartbeat_time_s=2.0, heartbeat_fail_s=6.0)
    harness.to_secondary.drop_rules.append(DropControl(MsgType.SWITCH, count=5))
    harness.run_until(1.0)
    harness.rekey()
    harness.run_until(30.0)
    assert harness.primary.lost is not None and harness.primary.lost.reason_code == "P3-E402"
    # The primary's SHUTDOWN names the cause (not a heartbeat timeout on the secondary).
    assert harness.secondary.lost is not None and harness.secondary.lost.reason_code == "P3-E501"
    assert "P3-E402" in harness.secondary.lost.detail
    assert any(isinstance(a, ScheduleReconnect) for a in harness.secondary.recovery_actions)


def test_rekeys_between_ipv6_p3_addresses() -> None:
    config = SessionConfig("primary", "aes-256-gcm", "fd00:33::1", "fd00:33::2",
                           rekey_wait_s=0.5, grace_s=1.0, retransmit_s=0.5)
    harness = Harness(seed=6, primary_config=config)
    harness.run_until(3.2)
    harness.quiesce()
    assert len(harness.primary.rekeys_completed) >= 5
    assert_nothing_lost(harness.report())


class _UnpluggableKeySource(SoftwareKeySource):
    """A key source whose device can be pulled out (an HSM token removed)."""

    unplugged = False

    def random_bytes(self, length: int) -> bytes:
        if self.unplugged:
            raise P3Error("KEY_SOURCE_FAILED", "the token does not answer")
        return super().random_bytes(length)


def test_key_source_failure_ends_the_session_with_its_reason_code() -> None:
    source = _UnpluggableKeySource()
    harness = make_harness(key_source=source)
    harness.run_until(1.0)
    source.unplugged = True
    harness.rekey()
    harness.run_until(2.0)
    lost = harness.primary.lost
    assert lost is not None and lost.reason_code == "P3-E407"
    assert "the token does not answer" in lost.detail
    assert harness.primary.recovery_actions[1].reason_code == "P3-E407"  # type: ignore[union-attr]
