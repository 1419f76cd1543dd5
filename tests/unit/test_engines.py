"""Crypto engines: the accelerator simulator, failover to AES-NI without losing a packet, recovery.

Two dataplane contexts (A seals to B) run a seq-numbered stream of
seal/open bursts through the simulated device while faults are injected on
either side (simulators/accelerator, docs/engines.md).
"""

from __future__ import annotations

import logging
import time

import pytest

from p3hw.dataplane import Dataplane, EngineParams, EngineWatch, PeerConfig
from p3hw.reasons import P3Error
from p3hw.simulators.accelerator import (
    A_ADDR,
    B_PEER_AT_A,
    FAULTS,
    Stream,
    arm,
    keys,
    site_pair,
    stream_packet,
)

# The op timeout is long where a test asserts that nothing failed (a loaded
# machine may stall the device thread for a while: that would be a genuine
# timeout fault), and short only where a timeout fault is injected, each of
# which costs one timeout.
FAST = EngineParams(timeout_us=2_000_000)
RECOVERING = EngineParams(timeout_us=2_000_000, recover_ms=1)


def _params(fault: str, recover_ms: int = 0) -> EngineParams:
    return EngineParams(timeout_us=20_000 if fault == "timeout" else 2_000_000, recover_ms=recover_ms)


def _until_recovered(stream: Stream, dp: Dataplane, bursts: int = 400) -> None:
    """Keep the stream going until dp is back on its engine (bounded, no timing assertion)."""
    for _ in range(bursts):
        stream.burst(16)
        if not dp.engine_status().on_fallback:
            return
        time.sleep(0.002)


@pytest.mark.parametrize("cipher", ["aes-128-gcm", "aes-256-gcm"])
def test_clean_simulator_output_is_byte_identical_to_aesni(cipher: str) -> None:
    sa = keys(cipher)
    ref_a, ref_b = site_pair("aesni", sa=sa)
    sim_a, sim_b = site_pair("accel-sim", FAST, sa=sa)
    items = [(B_PEER_AT_A, stream_packet(i, size)) for i, size in enumerate((40, 64, 300, 576, 1000, 1400) * 20)]
    for with_ip in (False, True):
        ref = ref_a.seal(items, with_ip=with_ip)
        sim = sim_a.seal(items, with_ip=with_ip)
        assert [s.status for s in sim] == ["OK"] * len(items)
        assert [s.data for s in sim] == [s.data for s in ref]
        assert [s.seq for s in sim] == [s.seq for s in ref]
    # Each side opens what the other sealed: the wire format does not depend on the engine.
    wire = [s.data for s in sim_a.seal(items)]
    opened_by_aesni = ref_b.open([(w, A_ADDR, 5653) for w in wire], with_ip=False)
    assert [o.data for o in opened_by_aesni] == [p for _, p in items]
    wire = [s.data for s in ref_a.seal(items)]
    opened_by_sim = sim_b.open([(w, A_ADDR, 5653) for w in wire], with_ip=False)
    assert [o.data for o in opened_by_sim] == [p for _, p in items]
    for dp in (sim_a, sim_b):
        status = dp.engine_status()
        assert status.engine == "accel-sim" and not status.on_fallback and status.failovers == 0
        assert status.engine_ops > 0 and status.fallback_ops == 0 and status.reason is None


@pytest.mark.parametrize("side", ["seal", "open"])
@pytest.mark.parametrize("fault", FAULTS)
def test_every_fault_kind_fails_over_without_losing_a_packet(fault: str, side: str) -> None:
    short = _params(fault)
    a, b = site_pair("accel-sim", short if side == "seal" else FAST, params_b=short if side == "open" else FAST)
    stream = Stream(a, b)
    for _ in range(3):
        stream.burst(64)
    faulty = a if side == "seal" else b
    arm(faulty, fault, after_ops=10, count=3)
    for _ in range(6):
        stream.burst(64)
    report = stream.report
    assert report.sent == 9 * 64
    assert report.lost == [] and report.delivered == report.sent
    assert report.out_of_order == 0 and report.duplicates == 0 and report.statuses == {}
    status = faulty.engine_status()
    assert status.on_fallback and status.active == "aesni"
    assert status.reason == "P3-E609"
    assert status.last_fault == fault and status.faults.get(fault, 0) >= 1
    assert status.failovers == 1 and status.rerun_ops >= 1
    other = b if faulty is a else a
    assert not other.engine_status().on_fallback


def test_later_ops_go_straight_to_the_fallback_without_recovery() -> None:
    a, b = site_pair("accel-sim", FAST)
    stream = Stream(a, b)
    arm(a, "error", after_ops=5, count=1)
    stream.burst(64)
    before = a.engine_status()
    assert before.on_fallback
    for _ in range(5):
        stream.burst(64)
    after = a.engine_status()
    assert after.engine_ops == before.engine_ops            # nothing more went to the device
    assert after.fallback_ops == before.fallback_ops + 5 * 64
    assert after.recoveries == 0 and stream.report.clean


@pytest.mark.parametrize("fault", FAULTS)
def test_engine_returns_after_recovery_when_configured(fault: str) -> None:
    a, b = site_pair("accel-sim", _params(fault, recover_ms=1), params_b=FAST)
    stream = Stream(a, b)
    arm(a, fault, after_ops=20, count=2)
    stream.burst(64)
    assert a.engine_status().on_fallback
    if fault == "gone":
        stream.burst(64)
        assert a.engine_status().on_fallback                # still gone: probes fail
        arm(a, "none")                                      # the device comes back
    _until_recovered(stream, a)
    back = a.engine_status()
    assert not back.on_fallback and back.recoveries >= 1
    used = back.engine_ops
    stream.burst(64)
    assert a.engine_status().engine_ops > used              # traffic is on the device again
    assert stream.report.clean and stream.report.delivered == stream.report.sent


def test_forged_packet_is_rejected_and_does_not_fail_the_engine() -> None:
    a, b = site_pair("accel-sim", FAST)
    wire = [s.data for s in a.seal([(B_PEER_AT_A, stream_packet(i, 200)) for i in range(8)])]
    forged = bytearray(wire[3])
    forged[-1] ^= 0x01                                      # the ICV
    opened = b.open([(bytes(w), A_ADDR, 5653) for w in (wire[:3] + [bytes(forged)] + wire[4:])], with_ip=False)
    assert [o.status for o in opened] == ["OK"] * 3 + ["DP_AUTH_FAILED"] + ["OK"] * 4
    status = b.engine_status()
    assert status.forged_opens == 1 and status.failovers == 0 and not status.on_fallback
    assert b.counters().drops == {"DP_AUTH_FAILED": 1}


def test_without_a_fallback_a_fault_drops_the_packet_with_a_reason() -> None:
    a, b = site_pair("accel-sim", FAST, fallback="none")
    stream = Stream(a, b)
    arm(a, "error", after_ops=3, count=2)
    stream.burst(32)
    assert len(stream.report.lost) == 2
    assert stream.report.statuses == {"seal:DP_CRYPTO_ENGINE": 2}
    status = a.engine_status()
    assert status.reason == "P3-E609" and status.faults == {"error": 2}
    assert status.fallback == "none" and not status.on_fallback and status.failovers == 0
    assert a.counters().drops == {"DP_CRYPTO_ENGINE": 2}


def test_rekey_switch_during_failover_loses_nothing() -> None:
    a, b = site_pair("accel-sim", _params("timeout"), params_b=FAST)
    stream = Stream(a, b)
    stream.burst(64)
    new = keys("aes-128-gcm", p3_id=0x5A12, seed=9)
    b.add_inbound_sa(1, new)
    a.add_outbound_sa(B_PEER_AT_A, new, switch_after_seq=100)
    arm(a, "timeout", after_ops=20, count=1)
    for _ in range(3):
        stream.burst(64)
    assert a.outbound_id(B_PEER_AT_A) == 0x5A12
    assert a.engine_status().on_fallback
    assert stream.report.clean and stream.report.delivered == 4 * 64


def test_device_latency_and_throughput_cap_complete_every_op() -> None:
    a, b = site_pair("accel-sim", EngineParams(latency_us=50, max_ops_per_s=50_000, ring_slots=16, timeout_us=2_000_000))
    stream = Stream(a, b)
    for _ in range(4):
        stream.burst(100)                                   # more than the ring holds at once
    assert stream.report.clean and stream.report.delivered == 400
    assert a.engine_status().engine_ops == 400 and not a.engine_status().on_fallback


def test_engine_choice_is_checked() -> None:
    dp = Dataplane(2, 2)
    with pytest.raises(P3Error) as err:
        dp.set_engine("quantum")
    assert err.value.reason.name == "DP_BAD_ARGUMENT"
    with pytest.raises(P3Error) as err:
        dp.set_engine("accel-sim", EngineParams(ring_slots=3))
    assert err.value.reason.name == "DP_CRYPTO_ENGINE"
    with pytest.raises(P3Error) as err:
        dp.set_engine("accel-sim", fallback="accel-sim")
    assert err.value.reason.name == "DP_BAD_ARGUMENT"
    with pytest.raises(P3Error) as err:
        dp.inject_fault("error")                            # AES-NI has no simulated device
    assert err.value.reason.name == "DP_BAD_ARGUMENT"
    dp.add_peer(PeerConfig(1, "192.0.2.1", "192.0.2.2"))
    with pytest.raises(P3Error) as err:
        dp.set_engine("accel-sim")
    assert err.value.reason.name == "DP_BAD_ARGUMENT"


def test_simulator_takes_gcm_only() -> None:
    dp = Dataplane(2, 2)
    dp.set_engine("accel-sim", FAST)
    dp.add_peer(PeerConfig(1, "192.0.2.1", "192.0.2.2"))
    with pytest.raises(P3Error) as err:
        dp.add_outbound_sa(1, keys("aes-128-ccm"))
    assert err.value.reason.name == "DP_CRYPTO_ENGINE"
    dp.add_outbound_sa(1, keys("aes-256-gcm"))


def test_engine_watch_logs_the_failover_with_its_reason_code(caplog: pytest.LogCaptureFixture) -> None:
    a, b = site_pair("accel-sim", RECOVERING)
    logger = logging.getLogger("p3hw.test_engines")
    watch = EngineWatch(a, logger)
    assert watch.poll() == []
    stream = Stream(a, b)
    arm(a, "corrupt", after_ops=4, count=1)
    stream.burst(32)
    with caplog.at_level(logging.INFO, logger="p3hw.test_engines"):
        lines = watch.poll()
        _until_recovered(stream, a)
        lines += watch.poll()
    assert lines[0].startswith("P3-E609 ") and "corrupt" in lines[0] and "aesni" in lines[0]
    assert any("back on accel-sim" in line for line in lines[1:])
    assert any(r.getMessage().startswith("P3-E609") for r in caplog.records)
