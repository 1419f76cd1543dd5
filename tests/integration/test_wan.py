"""The WAN simulator: the impairments it promises, checked on its own counters and on real traffic.

The first half drives ``LinkModel`` (the decisions, no I/O) and needs no
privilege; the second half relays real frames between two namespaces.
Assertions are on counters and on what arrived, never on timing, except
lower bounds that a delay line guarantees.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest

from p3hw.simulators.netns import Topology
from p3hw.simulators.wan import VNET_HDR_LEN, LinkModel, WanParams, _flip_payload_bit

# -- frames built by hand, with checksums computed here (RFC 1071), not by the code under test --


def _internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(proto: int, l4: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, bytes([10, 1, 0, 2]), bytes([10, 2, 0, 2]))
    return header[:10] + struct.pack("!H", _internet_checksum(header)) + header[12:] + l4


def _ipv6(proto: int, l4: bytes) -> bytes:
    src = bytes.fromhex("fd000010000100000000000000000002")
    dst = bytes.fromhex("fd000010000200000000000000000002")
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64, src, dst) + l4


def _pseudo_header(ip: bytes, version: int, proto: int, length: int) -> bytes:
    if version == 4:
        return ip[12:20] + struct.pack("!BBH", 0, proto, length)
    return ip[8:40] + struct.pack("!IxxxB", length, proto)


def _with_l4_checksum(version: int, proto: int, l4: bytearray, csum_at: int) -> bytes:
    struct.pack_into("!H", l4, csum_at, 0)
    build = _ipv4 if version == 4 else _ipv6
    placeholder = build(proto, bytes(l4))
    ip_len = 20 if version == 4 else 40
    covered = bytes(l4) if proto == 1 else _pseudo_header(placeholder, version, proto, len(l4)) + bytes(l4)
    struct.pack_into("!H", l4, csum_at, _internet_checksum(covered))
    return build(proto, bytes(l4))[:ip_len] + bytes(l4)


def _frame(version: int, ip_packet: bytes) -> bytes:
    ethertype = 0x0800 if version == 4 else 0x86DD
    vnet = bytes(VNET_HDR_LEN)  # flags 0: the checksum is complete
    return vnet + bytes(6) + bytes(6) + struct.pack("!H", ethertype) + ip_packet


def _transport_checksum_ok(version: int, proto: int, frame: bytes) -> bool:
    ip = frame[VNET_HDR_LEN + 14 :]
    l4 = ip[20:] if version == 4 else ip[40:]
    if proto == 1:
        return _internet_checksum(l4) == 0
    return _internet_checksum(_pseudo_header(ip, version, proto, len(l4)) + l4) == 0


def _sample_frames() -> Iterator[tuple[str, int, int, bytes]]:
    payload = bytes(range(200))
    for version in (4, 6):
        udp = bytearray(struct.pack("!HHHH", 40000, 5653, 8 + len(payload), 0) + payload)
        yield f"udp{version}", version, 17, _frame(version, _with_l4_checksum(version, 17, udp, 6))
        tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 443, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload)
        yield f"tcp{version}", version, 6, _frame(version, _with_l4_checksum(version, 6, tcp, 16))
    icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 1, 1) + payload)
    yield "icmp4", 4, 1, _frame(4, _with_l4_checksum(4, 1, icmp, 2))
    icmp6 = bytearray(struct.pack("!BBHHH", 128, 0, 0, 1, 1) + payload)
    yield "icmp6", 6, 58, _frame(6, _with_l4_checksum(6, 58, icmp6, 2))


def _numbered_udp_frame(seq: int, filler_bytes: int) -> bytes:
    udp = bytearray(struct.pack("!HHHH", 40000, 7000, 8 + filler_bytes + 4, 0) + bytes(filler_bytes) + seq.to_bytes(4, "big"))
    return _frame(4, _with_l4_checksum(4, 17, udp, 6))


def _bits_differing(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


def _drain(model: LinkModel, now: float = 1e9) -> list[tuple[int, bytes]]:
    out = list(model.pop_due(now))
    for direction, frame in out:
        model.sent(direction, frame, ok=True)
    return out


# -- LinkModel: the decisions, no privileges needed -----------------------------------


def test_corruption_flips_one_payload_bit_and_keeps_the_checksum_valid() -> None:
    import random

    rng = random.Random(11)
    for name, version, proto, frame in _sample_frames():
        assert _transport_checksum_ok(version, proto, frame), f"{name}: the test's own frame is wrong"
        for _ in range(50):
            damaged = bytearray(frame)
            _flip_payload_bit(damaged, rng)
            changed = [i for i in range(len(frame)) if damaged[i] != frame[i]]
            # one bit of the payload, plus the patched checksum field
            assert _bits_differing(frame[-200:], bytes(damaged[-200:])) == 1, name
            assert all(i >= len(frame) - 200 or i in _checksum_span(version, proto, len(frame)) for i in changed), name
            assert _transport_checksum_ok(version, proto, bytes(damaged)), name


def test_corruption_of_esp_damages_the_payload_not_the_ip_header() -> None:
    import random

    rng = random.Random(12)
    esp = struct.pack("!II", 0x1000, 1) + bytes(range(100))
    for version, build in ((4, _ipv4), (6, _ipv6)):
        frame = _frame(version, build(50, esp))
        header_end = len(frame) - len(esp)
        for _ in range(50):
            damaged = bytearray(frame)
            _flip_payload_bit(damaged, rng)
            assert damaged[:header_end] == frame[:header_end]  # the IP header (and its checksum) intact
            assert _bits_differing(frame, bytes(damaged)) == 1


def _checksum_span(version: int, proto: int, frame_len: int) -> range:
    l4 = VNET_HDR_LEN + 14 + (20 if version == 4 else 40)
    at = l4 + {17: 6, 6: 16, 1: 2, 58: 2}[proto]
    return range(at, at + 2)


def test_same_seed_makes_the_same_decisions() -> None:
    params = WanParams(loss_pct=20, duplicate_pct=10, corrupt_pct=10, reorder_pct=10, delay_ms=5, jitter_ms=3, seed=42)
    frames = [frame for _, _, _, frame in _sample_frames()] * 50

    def run(p: WanParams) -> list[tuple[int, bytes]]:
        model = LinkModel(p)
        for i, frame in enumerate(frames):
            model.accept(i % 2, frame, now=i * 0.001)
        return _drain(model)

    assert run(params) == run(params)
    assert run(params) != run(WanParams(**{**params.__dict__, "seed": 43}))


def test_counters_account_for_every_frame() -> None:
    model = LinkModel(WanParams(loss_pct=25, duplicate_pct=15, corrupt_pct=10, reorder_pct=10, delay_ms=10, seed=3))
    frames = [frame for _, _, _, frame in _sample_frames()]
    for i in range(2000):
        model.accept(i % 2, frames[i % len(frames)], now=i * 0.0001)
    half_way = list(model.counters())
    assert all(s.balanced() for s in half_way) and sum(s.in_flight for s in half_way) > 0
    sent = _drain(model)
    total = model.counters()[0] + model.counters()[1]
    assert total.balanced() and total.in_flight == 0
    assert total.received == 2000
    assert total.forwarded == len(sent) == total.received - total.dropped + total.duplicated
    assert 0 < total.dropped < 2000 and total.duplicated > 0 and total.corrupted > 0 and total.reordered > 0


def test_reordered_frames_overtake_the_delay_line() -> None:
    model = LinkModel(WanParams(delay_ms=20, reorder_pct=30, seed=5))
    for seq in range(100):
        model.accept(0, _numbered_udp_frame(seq, 60), now=seq * 0.0001)
    order = [int.from_bytes(frame[-4:], "big") for _, frame in _drain(model)]
    assert sorted(order) == list(range(100))  # nothing lost
    assert order != list(range(100))
    assert model.stats[0].reordered > 0


def test_arp_and_neighbour_discovery_cross_unimpaired() -> None:
    # The bridge stands in for a routed path: address resolution is not the WAN's to break.
    model = LinkModel(WanParams(loss_pct=100, corrupt_pct=100, seed=1))
    arp = bytes(VNET_HDR_LEN) + bytes(12) + b"\x08\x06" + bytes(28)
    neighbour_solicitation = _frame(6, _with_l4_checksum(6, 58, bytearray(struct.pack("!BBHI", 135, 0, 0, 0) + bytes(16)), 2))
    for frame in (arp, neighbour_solicitation):
        model.accept(0, frame, now=0.0)
    assert [frame for _, frame in _drain(model)] == [arp, neighbour_solicitation]
    assert model.stats[0].link_control == 2 and model.stats[0].dropped == 0
    model.accept(0, _numbered_udp_frame(1, 10), now=0.0)
    assert model.stats[0].dropped == 1  # IP traffic is impaired


def test_rate_cap_drops_what_overflows_the_queue() -> None:
    # 1 Mbit/s with a 20 ms queue holds 2500 bytes: a burst of 50 x 1000-byte frames mostly overflows.
    model = LinkModel(WanParams(rate_mbit=1.0, queue_ms=20, seed=1))
    frame = _numbered_udp_frame(0, 1000 - 14 - 20 - 8 - 4)
    assert len(frame) == VNET_HDR_LEN + 1000
    for _ in range(50):
        model.accept(0, frame, now=0.0)
    assert 2 <= 50 - model.stats[0].dropped_queue <= 4
    dues = sorted(due for due, *_ in model.schedule)
    assert all(later - earlier >= 0.0079 for earlier, later in zip(dues, dues[1:], strict=False))  # 8 ms per 1000 bytes


def test_bad_parameters_are_reason_coded_errors_not_tracebacks() -> None:
    for argv in (["--a", "x", "--b", "y", "--loss", "150"], ["--a", "x", "--b", "x"], ["--a", "x"], ["--a", "x", "--b", "y", "--delay-ms", "abc"]):
        result = subprocess.run([sys.executable, "-m", "p3hw.simulators.wan", *argv], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, argv
        assert result.stderr.startswith("P3-E122"), result.stderr
        assert "Traceback" not in result.stderr


# -- the relay on real links -------------------------------------------------------------

RECEIVER = """
import json, socket, sys
address, port, idle_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((address, port))
print("ready", flush=True)
s.settimeout(idle_s)
got = []
try:
    while True:
        got.append(s.recv(65535).hex())
except TimeoutError:
    pass
print(json.dumps(got), flush=True)
"""

SENDER = """
import socket, sys
address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(count):
    s.sendto(seq.to_bytes(4, "big") + bytes((seq + k) % 256 for k in range(60)), (address, port))
"""


def _payload(seq: int) -> bytes:
    return seq.to_bytes(4, "big") + bytes((seq + k) % 256 for k in range(60))


def _udp_transfer(topo: Topology, address: object, count: int, port: int = 7000) -> list[bytes]:
    """Send ``count`` numbered datagrams from LAN-A to ``address`` in LAN-B; what arrived, in order."""
    receiver = topo.popen(topo.b.lan_ns, [sys.executable, "-c", RECEIVER, str(address), str(port), "1.0"], stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    assert receiver.stdout.readline().strip() == "ready"
    sender = topo.run(topo.a.lan_ns, [sys.executable, "-c", SENDER, str(address), str(port), str(count)])
    assert sender.returncode == 0, sender.stderr
    output, _ = receiver.communicate(timeout=60)
    return [bytes.fromhex(item) for item in json.loads(output)]


@pytest.mark.root
@pytest.mark.netns
def test_lossless_link_forwards_every_ping(impaired_two_site: Topology) -> None:
    topo = impaired_two_site
    link = topo.set_wan("b", WanParams())
    for address in (topo.b.host4, topo.b.host6):
        result = topo.ping(topo.a.lan_ns, address, count=20, interval_s=0.01)
        assert result.received == result.transmitted == 20, result.output
    report = link.stats()
    assert report.a_to_b.received >= 40 and report.b_to_a.received >= 40  # requests one way, replies the other
    assert report.total.dropped == 0 and report.total.send_errors == 0
    assert report.total.balanced()


@pytest.mark.root
@pytest.mark.netns
def test_thirty_percent_loss_drops_a_plausible_fraction(impaired_two_site: Topology) -> None:
    topo = impaired_two_site
    link = topo.set_wan("b", WanParams(loss_pct=30, seed=7))
    result = topo.ping(topo.a.lan_ns, topo.b.host4, count=100, interval_s=0.01, wait_s=0.5)
    assert 0 < result.received < result.transmitted
    total = link.stats().total
    assert total.dropped > 0 and total.forwarded > 0
    assert total.received == total.forwarded + total.dropped + total.in_flight + total.send_errors
    assert 0.15 <= total.dropped / total.received <= 0.45


@pytest.mark.root
@pytest.mark.netns
def test_duplicated_frames_reach_the_receiver_twice(impaired_two_site: Topology) -> None:
    topo = impaired_two_site
    link = topo.set_wan("b", WanParams(duplicate_pct=50, seed=2))
    result = topo.ping(topo.a.lan_ns, topo.b.host6, count=20, interval_s=0.01)
    assert result.received == 20 and result.duplicates > 0, result.output
    total = link.stats().total
    assert total.duplicated > 0 and total.balanced()


@pytest.mark.root
@pytest.mark.netns
def test_corrupted_datagrams_arrive_with_exactly_one_bit_flipped(impaired_two_site: Topology) -> None:
    topo = impaired_two_site
    sent = {_payload(seq) for seq in range(20)}
    try:
        # With checksum offload (the veth default) and without (the sender completes the checksum).
        for offload in ("on", "off"):
            topo.run(topo.a.lan_ns, ["ethtool", "-K", "eth0", "tx", offload], check=True)
            for address in (topo.b.host4, topo.b.host6):
                link = topo.set_wan("b", WanParams(corrupt_pct=100, seed=9))
                arrived = _udp_transfer(topo, address, 20)
                assert len(arrived) == 20, f"offload {offload}, {address}"
                for payload in arrived:
                    assert payload not in sent
                    assert min(_bits_differing(payload, original) for original in sent) == 1
                assert link.stats().a_to_b.corrupted >= 20
    finally:
        topo.run(topo.a.lan_ns, ["ethtool", "-K", "eth0", "tx", "on"])


@pytest.mark.root
@pytest.mark.netns
def test_delay_makes_the_round_trip_at_least_twice_the_one_way_delay(impaired_two_site: Topology) -> None:
    topo = impaired_two_site
    topo.set_wan("b", WanParams(delay_ms=40))
    for address in (topo.b.host4, topo.b.host6):
        result = topo.ping(topo.a.lan_ns, address, count=3, interval_s=0.05)
        assert result.received == 3, result.output
        assert result.rtt_min_ms is not None and result.rtt_min_ms >= 80.0  # a lower bound, not a timing race


@pytest.mark.root
@pytest.mark.netns
def test_reordering_reorders_a_udp_stream_without_losing_it(impaired_two_site: Topology) -> None:
    topo = impaired_two_site
    link = topo.set_wan("b", WanParams(delay_ms=20, reorder_pct=25, seed=4))
    arrived = _udp_transfer(topo, topo.b.host4, 200)
    order = [int.from_bytes(payload[:4], "big") for payload in arrived]
    assert sorted(order) == list(range(200))
    assert order != list(range(200))
    assert link.stats().a_to_b.reordered > 0


@pytest.mark.root
@pytest.mark.netns
def test_missing_interface_is_a_reason_coded_error(impaired_two_site: Topology) -> None:
    assert impaired_two_site.wan_ns is not None
    result = impaired_two_site.run(impaired_two_site.wan_ns, [sys.executable, "-m", "p3hw.simulators.wan", "--a", "nosuch0", "--b", "relay1"])
    assert result.returncode == 1
    assert result.stderr.startswith("P3-E901") and "nosuch0" in result.stderr


TCP_SINK = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])), family=socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
print("ready", flush=True)
conn, _ = server.accept()
total = 0
while chunk := conn.recv(1 << 16):
    total += len(chunk)
print(total, flush=True)
"""

TCP_SOURCE = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as conn:
    conn.sendall(bytes(int(sys.argv[3])))
"""


@pytest.mark.root
@pytest.mark.netns
def test_impairments_apply_to_wire_sized_packets_not_gso_super_frames(impaired_two_site: Topology) -> None:
    # A TCP sender hands 64 KiB segments to its veth; a 1% loss must drop
    # single 1500-byte packets, not whole super-frames of forty.
    topo = impaired_two_site
    link = topo.set_wan("b", WanParams(loss_pct=1, seed=8))
    size = 4 * 1024 * 1024
    sink = topo.popen(topo.b.lan_ns, [sys.executable, "-c", TCP_SINK, str(topo.b.host4), "7001"], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    source = topo.run(topo.a.lan_ns, [sys.executable, "-c", TCP_SOURCE, str(topo.b.host4), "7001", str(size)])
    assert source.returncode == 0, source.stderr
    output, _ = sink.communicate(timeout=60)
    assert int(output) == size  # TCP repaired every loss
    data = link.stats().a_to_b
    assert data.dropped > 0
    assert data.bytes_received / data.received <= 1514  # Ethernet header + 1500-byte MTU
