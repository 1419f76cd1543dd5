"""The native dataplane through p3hw.dataplane: two contexts, one per site,
sealing to and opening from each other (DESIGN.md §3, docs/dataplane.md).

Also holds the small builders the other dataplane test modules import.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import pytest

from p3hw.crypto.keys import CIPHERS, SaKeys
from p3hw.dataplane import Dataplane, PeerConfig
from p3hw.reasons import P3Error
from p3hw.wire import packet as ref
from p3hw.wire.checksum import internet_checksum

ALL_CIPHERS = sorted(CIPHERS)
OUTER = {4: ("192.0.2.1", "198.51.100.2"), 6: ("2001:db8::1", "2001:db8::2")}
LAN = {4: ("10.1.0.5", "10.2.0.9"), 6: ("fd00:1::5", "fd00:2::9")}
P3_ADDRESS = {4: "10.255.0.2", 6: "fd00:ff::2"}     # site B's own P3 address


def sa_keys(p3_id: int, cipher: str, seed: int) -> SaKeys:
    key_bytes, salt_bytes, auth_bytes = CIPHERS[cipher]
    material = bytes((seed * 31 + i * 7) & 0xFF for i in range(key_bytes + salt_bytes + auth_bytes + 16))
    return SaKeys.from_material(p3_id, cipher, material)


def ip_packet(family: int, length: int, seed: int = 0, src: str | None = None, dst: str | None = None) -> bytes:
    """A whole IPv4 / IPv6 packet of exactly `length` octets (UDP protocol, patterned payload)."""
    s = ipaddress.ip_address(src or LAN[family][0]).packed
    d = ipaddress.ip_address(dst or LAN[family][1]).packed
    if family == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, seed & 0xFFFF, 0, 64, 17, 0, s, d)
    else:
        header = struct.pack("!IHBB16s16s", 0x60000000, length - 40, 17, 64, s, d)
    body = bytes((seed + i * 13) & 0xFF for i in range(length - len(header)))
    return header + body


@dataclass
class Link:
    """Site A seals to site B (peer ids: A knows B as 2, B knows A as 1)."""

    a: Dataplane
    b: Dataplane
    out_sa: SaKeys
    hp_key: bytes
    outer: int
    encap: str

    def seal(self, packets: list[bytes], with_ip: bool = True) -> list[bytes]:
        results = self.a.seal([(2, p) for p in packets], with_ip=with_ip)
        assert all(r.status == "OK" for r in results), [r.status for r in results]
        return [r.data for r in results]

    def sender(self) -> tuple[str, int]:
        return OUTER[self.outer][0], 5653 if self.encap == "udp" else 0

    def open_p3(self, p3s: list[bytes]):  # type: ignore[no-untyped-def]
        addr, port = self.sender()
        return self.b.open([(p, addr, port) for p in p3s], with_ip=False)


def make_link(cipher: str = "aes-128-gcm", outer: int = 4, encap: str = "udp", mtu: int = 1500) -> Link:
    local, remote = OUTER[outer]
    a, b = Dataplane(max_peers=4, max_inbound_sas=8), Dataplane(max_peers=4, max_inbound_sas=8)
    a.add_peer(PeerConfig(2, local, remote, encap=encap, mtu=mtu))
    b.add_peer(PeerConfig(1, remote, local, encap=encap, mtu=mtu))
    b.set_local_address(P3_ADDRESS[4])
    b.set_local_address(P3_ADDRESS[6])
    hp = bytes(range(100, 116))
    a.set_hp_keys(2, hp_out=hp)
    b.set_hp_keys(1, hp_in=hp)
    sa = sa_keys(0x51A, cipher, 1)
    a.add_outbound_sa(2, sa)
    b.add_inbound_sa(1, sa)
    return Link(a, b, sa, hp, outer, encap)


def largest_inner(outer: int, encap: str, mtu: int = 1500) -> int:
    return ref.frame_cap(mtu, outer, encap == "udp") - 3


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("cipher", ALL_CIPHERS)
@pytest.mark.parametrize("outer,encap", [(4, "udp"), (6, "udp"), (4, "esp"), (6, "esp")])
def test_round_trip_every_cipher_outer_and_inner_family_and_size(cipher: str, outer: int, encap: str) -> None:
    link = make_link(cipher, outer, encap)
    top = largest_inner(outer, encap)
    packets = []
    for family in (4, 6):
        low = 20 if family == 4 else 40
        sizes = sorted({low, low + 1, 61, 62, 125, 126, 253, 509, 510, 1021, 1022, top - 1, top})
        packets += [ip_packet(family, n, seed=n) for n in sizes]
    sealed = link.seal(packets)
    assert all(len(s) <= 1500 for s in sealed)
    opened = link.b.open(sealed)
    assert [o.status for o in opened] == ["OK"] * len(packets)
    assert [o.data for o in opened] == packets
    assert {o.peer for o in opened} == {1} and {o.kind for o in opened} == {"data"}
    assert link.b.counters().opened_packets == len(packets)


def test_dummy_cover_traffic_of_any_length_opens_as_dummy() -> None:
    link = make_link()
    payloads = [b"", b"x", bytes(range(200))]
    sealed = [r.data for r in link.a.seal([(2, p) for p in payloads], dummy=True, with_ip=True)]
    opened = link.b.open(sealed)
    assert [(o.status, o.kind, o.data) for o in opened] == [("OK", "dummy", p) for p in payloads]
    assert link.b.counters().dummy_packets == 3


def test_packet_to_own_p3_address_goes_to_control_queue() -> None:
    link = make_link(outer=6)
    to_control = ip_packet(4, 120, dst=P3_ADDRESS[4])
    to_lan = ip_packet(6, 120)
    opened = link.b.open(link.seal([to_control, to_lan]))
    assert [o.kind for o in opened] == ["control", "data"]
    assert link.b.counters().control_packets == 1


def test_control_message_and_data_packet_of_one_bucket_have_equal_length() -> None:
    link = make_link()
    control = ip_packet(4, 150, dst=P3_ADDRESS[4])
    data = ip_packet(4, 240)
    sealed = link.seal([control, data])
    assert len(sealed[0]) == len(sealed[1]) == 20 + 8 + 16 + 256 + 16


def test_configured_buckets_decide_the_sealed_lengths() -> None:
    link = make_link()
    link.a.set_buckets([96, 400])
    assert link.a.buckets == [96, 400]
    sizes = [len(s) for s in link.seal([ip_packet(4, n) for n in (20, 93, 94, 300, 1000)], with_ip=False)]
    assert sizes == [128, 128, 432, 432, 32 + ref.frame_cap(1500, 4, True)]
    for bad in ([400, 96], [16], [100]):        # descending, below 32, not whole AES blocks
        with pytest.raises(P3Error) as err:
            link.a.set_buckets(bad)
        assert err.value.code == "P3-E214"


def test_too_big_and_no_route_and_bad_inner_are_counted_on_seal() -> None:
    link = make_link()
    top = largest_inner(4, "udp")
    results = link.a.seal([(2, ip_packet(4, top + 1)), (99, ip_packet(4, 60)), (2, b"\x45" + bytes(30))])
    assert [r.status for r in results] == ["DP_TOO_BIG", "DP_NO_ROUTE", "DP_BAD_INNER"]
    assert link.a.counters().drops == {"DP_TOO_BIG": 1, "DP_NO_ROUTE": 1, "DP_BAD_INNER": 1}


def test_udp_socket_mode_and_ike_marker_pass_through() -> None:
    link = make_link()
    p3 = link.seal([ip_packet(4, 80)], with_ip=False)
    assert p3[0][:4] == b"\x01\x00\x00\x00"
    ike = b"\x00\x00\x00\x00" + b"IKE_SA_INIT..."
    opened = link.open_p3([p3[0], ike])
    assert [(o.status, o.kind) for o in opened] == [("OK", "data"), ("OK", "ike")]
    assert opened[1].data == b"IKE_SA_INIT..."
    assert link.b.counters().ike_packets == 1


def test_outer_ipv4_header_has_valid_checksum_and_protocol() -> None:
    for encap, proto in (("udp", 17), ("esp", 50)):
        link = make_link(encap=encap)
        packet = link.seal([ip_packet(4, 100)])[0]
        assert packet[9] == proto
        assert internet_checksum(packet[:20]) == 0
        src, port, p3 = ref.parse_outer(packet)
        assert src == ipaddress.ip_address(OUTER[4][0]).packed
        assert port == (5653 if encap == "udp" else 0)


# ---------------------------------------------------------------- rejection

@pytest.mark.parametrize("cipher", ALL_CIPHERS)
def test_any_single_flipped_bit_is_rejected_and_counted_by_reason(cipher: str) -> None:
    link = make_link(cipher)
    link.a.set_next_seq(2, link.out_sa.p3_id, 6)      # seq 6: no single flip makes it 0
    p3 = link.seal([ip_packet(4, 40)], with_ip=False)[0]
    flipped = []
    for bit in range(len(p3) * 8):
        mutated = bytearray(p3)
        mutated[bit // 8] ^= 1 << (bit % 8)
        flipped.append(bytes(mutated))
    opened = link.open_p3(flipped)
    # Flags 01 00 00 00 with the version bit cleared is the non-ESP marker: IKE.
    assert opened[0].kind == "ike"
    statuses = [o.status for o in opened[1:]]
    assert "OK" not in statuses
    drops = link.b.counters().drops
    assert drops["DP_BAD_HEADER"] == 31                       # version and reserved flag bits
    assert drops["DP_UNKNOWN_ID"] == 32 + 128                 # masked ID; the HP sample changes the mask
    assert drops["DP_AUTH_FAILED"] == len(p3) * 8 - 32 - 32 - 128   # seq, ciphertext, ICV
    assert link.b.counters().opened_packets == 0
    assert link.open_p3([p3])[0].status == "OK"


def test_unknown_id_and_unknown_session_are_counted_drops() -> None:
    link = make_link()
    stranger = sa_keys(0x999, "aes-128-gcm", 5)
    link.a.add_outbound_sa(2, stranger)                        # B never installed it
    p3 = link.seal([ip_packet(4, 60)], with_ip=False)[0]
    assert link.open_p3([p3])[0].status == "DP_UNKNOWN_ID"
    assert link.b.open([(p3, "203.0.113.7", 5653)], with_ip=False)[0].status == "DP_UNKNOWN_SESSION"
    assert link.b.counters().drops == {"DP_UNKNOWN_ID": 1, "DP_UNKNOWN_SESSION": 1}


def test_replay_too_old_and_far_future_follow_rfc4303() -> None:
    link = make_link("aes-256-gcm")
    first, second = link.seal([ip_packet(4, 60), ip_packet(4, 61)], with_ip=False)
    assert [o.status for o in link.open_p3([second, first])] == ["OK", "OK"]   # reordering is fine
    assert link.open_p3([first])[0].status == "DP_REPLAY"
    # Far in the future: new, accepted, and the window moves with it (§3.4.3).
    link.a.set_next_seq(2, link.out_sa.p3_id, 1_000_000)
    future = link.seal([ip_packet(4, 62)], with_ip=False)[0]
    assert link.open_p3([future])[0].status == "OK"
    assert link.open_p3([second])[0].status == "DP_TOO_OLD"
    counters = link.b.sa_counters("in", 1, link.out_sa.p3_id)
    assert counters.opened_packets == 3
    assert counters.drops == {"DP_REPLAY": 1, "DP_TOO_OLD": 1}


def test_window_is_at_least_1024_and_moves_only_after_authentication() -> None:
    link = make_link()
    packets = link.seal([ip_packet(4, 40 + i % 50) for i in range(1100)], with_ip=False)
    # A forged packet far ahead (bad ICV) must not move the window.
    link.a.set_next_seq(2, link.out_sa.p3_id, 5_000)
    forged = bytearray(link.seal([ip_packet(4, 60)], with_ip=False)[0])
    forged[-1] ^= 0xFF
    assert link.open_p3([bytes(forged)])[0].status == "DP_AUTH_FAILED"
    assert link.open_p3([packets[-1]])[0].status == "OK"        # seq 1100
    opened = link.open_p3(packets[1100 - 1024:-1])              # 1023 older seqs, all in the window
    assert {o.status for o in opened} == {"OK"}


# ---------------------------------------------------------------- rekey

def test_outbound_switch_at_a_seq_and_old_inbound_sa_valid_until_removed() -> None:
    link = make_link()
    new = sa_keys(0x7777, "aes-128-gcm", 9)
    link.b.add_inbound_sa(1, new)
    link.a.add_outbound_sa(2, new, switch_after_seq=3)
    sealed = link.seal([ip_packet(4, 60 + i) for i in range(6)], with_ip=False)
    opened = link.open_p3(sealed)
    assert [(o.p3_id, o.seq) for o in opened] == [(0x51A, 1), (0x51A, 2), (0x51A, 3),
                                                  (0x7777, 1), (0x7777, 2), (0x7777, 3)]
    assert link.a.outbound_id(2) == 0x7777 and link.a.next_seq(2) == 4
    # A late packet of the old SA still opens until the grace period ends.
    link.b.remove_sa("in", 1, 0x51A)
    assert link.open_p3(sealed[:1])[0].status == "DP_UNKNOWN_ID"


def test_rolled_hp_key_tries_current_then_previous() -> None:
    link = make_link()
    old = link.seal([ip_packet(4, 60)], with_ip=False)[0]
    new_hp = bytes(range(200, 216))
    link.b.set_hp_keys(1, hp_in=new_hp)
    link.a.set_hp_keys(2, hp_out=new_hp)
    new = link.seal([ip_packet(4, 60)], with_ip=False)[0]
    assert [o.status for o in link.open_p3([new, old])] == ["OK", "OK"]
    link.b.drop_previous_hp_key(1)
    old2 = link.a.seal([(2, ip_packet(4, 60))], with_ip=False)[0].data
    assert link.open_p3([old2])[0].status == "OK"


def test_peer_removal_forgets_its_sas_and_bad_arguments_raise_reasons() -> None:
    link = make_link()
    link.b.remove_peer(1)
    with pytest.raises(P3Error) as err:
        link.b.remove_sa("in", 1, 0x51A)
    assert err.value.code == "P3-E210"
    with pytest.raises(P3Error) as err:
        link.a.add_peer(PeerConfig(2, OUTER[4][0], OUTER[4][1]))
    assert err.value.code == "P3-E209"
    with pytest.raises(P3Error) as err:
        link.a.add_peer(PeerConfig(3, OUTER[4][0], "not-an-address"))
    assert err.value.code == "P3-E214"
    with pytest.raises(P3Error) as err:
        link.a.set_hp_keys(2, hp_out=b"short")
    assert err.value.code == "P3-E211"


def test_routing_stage_chooses_the_peer_that_seal_uses() -> None:
    from p3hw.dataplane import Routes

    link = make_link()
    routes = Routes()
    routes.add("10.2.0.0/16", 2)
    routes.add("fd00:2::/32", 2)
    packets = [ip_packet(4, 80), ip_packet(6, 80), ip_packet(4, 80, dst="192.0.2.99")]
    peers = [routes.lookup(ipaddress.ip_address(p[16:20] if p[0] >> 4 == 4 else p[24:40]).compressed)
             for p in packets]
    assert peers == [2, 2, None]
    results = link.a.seal([(peer if peer is not None else 0xFFFFFFFF, p) for peer, p in zip(peers, packets,
                                                                                             strict=True)])
    assert [r.status for r in results] == ["OK", "OK", "DP_NO_ROUTE"]
    assert link.a.counters().drops == {"DP_NO_ROUTE": 1}


@pytest.mark.parametrize("encap", ["udp", "esp"])
def test_any_flipped_bit_of_a_whole_ipv4_packet_is_rejected(encap: str) -> None:
    # IPv4 + UDP/ESP: the header checksum, the UDP checksum when set, the
    # session's addresses and ports, then the P3 checks cover every bit.
    link = make_link("aes-256-gcm", 4, encap)
    link.a.set_next_seq(2, link.out_sa.p3_id, 6)
    packet = link.seal([ip_packet(4, 40)])[0]
    flipped = []
    for bit in range(len(packet) * 8):
        mutated = bytearray(packet)
        mutated[bit // 8] ^= 1 << (bit % 8)
        flipped.append(bytes(mutated))
    opened = link.b.open(flipped)
    p3_start = 28 if encap == "udp" else 20
    accepted = [i for i, o in enumerate(opened) if o.status == "OK"]
    if encap == "udp":
        assert accepted == [p3_start * 8] and opened[p3_start * 8].kind == "ike"   # 01 -> 00: the IKE marker
    else:
        assert accepted == []
    counters = link.b.counters()
    assert counters.opened_packets == 0
    assert counters.drops["DP_BAD_HEADER"] >= 20 * 8 - 1
    assert link.b.open([packet])[0].status == "OK"


def test_each_peer_belongs_to_one_worker_by_the_native_rule() -> None:
    # p3dp_lane_of: the rule the worker hands packets over by, and the shards place SAs by.
    assert [Dataplane.lane_of(peer, 3) for peer in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert Dataplane.lane_of(12345, 1) == 0
    assert Dataplane.lane_of(9, 0) == 0
    with pytest.raises(P3Error) as err:
        Dataplane.lane_of(-1, 2)
    assert err.value.reason.name == "DP_BAD_ARGUMENT"
