"""`p3hw bench crypto`: the full P3 seal/open path against `openssl speed -evp`.

For AES-128-GCM and AES-256-GCM at 64, 512, 1400 octets (inner IP packet)
and IMIX, on one core: packets/s and Gbit/s (of inner octets) of seal and
open — framing, bucket padding, rotation, header protection, anti-replay,
outer IPv4/UDP header — next to `openssl speed -evp <cipher> -bytes N` run
in the same process, and their ratio (ops/s over ops/s). Targets (issue 3):
>= 0.85 at 1400 octets, >= 0.6 at 64 octets.

The table goes to bench/results.md between its own markers, so other suites'
sections stay as they are.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from dataclasses import dataclass

from p3hw import dataplane
from p3hw.commands.bench import write_section
from p3hw.commands.bench_loops import bench_open, bench_seal
from p3hw.crypto.keys import SaKeys, material_length
from p3hw.dataplane import Dataplane, PeerConfig

SIZES = (64, 512, 1400)
# Simple IMIX (7:4:1), inner sizes capped so the largest fits a 1500-octet path.
IMIX = ((64, 7), (576, 4), (1400, 1))
CIPHERS = ("aes-128-gcm", "aes-256-gcm")


@dataclass
class Row:
    cipher: str
    size: str
    seal_pps: float
    open_pps: float
    openssl_pps: float
    inner_bytes: float          # mean inner octets per packet

    def gbps(self, pps: float) -> float:
        return pps * self.inner_bytes * 8 / 1e9


def openssl_ops_per_s(cipher: str, size: int, seconds: int) -> float:
    """`openssl speed -evp` operations per second for one block size."""
    out = subprocess.run(["openssl", "speed", "-evp", cipher, "-bytes", str(size), "-seconds", str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(rf"^{re.escape(cipher)}\s+([\d.]+)k\s*$", line.strip(), re.IGNORECASE)
        if m:
            return float(m.group(1)) * 1000 / size
    raise RuntimeError(f"cannot parse openssl speed output for {cipher} {size}:\n{out}")


def _inner(size: int) -> bytes:
    body = bytes((i * 13) & 0xFF for i in range(size - 20))
    header = bytes([0x45, 0, size >> 8, size & 0xFF, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 5, 10, 2, 0, 9])
    return header + body


def _sites(cipher: str) -> tuple[Dataplane, Dataplane, SaKeys]:
    sa = SaKeys.from_material(0xBE4C, cipher, os.urandom(material_length(cipher)))
    hp = os.urandom(16)
    a, b = Dataplane(4, 4), Dataplane(4, 4)
    a.add_peer(PeerConfig(2, "192.0.2.1", "198.51.100.2"))
    b.add_peer(PeerConfig(1, "198.51.100.2", "192.0.2.1"))
    a.set_hp_keys(2, hp_out=hp)
    b.set_hp_keys(1, hp_in=hp)
    a.add_outbound_sa(2, sa)
    b.add_inbound_sa(1, sa)
    return a, b, sa


def p3_rates(cipher: str, size: int, seconds: float) -> tuple[float, float]:
    """(seal packets/s, open packets/s) of the full P3 path for one inner size."""
    a, b, sa = _sites(cipher)
    inner = _inner(size)
    bench_seal(a, 2, inner, min(0.2, seconds))                     # warm up
    n, t = bench_seal(a, 2, inner, seconds)
    seal_pps = n / t
    pool = [r.data for r in a.seal([(2, inner)] * 4096, with_ip=True)]
    n, t = bench_open(b, 1, sa, pool, seconds)
    return seal_pps, n / t


def _imix_rate(rates: dict[int, float]) -> float:
    """Packets/s of the IMIX mix given per-size packets/s (time-weighted)."""
    packets = sum(w for _, w in IMIX)
    seconds = sum(w / rates[s] for s, w in IMIX)
    return packets / seconds


def run(seconds: float = 2.0, openssl_seconds: int = 3, write: bool = True) -> list[Row]:
    rows: list[Row] = []
    sizes = sorted(set(SIZES) | {s for s, _ in IMIX})
    for cipher in CIPHERS:
        seal: dict[int, float] = {}
        opened: dict[int, float] = {}
        ref: dict[int, float] = {}
        for size in sizes:
            seal[size], opened[size] = p3_rates(cipher, size, seconds)
            ref[size] = openssl_ops_per_s(cipher, size, openssl_seconds)
        for size in SIZES:
            rows.append(Row(cipher, str(size), seal[size], opened[size], ref[size], size))
        mean = sum(s * w for s, w in IMIX) / sum(w for _, w in IMIX)
        rows.append(Row(cipher, "IMIX", _imix_rate(seal), _imix_rate(opened), _imix_rate(ref), mean))
    text = render(rows, seconds, openssl_seconds)
    print(text)
    if write:
        write_section("crypto", text)
    return rows


def render(rows: list[Row], seconds: float, openssl_seconds: int) -> str:
    features = dataplane.cpu_features()
    cpu = ", ".join(k for k, v in features.items() if v)
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "## Crypto: P3 seal/open vs `openssl speed -evp` (one core)",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} · {os.cpu_count()} cores · "
        f"CPU features: {cpu} · {openssl} · {seconds:g} s per P3 run, {openssl_seconds} s per openssl run",
        "",
        "Size = inner IP packet octets (IMIX = 64×7, 576×4, 1400×1). P3 path: bucket padding, rotation, AEAD, "
        "header protection, anti-replay, outer IPv4+UDP header; bursts of 256. Gbit/s counts inner octets. "
        "Ratio = P3 packets/s ÷ openssl operations/s at the same size. Targets: ≥ 0.85 at 1400, ≥ 0.6 at 64.",
        "",
        "| cipher | size | seal pps | seal Gbit/s | open pps | open Gbit/s | openssl ops/s | openssl Gbit/s "
        "| seal ratio | open ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.cipher} | {r.size} | {r.seal_pps:,.0f} | {r.gbps(r.seal_pps):.2f} | {r.open_pps:,.0f} | "
            f"{r.gbps(r.open_pps):.2f} | {r.openssl_pps:,.0f} | {r.gbps(r.openssl_pps):.2f} | "
            f"{r.seal_pps / r.openssl_pps:.2f} | {r.open_pps / r.openssl_pps:.2f} |")
    verdicts = []
    for r in rows:
        target = {"1400": 0.85, "64": 0.6}.get(r.size)
        if target is None:
            continue
        worst = min(r.seal_pps, r.open_pps) / r.openssl_pps
        verdicts.append(f"{r.cipher} {r.size} B: {'met' if worst >= target else 'NOT met'} "
                        f"(worst of seal/open {worst:.2f} vs {target})")
    lines += ["", "Targets: " + "; ".join(verdicts) + "."]
    return "\n".join(lines)


