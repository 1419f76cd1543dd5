"""The DPDK cryptodev crypto engine (docs/engines.md, "The DPDK cryptodev engine").

DPDK's EAL can be initialised only once per process, so every test that
starts the engine runs its scenario in a fresh Python subprocess (the
``SCENARIO`` script below, which prints one JSON line); the pytest process
itself never loads DPDK. The devices are software PMDs brought up by EAL
arguments with ``--no-huge``: ``crypto_openssl`` and ``crypto_aesni_gcm``
(intel-ipsec-mb) — the same engine code drives a QAT or any other PMD.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p3hw.dataplane import DPDK_LIBRARY, Dataplane, EngineParams
from p3hw.reasons import P3Error

ROOT = Path(__file__).resolve().parents[2]
BASE_EAL = "--no-huge -m 256 --no-shconf --no-pci --no-telemetry --log-level=*:error"
VDEVS = {"openssl": "crypto_openssl0", "aesni_gcm": "crypto_aesni_gcm0"}

# Runs in a subprocess: argv[1] is a JSON request {"scenario": ..., "eal": ...}.
SCENARIO = r"""
import json, sys, threading
from p3hw.dataplane import Dataplane, EngineParams
from p3hw.reasons import P3Error
from p3hw.simulators.accelerator import A_ADDR, B_PEER_AT_A, Stream, keys, site_pair, stream_packet

req = json.loads(sys.argv[1])
params = EngineParams(timeout_us=2_000_000, eal_args=req["eal"])
out = {}
if req["scenario"] == "identical":
    for cipher in ("aes-128-gcm", "aes-256-gcm"):
        sa = keys(cipher)
        ref_a, ref_b = site_pair("aesni", sa=sa)
        dev_a, dev_b = site_pair("cryptodev", params, sa=sa)
        items = [(B_PEER_AT_A, stream_packet(i, size)) for i, size in enumerate((40, 64, 300, 576, 1000, 1400) * 20)]
        res = {"seal_status": [], "same_wire": [], "same_seq": []}
        for with_ip in (False, True):
            ref = ref_a.seal(items, with_ip=with_ip)
            dev = dev_a.seal(items, with_ip=with_ip)
            res["seal_status"] += sorted({s.status for s in dev})
            res["same_wire"].append([s.data for s in dev] == [s.data for s in ref])
            res["same_seq"].append([s.seq for s in dev] == [s.seq for s in ref])
        wire = [s.data for s in ref_a.seal(items)]
        opened = dev_b.open([(w, A_ADDR, 5653) for w in wire], with_ip=False)
        res["opened_by_device"] = [o.data for o in opened] == [p for _, p in items]
        # A forged packet: the device says so, the fallback agrees, the engine stays in use.
        forged = bytearray(ref_a.seal(items[:1])[0].data)
        forged[-1] ^= 1
        res["forged_status"] = dev_b.open([(bytes(forged), A_ADDR, 5653)], with_ip=False)[0].status
        st = dev_b.engine_status()
        res["forged_opens"] = st.forged_opens
        res["device_status"] = [dp.engine_status().__dict__ for dp in (dev_a, dev_b)]
        out[cipher] = res
elif req["scenario"] == "stream":
    sa = keys("aes-128-gcm")
    for name, (eng_a, eng_b) in {"cryptodev_to_aesni": ("cryptodev", "aesni"),
                                 "aesni_to_cryptodev": ("aesni", "cryptodev")}.items():
        a, _ = site_pair(eng_a, params, sa=sa)
        _, b = site_pair(eng_b, params, sa=sa)
        stream = Stream(a, b)
        # The bursts run on a thread the EAL does not know, as the gateway's worker does.
        worker = threading.Thread(target=lambda: [stream.burst(n) for n in (64, 1, 17, 64, 33, 64, 8, 64)])
        worker.start()
        worker.join()
        r = stream.report
        dp = a if eng_a == "cryptodev" else b
        out[name] = {"sent": r.sent, "delivered": r.delivered, "lost": r.lost, "out_of_order": r.out_of_order,
                     "duplicates": r.duplicates, "statuses": r.statuses, "status": dp.engine_status().__dict__}
elif req["scenario"] == "many":
    # More engines over time than the device has queue pairs: each closed
    # context gives its queue pair and pools back.
    sa = keys("aes-128-gcm")
    out["rounds"] = 0
    for _ in range(12):
        a, b = site_pair("cryptodev", params, sa=sa)
        stream = Stream(a, b)
        stream.burst(32)
        if not stream.report.clean or stream.report.delivered != 32:
            break
        a.close()
        b.close()
        out["rounds"] += 1
elif req["scenario"] == "eal_first":
    # Another part of the process (as the DPDK I/O backend will) initialises the
    # EAL first, with the crypto device among its arguments; the engine uses it.
    import ctypes
    eal = ctypes.CDLL("librte_eal.so.23", mode=ctypes.RTLD_GLOBAL)
    words = [b"other"] + [w.encode() for w in req["eal"].split()]
    argv = (ctypes.c_char_p * (len(words) + 1))(*words, None)
    out["eal_init"] = eal.rte_eal_init(len(words), argv)
    a, b = site_pair("cryptodev", EngineParams(timeout_us=2_000_000, eal_args="--this-is-not-used"), sa=keys())
    stream = Stream(a, b)
    stream.burst(64)
    out["clean"] = stream.report.clean and stream.report.delivered == 64
    out["engine_ops"] = a.engine_status().engine_ops
elif req["scenario"] == "start":
    dp = Dataplane(2, 4)
    try:
        dp.set_engine("cryptodev", params, req.get("fallback", "aesni"))
        out["started"] = dp.engine_status().engine
    except P3Error as exc:
        out["error"] = exc.code
        out["message"] = str(exc)
    # A later attempt in the same process must fail the same way, never crash.
    try:
        Dataplane(2, 4).set_engine("cryptodev", params)
        out["second"] = "started"
    except P3Error as exc:
        out["second"] = exc.code
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def cryptodev_library() -> str:
    """The engine's library, built here if `make build` has not built it yet."""
    if not os.path.exists(DPDK_LIBRARY):
        subprocess.run(["make", "-s", "-C", str(ROOT / "native"), "dpdk"], check=False, capture_output=True)
    if not os.path.exists(DPDK_LIBRARY):
        pytest.skip("DPDK is not installed (pkg-config libdpdk): the cryptodev engine is not built")
    return DPDK_LIBRARY


def run_scenario(scenario: str, eal: str, **extra: Any) -> dict[str, Any]:
    """Runs SCENARIO in a fresh process (one EAL per process); returns its result."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", SCENARIO, json.dumps({"scenario": scenario, "eal": eal, **extra})],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"scenario {scenario} crashed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"scenario {scenario} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return {"result": json.loads(lines[-1][len("RESULT "):]), "stderr": proc.stderr}


@pytest.mark.dpdk
@pytest.mark.root
@pytest.mark.parametrize("pmd", sorted(VDEVS))
def test_cryptodev_seal_and_open_are_byte_identical_to_aesni(cryptodev_library: str, pmd: str) -> None:
    got = run_scenario("identical", f"{BASE_EAL} --vdev={VDEVS[pmd]}")["result"]
    for cipher in ("aes-128-gcm", "aes-256-gcm"):
        res = got[cipher]
        assert res["seal_status"] == ["OK", "OK"]
        assert res["same_wire"] == [True, True] and res["same_seq"] == [True, True]
        assert res["opened_by_device"] is True
        assert res["forged_status"] != "OK" and res["forged_opens"] == 1
        for status in res["device_status"]:
            # Every op ran on the device; nothing needed the fallback.
            assert status["engine"] == "cryptodev" and status["on_fallback"] is False
            assert status["engine_ops"] > 0 and status["failovers"] == 0 and status["reason"] is None


@pytest.mark.dpdk
@pytest.mark.root
@pytest.mark.parametrize("pmd", sorted(VDEVS))
def test_cryptodev_and_aesni_contexts_exchange_a_stream_with_zero_loss(cryptodev_library: str, pmd: str) -> None:
    got = run_scenario("stream", f"{BASE_EAL} --vdev={VDEVS[pmd]}")["result"]
    for direction in ("cryptodev_to_aesni", "aesni_to_cryptodev"):
        r = got[direction]
        assert r["sent"] == 315 and r["delivered"] == 315
        assert r["lost"] == [] and r["out_of_order"] == 0 and r["duplicates"] == 0 and r["statuses"] == {}
        assert r["status"]["engine"] == "cryptodev" and r["status"]["fallback_ops"] == 0
        assert r["status"]["engine_ops"] >= 315


@pytest.mark.dpdk
@pytest.mark.root
def test_closed_cryptodev_contexts_give_their_queue_pairs_back(cryptodev_library: str) -> None:
    got = run_scenario("many", f"{BASE_EAL} --vdev={VDEVS['openssl']}")["result"]
    assert got["rounds"] == 12


@pytest.mark.dpdk
@pytest.mark.root
def test_cryptodev_uses_an_eal_another_part_of_the_process_brought_up(cryptodev_library: str) -> None:
    run = run_scenario("eal_first", f"{BASE_EAL} --vdev={VDEVS['openssl']}")
    got = run["result"]
    assert got["eal_init"] >= 0 and got["clean"] is True and got["engine_ops"] >= 64
    assert "already initialised" in run["stderr"]


@pytest.mark.dpdk
@pytest.mark.root
@pytest.mark.parametrize("eal, why", [
    (f"{BASE_EAL} --vdev=crypto_no_such_pmd0", "EAL initialisation failed"),
    (BASE_EAL, "no crypto device with AES-GCM"),
    (f"{BASE_EAL} --no-such-eal-option", "EAL initialisation failed"),
])
def test_failing_cryptodev_gives_p3_e608_not_a_crash(cryptodev_library: str, eal: str, why: str) -> None:
    run = run_scenario("start", eal)
    got = run["result"]
    assert got["error"] == "P3-E608" and got["second"] == "P3-E608"
    assert why in run["stderr"]


def test_missing_cryptodev_library_reports_itself_unavailable(tmp_path: Path) -> None:
    dp = Dataplane(2, 4)
    with pytest.raises(P3Error) as missing:
        dp.set_engine("cryptodev", EngineParams(module_path=str(tmp_path / "libp3dpdk.so")))
    assert missing.value.code == "P3-E608" and "not built" in str(missing.value)
    # A library that is not the cryptodev engine is refused by its missing entry point, without DPDK.
    not_ours = tmp_path / "not_ours.so"
    not_ours.write_bytes(b"\x7fELF not really")
    with pytest.raises(P3Error) as wrong:
        dp.set_engine("cryptodev", EngineParams(module_path=str(not_ours)))
    assert wrong.value.code == "P3-E608"
    assert dp.engine_status().engine == "aesni"
