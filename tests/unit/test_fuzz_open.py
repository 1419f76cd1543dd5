"""Random and mutated packets fed to open_burst: no crash, nothing opened
that was not sealed, every packet accounted for (opened, IKE, or a counted
drop). The C loop under ASan is native/tests/test_packet.c."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dataplane import OUTER, ip_packet, make_link

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LINK = make_link("aes-128-gcm", 4, "udp")
GENUINE_IP = LINK.seal([ip_packet(4, 20 + i * 37) for i in range(8)], with_ip=True)
GENUINE_P3 = LINK.seal([ip_packet(4, 20 + i * 37) for i in range(8)], with_ip=False)


def _accounted(before_total: int, n: int) -> None:
    c = LINK.b.counters()
    assert c.opened_packets + c.ike_packets + c.dropped == before_total + n


def _total() -> int:
    c = LINK.b.counters()
    return c.opened_packets + c.ike_packets + c.dropped


@FUZZ
@given(st.lists(st.binary(max_size=1600), min_size=1, max_size=16), st.booleans())
def test_random_bytes_are_only_counted_drops(packets: list[bytes], with_ip: bool) -> None:
    before = _total()
    items = packets if with_ip else [(p, OUTER[4][0], 5653) for p in packets]
    results = LINK.b.open(items, with_ip=with_ip)   # type: ignore[arg-type]
    for r in results:
        assert r.status != "OK" or r.kind == "ike"
    _accounted(before, len(packets))


@FUZZ
@given(st.integers(0, 7), st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), min_size=1, max_size=6),
       st.integers(0, 1600), st.booleans())
def test_mutated_genuine_packets_never_open_altered(index: int, edits: list[tuple[int, int]], cut: int,
                                                   with_ip: bool) -> None:
    original = (GENUINE_IP if with_ip else GENUINE_P3)[index]
    mutated = bytearray(original)
    for at, xor in edits:
        mutated[at % len(mutated)] ^= xor
    mutated = mutated[:cut] if cut < len(mutated) else mutated
    before = _total()
    item = bytes(mutated) if with_ip else (bytes(mutated), OUTER[4][0], 5653)
    result = LINK.b.open([item], with_ip=with_ip)[0]   # type: ignore[list-item]
    if result.status == "OK" and result.kind != "ike":
        # Only an unchanged IP payload can open (outer-header fields like TTL are not authenticated).
        assert result.data == ip_packet(4, 20 + index * 37)
    _accounted(before, 1)
