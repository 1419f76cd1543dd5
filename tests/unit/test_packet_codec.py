"""The native codec and the pure-Python reference (p3hw.wire.packet) agree.

Hypothesis generates ciphers, keys, inner packets, sequence numbers and
buckets; each packet sealed by one side must open on the other to the same
bytes, and the native sealed bytes must equal the reference's exactly.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dataplane import ALL_CIPHERS, OUTER, ip_packet, sa_keys

from p3hw.crypto.keys import SaKeys
from p3hw.dataplane import Dataplane, PeerConfig
from p3hw.wire import packet as ref
from p3hw.wire.checksum import internet_checksum

HP_KEY = bytes(range(1, 17))
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pair(sa: SaKeys, buckets: list[int]) -> tuple[Dataplane, Dataplane]:
    a, b = Dataplane(4, 4), Dataplane(4, 4)
    a.add_peer(PeerConfig(2, OUTER[4][0], OUTER[4][1]))
    b.add_peer(PeerConfig(1, OUTER[4][1], OUTER[4][0]))
    a.set_buckets(buckets)
    a.set_hp_keys(2, hp_out=HP_KEY)
    b.set_hp_keys(1, hp_in=HP_KEY)
    a.add_outbound_sa(2, sa)
    b.add_inbound_sa(1, sa)
    return a, b


keys = st.builds(
    lambda cipher, seed, p3_id: sa_keys(p3_id, cipher, seed),
    st.sampled_from(ALL_CIPHERS), st.integers(0, 255), st.integers(1, 0xFFFFFFFF))
inner_packets = st.builds(lambda family, extra, seed: ip_packet(family, (20 if family == 4 else 40) + extra, seed),
                          st.sampled_from([4, 6]), st.integers(0, 1380), st.integers(0, 255))
bucket_lists = st.lists(st.integers(2, 93).map(lambda blocks: blocks * 16), max_size=6, unique=True).map(sorted)


@FAST
@given(sa=keys, inner=inner_packets, seq=st.integers(1, 2**64 - 2), buckets=bucket_lists)
def test_native_seal_equals_reference_seal_and_both_open(sa: SaKeys, inner: bytes, seq: int,
                                                         buckets: list[int]) -> None:
    a, b = _pair(sa, buckets)
    a.set_next_seq(2, sa.p3_id, seq)
    sealed = a.seal([(2, inner)], with_ip=False)[0]
    frame_len = ref.bucket_frame_len(len(inner) + 3, ref.frame_cap(1500, 4, True), buckets)
    if frame_len is None:
        assert sealed.status == "DP_TOO_BIG"
        return
    assert sealed.status == "OK" and sealed.seq == seq
    assert sealed.data == ref.seal(sa, HP_KEY, seq, inner, frame_len)
    opened = ref.open_packet({sa.p3_id: sa}, [HP_KEY], sealed.data)
    assert (opened.p3_id, opened.seq, opened.inner) == (sa.p3_id, seq, inner)


@FAST
@given(sa=keys, inner=inner_packets, seq=st.integers(1, 2**64 - 2), frame_extra=st.integers(0, 200))
def test_reference_sealed_packets_open_natively(sa: SaKeys, inner: bytes, seq: int, frame_extra: int) -> None:
    _, b = _pair(sa, [64])
    frame_len = max(len(inner) + 3 + frame_extra, ref.MIN_FRAME_BYTES)   # any length opens
    p3 = ref.seal(sa, HP_KEY, seq, inner, frame_len)
    opened = b.open([(p3, OUTER[4][0], 5653)], with_ip=False)[0]
    assert (opened.status, opened.data, opened.p3_id, opened.seq) == ("OK", inner, sa.p3_id, seq)


@FAST
@given(sa=keys, inner=inner_packets)
def test_outer_headers_written_natively_match_the_reference(sa: SaKeys, inner: bytes) -> None:
    a, _ = _pair(sa, [64, 256, 1024])
    with_ip = a.seal([(2, inner)], with_ip=True)[0]
    src, port, p3 = ref.parse_outer(with_ip.data)
    import ipaddress
    dst = ipaddress.ip_address(OUTER[4][1]).packed
    assert with_ip.data == ref.outer_packet(p3, src, dst, (5653, 5653))
    assert port == 5653


def test_ipv6_outer_udp_checksum_is_valid() -> None:
    import ipaddress
    sa = sa_keys(5, "aes-128-gcm", 3)
    a = Dataplane(2, 2)
    a.add_peer(PeerConfig(2, OUTER[6][0], OUTER[6][1]))
    a.set_hp_keys(2, hp_out=HP_KEY)
    a.add_outbound_sa(2, sa)
    packet = a.seal([(2, ip_packet(6, 300))], with_ip=True)[0].data
    src, dst = ipaddress.ip_address(OUTER[6][0]).packed, ipaddress.ip_address(OUTER[6][1]).packed
    udp_len = len(packet) - 40
    pseudo = src + dst + udp_len.to_bytes(4, "big") + b"\0\0\0\x11"
    assert internet_checksum(pseudo + packet[40:]) == 0
