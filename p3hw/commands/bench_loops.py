"""Seal and open loops for the benchmarks: bursts straight into C, no per-packet Python.

They measure one :class:`p3hw.dataplane.Dataplane` (bench/crypto.py,
bench/engines.py, bench/dpdk_forward.py) and live here, not in the binding,
which only binds (issue 11). They reach the native calls through
``p3hw.dataplane.native()``, the binding's own handle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from p3hw.crypto.keys import SaKeys
from p3hw.dataplane import Dataplane, native, reason_name
from p3hw.reasons import P3Error


def bench_seal(dp: Dataplane, peer_id: int, inner: bytes, seconds: float, burst: int = 256,
               with_ip: bool = True) -> tuple[int, float]:
    """Seal ``inner`` to ``peer_id`` in bursts for about ``seconds``; returns (packets, elapsed_s)."""
    ffi, lib = native()
    room = len(inner) + 2048
    pkts = ffi.new("p3dp_pkt[]", burst)
    src = ffi.from_buffer(inner)
    out = ffi.new("uint8_t[]", room * burst)
    for i in range(burst):
        pkts[i].in_buf = src
        pkts[i].in_len = len(inner)
        pkts[i].out_buf = out + i * room
        pkts[i].out_cap = room
        pkts[i].peer = peer_id
    flags = lib.P3DP_OUT_IP if with_ip else 0
    ctx, seal = dp.ctx, lib.p3dp_seal_burst
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        if seal(ctx, pkts, burst, flags) != burst:
            raise P3Error(reason_name(min(int(pkts[i].status) for i in range(burst))), "bench seal failed")
        count += burst
        now = time.perf_counter()
        if now >= deadline:
            return count, now - start


def bench_open(dp: Dataplane, peer_id: int, inbound: SaKeys, sealed: Sequence[bytes], seconds: float,
               burst: int = 256) -> tuple[int, float]:
    """Open the whole IP packets ``sealed`` (all of one SA of ``peer_id``) in bursts for about ``seconds``;
    the SA is reinstalled after each pass so the window accepts them again."""
    ffi, lib = native()
    n = len(sealed) - len(sealed) % burst
    if n == 0:
        raise P3Error("DP_BAD_ARGUMENT", f"bench_open needs at least {burst} packets")
    room = max(len(p) for p in sealed)
    pkts = ffi.new("p3dp_pkt[]", n)
    keep = [ffi.from_buffer(p) for p in sealed[:n]]
    out = ffi.new("uint8_t[]", room * burst)
    for i in range(n):
        pkts[i].in_buf = keep[i]
        pkts[i].in_len = len(sealed[i])
        pkts[i].out_buf = out + (i % burst) * room
        pkts[i].out_cap = room
    ctx, open_burst, flags = dp.ctx, lib.p3dp_open_burst, lib.P3DP_IN_IP
    count = 0
    elapsed = 0.0
    while elapsed < seconds:
        dp.remove_sa("in", peer_id, inbound.p3_id)
        dp.add_inbound_sa(peer_id, inbound)
        start = time.perf_counter()
        for base in range(0, n, burst):
            if open_burst(ctx, pkts + base, burst, flags) != burst:
                raise P3Error(reason_name(min(int(pkts[base + i].status) for i in range(burst))),
                              "bench open failed")
        elapsed += time.perf_counter() - start
        count += n
    return count, elapsed
