"""`p3hw bench engines`: the full P3 seal/open path on each crypto engine, as ratios to AES-NI.

Engines: AES-NI (OpenSSL EVP, synchronous: the reference), the accelerator
simulator (simulators/accelerator over native/src/lookaside.c: descriptor rings in shared memory served by the
device's own thread, no latency or cap configured, so it shows the cost of
the lookaside path itself: ring, doorbell, completion checksum, and a second
core doing the AES), and PKCS#11 on a SoftHSM2 token (C_Encrypt/C_Decrypt
with CKM_AES_GCM on the engine's worker thread), when SoftHSM2 is installed, and
the DPDK cryptodev engine on the crypto_openssl and crypto_aesni_gcm virtual
devices when build/libp3dpdk.so is built (each in its own process:
the EAL starts once per process). Sizes 64 and 1400 octets (inner IP packet) and IMIX
(64×7, 576×4, 1400×1, time-weighted). AES-128-GCM, bursts of 256 (the
dataplane cuts them into chunks of 64 ops per enqueue).

The table goes to bench/results.md between its own markers.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass

from p3hw import dataplane
from p3hw.commands.bench import write_section
from p3hw.commands.bench_loops import bench_open, bench_seal
from p3hw.dataplane import EngineParams
from p3hw.simulators import softhsm
from p3hw.simulators.accelerator import A_PEER_AT_B, B_PEER_AT_A, keys, site_pair, stream_packet

SIZES = (64, 1400)
IMIX = ((64, 7), (576, 4), (1400, 1))
CIPHER = "aes-128-gcm"
ENGINES = ("aesni", "accel-sim", "pkcs11")
#: Row name -> the DPDK virtual crypto device it runs on (--no-huge, docs/engines.md).
CRYPTODEVS = {"cryptodev openssl": "crypto_openssl0", "cryptodev aesni_gcm": "crypto_aesni_gcm0"}


@dataclass
class Row:
    engine: str
    size: str
    seal_pps: float
    open_pps: float


def rates(engine: str, size: int, seconds: float, params: EngineParams | None = None) -> tuple[float, float]:
    """(seal packets/s, open packets/s) through the full P3 path on *engine*."""
    sa = keys(CIPHER)
    a, b = site_pair(engine, params or _params(engine), sa=sa)
    inner = stream_packet(1, size)
    bench_seal(a, B_PEER_AT_A, inner, min(0.2, seconds))          # warm up
    n, t = bench_seal(a, B_PEER_AT_A, inner, seconds)
    seal_pps = n / t
    pool = [r.data for r in a.seal([(B_PEER_AT_A, inner)] * 4096, with_ip=True)]
    n, t = bench_open(b, A_PEER_AT_B, sa, pool, seconds)
    for dp in (a, b):
        if dp.engine_status().failovers:
            raise RuntimeError(f"{engine} failed over during the benchmark: {dp.engine_status()}")
    return seal_pps, n / t


_token: softhsm.Token | None = None


def _params(engine: str) -> EngineParams:
    global _token
    if engine != "pkcs11":
        return EngineParams(timeout_us=2_000_000)
    if _token is None:
        _token = softhsm.create_token()
    return EngineParams(timeout_us=2_000_000, module_path=_token.module, token_label=_token.label, pin=_token.pin)


def cryptodev_rates(vdev: str, sizes: list[int], seconds: float) -> dict[int, tuple[float, float]]:
    """rates() for the cryptodev engine on *vdev*, run in a fresh process (one EAL per process)."""
    eal = dataplane.DEFAULT_EAL_ARGS.replace("--vdev=crypto_openssl0", f"--vdev={vdev}")
    code = ("import json, sys\nfrom bench.engines import rates\nfrom p3hw.dataplane import EngineParams\n"
            "vdev, sizes, seconds, eal = json.loads(sys.argv[1])\n"
            "p = EngineParams(timeout_us=2_000_000, eal_args=eal)\n"
            "print('RATES ' + json.dumps({s: rates('cryptodev', s, seconds, p) for s in sizes}))\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([vdev, sizes, seconds, eal])], cwd=root,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=root), check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RATES ")]
    if proc.returncode or not line:
        raise RuntimeError(f"cryptodev on {vdev} failed: {proc.stderr[-1500:]}")
    return {int(k): (v[0], v[1]) for k, v in json.loads(line[-1][len("RATES "):]).items()}


def _imix(per_size: dict[int, float]) -> float:
    return sum(w for _, w in IMIX) / sum(w / per_size[s] for s, w in IMIX)


def run(seconds: float = 2.0, openssl_seconds: int = 3, write: bool = True) -> list[Row]:
    del openssl_seconds                     # the suite's reference is AES-NI, not openssl speed
    rows: list[Row] = []
    sizes = sorted(set(SIZES) | {s for s, _ in IMIX})
    engines = [e for e in ENGINES if e != "pkcs11" or softhsm.available()[0]]
    for engine in engines:
        seal: dict[int, float] = {}
        opened: dict[int, float] = {}
        for size in sizes:
            seal[size], opened[size] = rates(engine, size, seconds)
        rows += [Row(engine, str(size), seal[size], opened[size]) for size in SIZES]
        rows.append(Row(engine, "IMIX", _imix(seal), _imix(opened)))
    if os.path.exists(dataplane.DPDK_LIBRARY):
        for name, vdev in CRYPTODEVS.items():
            got = cryptodev_rates(vdev, sizes, seconds)
            seal = {s: got[s][0] for s in sizes}
            opened = {s: got[s][1] for s in sizes}
            rows += [Row(name, str(size), seal[size], opened[size]) for size in SIZES]
            rows.append(Row(name, "IMIX", _imix(seal), _imix(opened)))
    text = render(rows, seconds)
    print(text)
    if write:
        write_section("engines", text)
    return rows


def render(rows: list[Row], seconds: float) -> str:
    ref = {r.size: r for r in rows if r.engine == "aesni"}
    cpu = ", ".join(k for k, v in dataplane.cpu_features().items() if v)
    lines = [
        "## Crypto engines: P3 seal/open per engine, ratio to AES-NI",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} cores · "
        f"CPU features: {cpu} · {CIPHER} · {seconds:g} s per run · bursts of 256 · "
        f"load average {os.getloadavg()[0]:.1f} at the end (the simulator needs a core of its own: "
        "on a loaded machine its thread waits for the scheduler and the ratios fall)",
        "",
        "Size = inner IP packet octets (IMIX = 64×7, 576×4, 1400×1, time-weighted). Full P3 path (bucket padding, "
        "rotation, AEAD, header protection, anti-replay, outer IPv4+UDP). accel-sim = the accelerator simulator "
        "with no latency or cap configured: its AES runs on the device thread (a second core), so the numbers "
        "are the lookaside path's own cost (descriptor ring, doorbell, completion checksum on both sides, cache "
        "lines crossing cores; ops handed over in batches of 16 while a chunk of 64 is framed), not a hardware "
        "figure. pkcs11 = SoftHSM2 2.6 (software token: OpenSSL inside, plus the PKCS#11 "
        "call, a gather/scatter copy and the worker thread per op). cryptodev = the DPDK cryptodev engine on a "
        "software PMD (--no-huge): crypto_openssl (OpenSSL EVP inside) or crypto_aesni_gcm (intel-ipsec-mb), "
        "processed in the enqueue call on the same core, plus a gather/scatter copy into an mbuf per op.",
        "",
        "| engine | size | seal pps | open pps | seal ÷ AES-NI | open ÷ AES-NI |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        base = ref[r.size]
        lines.append(f"| {r.engine} | {r.size} | {r.seal_pps:,.0f} | {r.open_pps:,.0f} | "
                     f"{r.seal_pps / base.seal_pps:.2f} | {r.open_pps / base.open_pps:.2f} |")
    return "\n".join(lines)
