"""The one Python Internet checksum (p3hw/wire/checksum.py, RFC 1071 / RFC 1624)."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from p3hw.wire.checksum import checksum_update, internet_checksum


def test_rfc1071_example_sums_to_its_published_value() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_a_header_with_its_checksum_stored_checks_as_zero() -> None:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 17, 0,
                                   bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    struct.pack_into("!H", header, 10, internet_checksum(bytes(header)))
    assert internet_checksum(bytes(header)) == 0


def test_an_odd_last_octet_counts_as_the_high_half_of_a_word() -> None:
    assert internet_checksum(b"\x12\x34\x56") == internet_checksum(b"\x12\x34\x56\x00")


@given(st.binary(min_size=2, max_size=64).filter(lambda b: len(b) % 2 == 0), st.data())
def test_an_incremental_update_equals_summing_again(data: bytes, draw: st.DataObject) -> None:
    words = list(struct.unpack(f"!{len(data) // 2}H", data))
    at = draw.draw(st.integers(0, len(words) - 1))
    new_word = draw.draw(st.integers(0, 0xFFFF))
    old_checksum = internet_checksum(data)
    changed = words.copy()
    changed[at] = new_word
    recomputed = internet_checksum(struct.pack(f"!{len(changed)}H", *changed))
    updated = checksum_update(old_checksum, words[at], new_word)
    # One's complement has two zeros; the incremental form may yield either (RFC 1624 §3).
    assert updated == recomputed or {updated, recomputed} == {0, 0xFFFF}
