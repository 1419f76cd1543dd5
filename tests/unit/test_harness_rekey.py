"""Issue 4's rekey tests on real packets: both sides start from a real IKEv2
exchange, every data and control packet is sealed by the sender's native
dataplane and opened by the receiver's, and a seq-numbered stream flows both
ways the whole time.

The witness for "never sealed with keys the other side cannot open" is the
receiving dataplanes' own drop counters: DP_UNKNOWN_ID (no such inbound SA),
DP_AUTH_FAILED (wrong key) and DP_TOO_OLD must stay at zero.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p3hw.protocol.recovery import ScheduleReconnect, SyslogMessage, TerminateEnterpriseConnections
from p3hw.protocol.session import SessionConfig
from p3hw.simulators.harness import DropControl, Harness, HarnessReport
from p3hw.simulators.link import LinkConfig
from p3hw.wire.control import MsgType

P_ADDR, S_ADDR = "10.255.0.1", "10.255.0.2"
#: Drop reasons that mean a packet was sealed with keys the receiver did not hold.
KEY_DROPS = {"DP_UNKNOWN_ID", "DP_AUTH_FAILED", "DP_TOO_OLD"}


def native_harness(seed: int = 0, data_interval_s: float = 0.002, to_secondary: LinkConfig | None = None,
                   to_primary: LinkConfig | None = None, **overrides: object) -> Harness:
    settings_: dict[str, object] = {
        "rekey_wait_s": 3600.0, "grace_s": 1.0, "retransmit_s": 0.5,
        "heartbeat_time_s": 15.0, "heartbeat_fail_s": 120.0,
    }
    settings_.update(overrides)
    config = SessionConfig("primary", "aes-256-gcm", P_ADDR, S_ADDR, **settings_)  # type: ignore[arg-type]
    return Harness(seed=seed, primary_config=config, data_interval_s=data_interval_s, handshake=True,
                   to_secondary=to_secondary, to_primary=to_primary)


def assert_nothing_lost(report: HarnessReport) -> None:
    assert report.data_sent > 0
    assert report.data_delivered == report.data_sent
    assert report.data_dropped_by_link == 0
    assert report.data_rejected == {} and report.control_rejected == {}
    assert report.data_out_of_order == 0
    assert report.rekey_rejected == 0 and report.rekey_out_of_order == 0
    assert report.dataplane_drops == {}  # the native witness: nothing refused, for any reason
    assert report.key_mismatch_violations == 0
    assert report.install_errors == [] and report.seal_failures == {}
    assert report.misclassified == 0 and report.corrupted == 0
    assert report.sessions_lost == []


def test_the_sessions_run_on_the_keys_of_the_real_exchange() -> None:
    harness = native_harness()
    assert harness.handshake_results is not None
    at_primary, at_secondary = harness.handshake_results
    assert harness.primary.dataplane.installed == [at_primary.keys.inbound]
    assert harness.secondary.dataplane.installed == [at_secondary.keys.inbound]
    assert at_primary.keys.outbound == at_secondary.keys.inbound  # what one seals, the other opens
    harness.run_until(1.0)
    harness.quiesce()
    report = harness.report()
    assert report.data_sent >= 900  # one packet per 2 ms each way
    assert report.control_delivered >= 2  # HELLO and its ACK crossed as sealed control packets
    assert_nothing_lost(report)
    # The dataplanes really carried them: every stream packet was sealed and opened natively.
    for side in (harness.primary, harness.secondary):
        counters = side.dataplane.dp.counters()
        assert counters.opened_packets == side.stream.delivered + side.control_delivered
        assert counters.control_packets == side.control_delivered


# 10,000 rekeys took 6-37 s of real crypto on a shared 2-core machine (its load): the
# default suite runs 2,000, the slow marker the full 10,000.
@pytest.mark.parametrize("rekeys", [2_000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_consecutive_rekeys_on_real_packets_lose_nothing(rekeys: int, capsys: pytest.CaptureFixture[str]) -> None:
    # One data packet per 5 ms each way: at a rekey every ~30 ms, each rekey
    # still has packets sealed with the old and the new SAs in flight.
    harness = native_harness(seed=rekeys, data_interval_s=0.005, rekey_wait_s=0.01, grace_s=0.5)
    while len(harness.primary.rekeys_completed) < rekeys:
        harness.step(harness.now + 1.0)
    harness.quiesce()
    report = harness.report()
    assert report.rekeys_completed == rekeys
    assert harness.secondary.session.secondary is not None
    assert harness.secondary.session.secondary.completed == rekeys
    assert_nothing_lost(report)
    for side in (harness.primary, harness.secondary):
        ids = [sa.p3_id for sa in side.dataplane.installed]
        assert len(set(ids)) == len(ids) == rekeys + 1  # never an ID reused
        assert len({sa.key for sa in side.dataplane.installed}) == rekeys + 1
    with capsys.disabled():
        print(f"\n[native harness] {report.rekeys_completed} rekeys in {harness.now:.1f} virtual s: "
              f"{report.data_sent} data packets sealed, {report.data_delivered} opened in order, "
              f"{report.control_delivered} control packets, dataplane drops {report.dataplane_drops or 0}")


# Which link carries which message: REKEY and SWITCH go to the secondary.
STEP_LINKS = {
    MsgType.REKEY: "to_secondary",
    MsgType.REKEY_STATUS: "to_primary",
    MsgType.SWITCH: "to_secondary",
    MsgType.SWITCH_ACK: "to_primary",
}
# The primary's request that a lost step makes it retransmit.
RETRANSMITTED = {
    MsgType.REKEY: MsgType.REKEY,
    MsgType.REKEY_STATUS: MsgType.REKEY,
    MsgType.SWITCH: MsgType.SWITCH,
    MsgType.SWITCH_ACK: MsgType.SWITCH,
}


@pytest.mark.parametrize("step", list(STEP_LINKS), ids=lambda m: m.name)
def test_rekey_on_real_packets_survives_one_lost_step(step: MsgType) -> None:
    harness = native_harness()
    rule = DropControl(step, count=1)
    getattr(harness, STEP_LINKS[step]).drop_rules.append(rule)
    harness.run_until(1.0)
    harness.rekey()
    harness.run_until(5.0)
    harness.quiesce()
    assert rule.dropped == 1
    assert len(harness.primary.rekeys_completed) == 1
    assert harness.primary.control_sent[RETRANSMITTED[step].name] == 2  # exactly one retry
    # Both sides now seal with the new SAs, and the old ones are gone after the grace period.
    for side in (harness.primary, harness.secondary):
        assert list(side.dataplane.inbound) == [side.dataplane.installed[-1].p3_id]
    assert_nothing_lost(harness.report())


@pytest.mark.parametrize("step", list(STEP_LINKS), ids=lambda m: m.name)
def test_rekey_step_lost_five_times_on_real_packets_retries_four_times_then_recovers(step: MsgType) -> None:
    harness = native_harness()
    rule = DropControl(step, count=5)
    getattr(harness, STEP_LINKS[step]).drop_rules.append(rule)
    harness.run_until(1.0)
    harness.rekey()
    harness.run_until(10.0)
    assert rule.dropped == 5
    assert harness.primary.control_sent[RETRANSMITTED[step].name] == 5  # the first try and exactly four retries
    lost = harness.primary.lost
    assert lost is not None and lost.reason_code == "P3-E402"
    assert lost.detail.endswith("after 4 retries")
    terminate, syslog = harness.primary.recovery_actions[:2]
    assert terminate == TerminateEnterpriseConnections(S_ADDR, "P3-E402")
    assert isinstance(syslog, SyslogMessage) and syslog.message.startswith("P3-E402")
    # The primary's peer is gone from its dataplane; what still reaches it is
    # refused as an unknown session — never as a wrong key or unknown SA.
    assert harness.primary.dataplane.torn_down
    report = harness.report()
    assert report.key_mismatch_violations == 0
    assert set(report.data_rejected) <= {"SESSION_DOWN"}
    assert not KEY_DROPS & set(report.dataplane_drops)
    assert set(report.dataplane_drops) <= {"DP_UNKNOWN_SESSION"}


RUN_S = 20.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.3),
    reorder=st.floats(0.0, 0.3),
    duplicate=st.floats(0.0, 0.1),
    jitter_s=st.floats(0.0, 0.01),
    pfs=st.booleans(),
)
def test_rekeys_on_real_packets_under_loss_and_reordering_complete_or_recover(
    seed: int, loss: float, reorder: float, duplicate: float, jitter_s: float, pfs: bool,
) -> None:
    link = LinkConfig(delay_s=0.005, jitter_s=jitter_s, loss=loss, reorder=reorder, duplicate=duplicate,
                      reorder_extra_s=0.02)
    # The exchange runs on a clean link (its own loss handling is tested elsewhere);
    # the impairments start with the sessions.
    harness = native_harness(seed=seed, data_interval_s=0.01, rekey_wait_s=0.3, retransmit_s=0.2,
                             heartbeat_time_s=1.0, heartbeat_fail_s=4.0, pfs=pfs)
    harness.to_secondary.config = harness.to_primary.config = link
    harness.run_until(harness.now + RUN_S)
    harness.quiesce()
    report = harness.report()

    # The witness: no dataplane ever refused a packet for its keys or its P3 ID.
    assert not KEY_DROPS & set(report.dataplane_drops), report.dataplane_drops
    assert report.key_mismatch_violations == 0
    assert report.install_errors == [] and report.seal_failures == {}
    assert report.misclassified == 0 and report.corrupted == 0
    # The only refusals: the link's duplicates (replay) and packets reaching a side whose session is down.
    allowed = {"DP_REPLAY"} if duplicate else set()
    assert set(report.data_rejected) <= allowed | {"SESSION_DOWN"}
    assert set(report.control_rejected) <= allowed
    assert set(report.dataplane_drops) <= allowed | {"DP_UNKNOWN_SESSION"}
    if "DP_UNKNOWN_SESSION" in report.dataplane_drops:
        assert report.sessions_lost
    assert report.rekey_out_of_order == 0
    if not reorder and not jitter_s:
        assert report.data_out_of_order == 0

    for side in (harness.primary, harness.secondary):
        if side.lost is None:
            continue
        # P3-E501: the other side lost it first and said so (SHUTDOWN).
        assert side.lost.reason_code in {"P3-E402", "P3-E408", "P3-E500", "P3-E501", "P3-E505"}
        assert isinstance(side.recovery_actions[0], TerminateEnterpriseConnections)
        assert isinstance(side.recovery_actions[1], SyslogMessage)
        assert side.recovery_actions[1].message.startswith(side.lost.reason_code)
        if side.name == "secondary":
            assert any(isinstance(a, ScheduleReconnect) for a in side.recovery_actions)
    if harness.primary.lost is None and harness.secondary.lost is None:
        # Both alive: rekeys kept completing during the whole run.
        assert len(harness.primary.rekeys_completed) >= RUN_S / 2
