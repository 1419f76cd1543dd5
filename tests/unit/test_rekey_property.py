"""Property: under random loss (up to 30 %), reordering and duplication, rekeying
either completes or the session recovers — and never does one side seal
with keys the other cannot open for longer than the grace period."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p3hw.protocol.recovery import ScheduleReconnect, SyslogMessage, TerminateEnterpriseConnections
from p3hw.protocol.session import SessionConfig
from p3hw.simulators.harness import Harness
from p3hw.simulators.link import LinkConfig

RUN_S = 20.0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.3),
    reorder=st.floats(0.0, 0.3),
    duplicate=st.floats(0.0, 0.1),
    jitter_s=st.floats(0.0, 0.01),
    pfs=st.booleans(),
)
def test_rekeys_under_loss_and_reordering_complete_or_recover(
    seed: int, loss: float, reorder: float, duplicate: float, jitter_s: float, pfs: bool,
) -> None:
    config = SessionConfig(
        "primary", "aes-256-gcm", "10.255.0.1", "10.255.0.2",
        rekey_wait_s=0.3, grace_s=1.0, retransmit_s=0.2, heartbeat_time_s=1.0, heartbeat_fail_s=4.0, pfs=pfs,
    )
    link = LinkConfig(delay_s=0.005, jitter_s=jitter_s, loss=loss, reorder=reorder, duplicate=duplicate, reorder_extra_s=0.02)
    harness = Harness(seed=seed, primary_config=config, to_secondary=link, to_primary=link, data_interval_s=0.01)
    harness.run_until(RUN_S)
    harness.quiesce()
    report = harness.report()

    # Never sealed with a key the peer could not open (beyond grace), never an ID reused.
    assert report.key_mismatch_violations == 0
    assert report.install_errors == []
    # The only rejections are the link's duplicates and packets reaching a side
    # whose session is already down — none from a rekey (unknown ID, wrong key).
    allowed = {"DP_REPLAY"} if duplicate else set()
    assert set(report.data_rejected) <= allowed | {"SESSION_DOWN"}
    assert set(report.control_rejected) <= allowed
    assert report.rekey_rejected == 0
    assert report.rekey_out_of_order == 0
    if not reorder and not jitter_s:
        assert report.data_out_of_order == 0

    for side in (harness.primary, harness.secondary):
        if side.lost is None:
            continue
        # Recovery ran, with a reason code, and the secondary will reconnect.
        assert side.lost.reason_code in {"P3-E402", "P3-E408", "P3-E500"}
        assert isinstance(side.recovery_actions[0], TerminateEnterpriseConnections)
        assert isinstance(side.recovery_actions[1], SyslogMessage)
        assert side.recovery_actions[1].message.startswith(side.lost.reason_code)
        if side.name == "secondary":
            assert any(isinstance(a, ScheduleReconnect) for a in side.recovery_actions)
    if harness.primary.lost is None and harness.secondary.lost is None:
        # Both alive: rekeys kept completing during the whole run.
        assert len(harness.primary.rekeys_completed) >= RUN_S / 2
        assert harness.primary.rekeys_completed[-1].rekey_id >= len(harness.primary.rekeys_completed)
