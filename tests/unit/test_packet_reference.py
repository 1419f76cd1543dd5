"""The pure-Python reference codec on its own: its building blocks against
published values, and decoding errors as reason codes."""

from __future__ import annotations

import pytest
from test_dataplane import ip_packet, sa_keys

from p3hw.reasons import P3Error
from p3hw.wire import packet as ref


def test_siphash_matches_the_papers_example() -> None:
    # Aumasson & Bernstein, "SipHash: a fast short-input PRF", Appendix A.
    assert ref.siphash24(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5


def test_rotation_is_whole_blocks_within_the_frame() -> None:
    key = bytes(range(16))
    offsets = {ref.rotation(key, seq, 256) for seq in range(1, 2000)}
    assert offsets == set(range(0, 256, 16))


def test_frame_round_trip_and_padding_comes_from_the_packet() -> None:
    inner = ip_packet(4, 50, seed=3)
    frame = ref.build_frame(inner, 4, 128, b"H" * 16)
    assert len(frame) == 128
    assert frame[50:125] == (inner * 2)[:75]
    assert ref.parse_frame(frame) == (inner, 4)


def test_bad_frames_and_headers_are_reason_coded() -> None:
    with pytest.raises(P3Error) as err:
        ref.parse_frame(b"\x00" * 29 + b"\xff\xff\x04")
    assert err.value.code == "P3-E207"
    with pytest.raises(P3Error) as err:
        ref.check_header(b"\x02" + bytes(60))
    assert err.value.code == "P3-E200"
    sa = sa_keys(9, "aes-256-ccm", 4)
    p3 = ref.seal(sa, bytes(16), 1, ip_packet(6, 80), 128)
    with pytest.raises(P3Error) as err:
        ref.open_packet({}, [bytes(16)], p3)
    assert err.value.code == "P3-E201"
    tampered = p3[:-1] + bytes([p3[-1] ^ 1])
    with pytest.raises(P3Error) as err:
        ref.open_packet({9: sa}, [bytes(16)], tampered)
    assert err.value.code == "P3-E202"
