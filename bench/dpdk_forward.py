"""`p3hw bench dpdk`: forwarding through the whole P3 path on DPDK ports, one core, both ways.

The gateway's native worker polls two DPDK ports made from rings
(backends/dpdk/test/ringports.c in the test library build/libp3dpdk_test.so:
``p3b_lan`` and ``p3b_wan``) and does all it
does in production: Ethernet and the link layer, the route lookup, flow
tracking, sealing with AES-128-GCM (bucket padding, relocation, header
protection), the outer IPv4/UDP header and the next hop's MAC. A traffic
thread pinned to the other core keeps the LAN port's receive ring full of
inner packets (64 octets, or the IMIX of bench/crypto.py) and drains the
WAN port. The other way the traffic thread seals fresh packets as the far
peer (its own context) onto the WAN port and the worker opens them out of
the LAN port. The worker thread is pinned to core 0; what it forwards per
second is the figure. Target (issue 6): >= 2 Mpps IMIX on one core (VPP's
single-core figure without QAT is 2.13 Mpps IMIX on a 2.1 GHz Xeon).

Needs the DPDK library (`make -C native dpdk`); run as root or not (no
devices, no hugepages: --no-huge).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import platform
import struct
import time
from dataclasses import dataclass

from p3hw.commands.bench import write_section
from p3hw.commands.bench_loops import bench_open, bench_seal
from p3hw.crypto.keys import SaKeys, material_length
from p3hw.dataplane import Dataplane, DpdkPorts, FlowTable, PeerConfig, Routes, Worker
from p3hw.simulators.ringports import EAL_ARGS, RingPorts
from p3hw.wire.checksum import internet_checksum

IMIX = ((64, 7), (576, 4), (1400, 1))        # as bench/crypto.py (7:4:1)
LOCAL, PEER = "192.0.2.1", "198.51.100.2"
PEER_MAC = bytes.fromhex("020000000002")
HOST_MAC = bytes.fromhex("020000000001")

@dataclass
class Row:
    direction: str
    traffic: str
    pps: float
    inner_bytes: float
    fed: int
    forwarded: int
    crypto_only_pps: float = 0.0
    low: float = 0.0              # the slowest and fastest of the rounds
    high: float = 0.0
    ring_full: int = 0            # the traffic thread found the worker's receive ring full this often

    @property
    def ratio(self) -> float:
        return self.pps / self.crypto_only_pps if self.crypto_only_pps else 0.0

    @property
    def gbps(self) -> float:
        return self.pps * self.inner_bytes * 8 / 1e9


def _inner(size: int, flow: int, to_lan: bool = False) -> bytes:
    """An IPv4/UDP packet of ``size`` octets between the LAN host and the remote LAN (one of 16 flows)."""
    here = ipaddress.IPv4Address("10.1.0.2").packed
    there = ipaddress.IPv4Address(f"10.2.0.{2 + flow}").packed
    src, dst = (there, here) if to_lan else (here, there)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 17, 0, src, dst)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    udp = struct.pack("!HHHH", 40000 + flow, 9, size - 20, 0)
    return header + udp + bytes((i * 7) & 0xFF for i in range(size - 28))


def _arp_request() -> bytes:
    """The peer asks for our WAN address: the worker learns the peer's MAC (RFC 826) and answers."""
    eth = b"\xff" * 6 + PEER_MAC + b"\x08\x06"
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, PEER_MAC, ipaddress.IPv4Address(PEER).packed,
                      b"\0" * 6, ipaddress.IPv4Address(LOCAL).packed)
    return eth + arp


OUT_SA = SaKeys.from_material(0xBE4C, "aes-128-gcm", os.urandom(material_length("aes-128-gcm")))
IN_SA = SaKeys.from_material(0xBE4D, "aes-128-gcm", os.urandom(material_length("aes-128-gcm")))
HP_OUT, HP_IN = os.urandom(16), os.urandom(16)


def _dataplane() -> tuple[Dataplane, Routes, FlowTable]:
    """The gateway: one peer (2) with an SA each way."""
    dp = Dataplane()
    dp.set_local_address(LOCAL)
    dp.add_peer(PeerConfig(2, LOCAL, PEER))
    dp.set_hp_keys(2, hp_out=HP_OUT, hp_in=HP_IN)
    dp.add_outbound_sa(2, OUT_SA)
    dp.add_inbound_sa(2, IN_SA)
    routes = Routes()
    routes.add("10.2.0.0/16", 2)
    return dp, routes, FlowTable(65536, 3 * 3600 * 1000, 180 * 1000)


def _far_peer() -> Dataplane:
    """The peer's side (peer 1 there): it seals what the gateway opens."""
    dp = Dataplane()
    dp.add_peer(PeerConfig(1, PEER, LOCAL))
    dp.set_hp_keys(1, hp_out=HP_IN, hp_in=HP_OUT)
    dp.add_outbound_sa(1, IN_SA)
    dp.add_inbound_sa(1, OUT_SA)
    return dp


def _host_arp(lan_mac: bytes) -> bytes:
    """The LAN host asks for the gateway: the worker learns its MAC."""
    del lan_mac
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, HOST_MAC, ipaddress.IPv4Address("10.1.0.2").packed,
                      b"\0" * 6, ipaddress.IPv4Address("10.1.0.1").packed)
    return b"\xff" * 6 + HOST_MAC + b"\x08\x06" + arp


def _cpu() -> int:
    return 1 if (os.cpu_count() or 1) > 1 else -1


def _window(worker: Worker, counter: str, seconds: float) -> float:
    time.sleep(0.5)                                # warm up: neighbour learned, caches hot
    before, t0 = getattr(worker.stats(), counter), time.perf_counter()
    time.sleep(seconds)
    return (getattr(worker.stats(), counter) - before) / (time.perf_counter() - t0)


def _measure_seal(ports: RingPorts, worker: Worker, far: Dataplane, sizes: list[int], seconds: float) -> Row:
    frames = [ports.lan_mac + HOST_MAC + b"\x08\x00" + _inner(size, i % 16) for i, size in enumerate(sizes)]
    del far
    ports.start_traffic(frames, _arp_request(), cpu=_cpu())
    pps = _window(worker, "wan_tx_packets", seconds)
    full = ports.ring_full()
    fed, forwarded, _ = ports.stop_traffic()
    return Row("LAN -> WAN (seal)", "", pps, sum(sizes) / len(sizes), fed, forwarded, ring_full=full)


def _measure_open(ports: RingPorts, worker: Worker, far: Dataplane, sizes: list[int], seconds: float) -> Row:
    """``far`` seals on from run to run: its sequence numbers keep ahead of the gateway's replay window."""
    ports.put("lan_rx", _host_arp(ports.lan_mac))
    inner = [_inner(size, i % 16, to_lan=True) for i, size in enumerate(sizes)]
    ports.start_sealed_traffic(far, 1, inner, ports.wan_mac + PEER_MAC + b"\x08\x00", cpu=_cpu())
    pps = _window(worker, "lan_tx_packets", seconds)
    full = ports.ring_full()
    fed, forwarded, _ = ports.stop_traffic()
    return Row("WAN -> LAN (open)", "", pps, sum(sizes) / len(sizes), fed, forwarded, ring_full=full)


def crypto_only(sizes: list[int], seconds: float, opening: bool) -> float:
    """Packets/s of the seal (or open) stage alone on this core: one hot packet, no I/O; time-weighted."""
    dp, _, _ = _dataplane()
    far = _far_peer()
    rates = {}
    for size in set(sizes):
        if opening:
            pool = [r.data for r in far.seal([(1, _inner(size, 0, to_lan=True))] * 4096, with_ip=True)]
            bench_open(dp, 2, IN_SA, pool, 0.2)
            n, t = bench_open(dp, 2, IN_SA, pool, seconds)
        else:
            bench_seal(dp, 2, _inner(size, 0), 0.2)
            n, t = bench_seal(dp, 2, _inner(size, 0), seconds)
        rates[size] = n / t
    return len(sizes) / sum(1 / rates[size] for size in sizes)


ROUNDS = 3   # every row measured this many times, rows interleaved; the median is reported


def run(seconds: float = 3.0, write: bool = True, **_: object) -> list[Row]:
    ports = RingPorts.open()
    dp, routes, flows = _dataplane()
    # The worker thread inherits the affinity of the thread that starts it: core 0.
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    imix = [size for size, weight in IMIX for _ in range(weight)]
    mixes = (("64 octets", [64]), ("IMIX 7:4:1", imix), ("1400 octets", [1400]))
    # The same core's crypto stage alone, measured just before, for the ratio column.
    reference = {(name, opening): crypto_only(sizes, min(seconds, 2.0), opening)
                 for name, sizes in mixes for opening in (False, True)}
    worker = Worker(dp, routes, flows, dpdk=DpdkPorts(
        lan_port=ports.lan_name, wan_port=ports.wan_name, lan_address=ipaddress.ip_interface("10.1.0.1/24"),
        wan_address=ipaddress.ip_interface(f"{LOCAL}/0"), eal_args=EAL_ARGS))
    worker.start()
    os.sched_setaffinity(0, affinity)
    rows = []
    far = _far_peer()
    try:
        runs: dict[tuple[bool, str], list[Row]] = {}
        # Rounds interleave the rows, so a burst of load from another tenant lands in one sample of
        # several rows rather than in every sample of one.
        for _ in range(ROUNDS):
            for opening, measure in ((False, _measure_seal), (True, _measure_open)):
                for name, sizes in mixes:
                    row = measure(ports, worker, far, sizes, seconds)
                    row.traffic, row.crypto_only_pps = name, reference[(name, opening)]
                    runs.setdefault((opening, name), []).append(row)
        for samples in runs.values():
            ordered = sorted(samples, key=lambda r: r.pps)
            median = ordered[len(ordered) // 2]
            median.low, median.high = ordered[0].pps, ordered[-1].pps
            rows.append(median)
        drops = dp.counters().drops
    finally:
        worker.stop()
        worker.close()
    text = render(rows, seconds, drops)
    print(text)
    if write:
        write_section("dpdk", text)
    return rows


def render(rows: list[Row], seconds: float, drops: dict[str, int]) -> str:
    lines = [
        "## DPDK forwarding through the whole P3 path on one core (`p3hw bench dpdk`)",
        "",
        f"{datetime.date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} cores · "
        f"{seconds:g} s per row, {ROUNDS} rounds (median; range in brackets) · ring ports "
        "(`rte_eth_from_rings`), `--no-huge` · AES-128-GCM, 16 flows",
        "",
        "The worker thread (pinned to core 0) does what the gateway does: Ethernet and the link layer, route",
        "lookup, flow tracking, seal with padding, relocation and header protection, outer IPv4/UDP, next-hop",
        "MAC, `rte_eth_tx_burst` — or the reverse: outer header checks, header protection, anti-replay, open,",
        "the LAN host's MAC. A traffic thread on core 1 keeps its receive ring full (LAN -> WAN: inner packets;",
        "WAN -> LAN: packets it seals itself as the far peer) and drains its transmit ring. Target: >= 2 Mpps",
        "IMIX on one core.",
        "",
        "Crypto only = the same core sealing (opening) one hot packet in a loop (`bench_seal` /",
        "`bench_open`, no I/O), just before: the ratio is what the ports, the link layer, the lookups and",
        "cold packet memory cost on top of the crypto.",
        "",
        "| direction | traffic | Mpps [range] | Gbit/s (inner) | crypto only, Mpps | ratio | fed | forwarded |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r.direction} | {r.traffic} | {r.pps / 1e6:.2f} [{r.low / 1e6:.2f}–{r.high / 1e6:.2f}] | "
                     f"{r.gbps:.2f} | {r.crypto_only_pps / 1e6:.2f} | {r.ratio:.2f} | {r.fed:,} | {r.forwarded:,} |")
    for direction in ("LAN -> WAN (seal)", "WAN -> LAN (open)"):
        imix = next((r for r in rows if r.traffic.startswith("IMIX") and r.direction == direction), None)
        if imix is not None:
            verdict = "met" if imix.pps >= 2e6 else "not met"
            lines += ["", f"{direction}, IMIX on one core: {imix.pps / 1e6:.2f} Mpps (median of {ROUNDS}), "
                          f"{imix.pps / 2e6:.2f}x the 2 Mpps target ({verdict})."]
    bound = all(r.ring_full > 0 for r in rows)
    lines += ["", "The worker set the pace in every row (the traffic thread found its receive ring full)."
              if bound else "In some rows the traffic thread did not keep the worker's ring full: those rows "
              "measure the traffic source, not the worker.",
              "", f"Dataplane drops during the run: {drops or 'none'}."]
    return "\n".join(lines)
