"""Rekey invisibility at the packet level (spec §1, DESIGN.md §3).

100,000 packets are sealed and the outbound SA switches to a new one (new P3
ID, seq restarting at 1) half-way. On the wire, the ID and seq fields must
not repeat and must not show where the switch happened: the same statistics
that expose the switch in the unmasked fields (the negative control, so the
assertions can fail) find nothing in the masked ones.
"""

from __future__ import annotations

import math
from collections import Counter

from test_dataplane import ip_packet, make_link, sa_keys

TOTAL = 100_000
HALF = TOTAL // 2
FIELD = slice(4, 16)                                   # masked ID ‖ seq
# Two-sample chi-square over 256 byte values has 255 degrees of freedom:
# mean 255, sd sqrt(510) ≈ 22.6. Six sd is far beyond noise for fixed keys.
CHI2_LIMIT = 255 + 6 * math.sqrt(2 * 255)


def _chi2_two_samples(a: list[int], b: list[int]) -> float:
    """Homogeneity chi-square of two equally long samples of byte values."""
    ca, cb = Counter(a), Counter(b)
    chi2 = 0.0
    for value in set(ca) | set(cb):
        expected = (ca[value] + cb[value]) / 2
        chi2 += (ca[value] - expected) ** 2 / expected + (cb[value] - expected) ** 2 / expected
    return chi2


def _boundary_statistics(fields: list[bytes]) -> tuple[float, float]:
    """(largest per-byte chi-square between halves, largest bit imbalance in sd units)."""
    first, second = fields[:HALF], fields[HALF:]
    width = len(fields[0])
    chi2 = max(_chi2_two_samples([f[i] for f in first], [f[i] for f in second]) for i in range(width))
    worst_bit = 0.0
    sd = math.sqrt(HALF / 4)
    for half in (first, second):
        for i in range(width):
            for bit in range(8):
                ones = sum((f[i] >> bit) & 1 for f in half)
                worst_bit = max(worst_bit, abs(ones - HALF / 2) / sd)
    return chi2, worst_bit


def _seal_run() -> tuple[list[bytes], list[bytes]]:
    link = make_link("aes-128-gcm", 4, "udp")
    new = sa_keys(0x5EC0, "aes-128-gcm", 77)
    link.b.add_inbound_sa(1, new)
    link.a.add_outbound_sa(2, new, switch_after_seq=HALF)
    inner = ip_packet(4, 100)
    wire: list[bytes] = []
    plain: list[bytes] = []
    for _ in range(0, TOTAL, 5_000):
        for r in link.a.seal([(2, inner)] * 5_000, with_ip=False):
            assert r.status == "OK"
            wire.append(r.data[FIELD])
            plain.append(r.p3_id.to_bytes(4, "big") + r.seq.to_bytes(8, "big"))
    assert plain[HALF - 1][:4] != plain[HALF][:4]           # the switch happened at the midpoint
    return wire, plain


WIRE, PLAIN = _seal_run()


def test_on_wire_id_and_seq_never_repeat_across_a_rekey() -> None:
    assert len(set(WIRE)) == TOTAL
    assert len({f[4:] for f in WIRE}) == TOTAL             # the masked seq alone
    # The masked ID looks like a fresh random value each time, not one or two IDs.
    assert len({f[:4] for f in WIRE}) > TOTAL - 10
    # Negative control: unmasked, seq 1..50,000 appears twice.
    assert len({f[4:] for f in PLAIN}) == HALF


def test_header_statistics_do_not_reveal_the_switch_point() -> None:
    chi2, worst_bit = _boundary_statistics(WIRE)
    assert chi2 < CHI2_LIMIT
    assert worst_bit < 5.5
    # Negative control: the same statistics on the unmasked fields find it.
    plain_chi2, plain_bit = _boundary_statistics(PLAIN)
    assert plain_chi2 > CHI2_LIMIT and plain_bit > 5.5

