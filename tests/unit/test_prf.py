"""The IKEv2 PRFs against their RFC test vectors, and prf+ (RFC 7296 §2.13)."""

from __future__ import annotations

import pytest

from p3hw.crypto.prf import (
    PRF_AES128_CMAC,
    PRF_AES128_XCBC,
    PRF_HMAC_SHA2_256,
    aes_cmac_prf_128,
    aes_xcbc_prf_128,
    prf_by_id,
    prf_hmac_sha256,
    prf_plus,
)
from p3hw.reasons import P3Error

RFC_MESSAGE_20 = bytes.fromhex("000102030405060708090a0b0c0d0e0f10111213")


# RFC 4434 §2.1: all three test cases, keys of 16, 10 (zero-padded) and 18
# (reduced by AES-XCBC-PRF-128 under the zero key) octets.
@pytest.mark.parametrize(
    ("key_hex", "expected_hex"),
    [
        ("000102030405060708090a0b0c0d0e0f", "47f51b4564966215b8985c63055ed308"),
        ("00010203040506070809", "0fa087af7d866e7653434e602fdde835"),
        ("000102030405060708090a0b0c0d0e0fedcb", "8cd3c93ae598a9803006ffb67c40e9e4"),
    ],
    ids=["key-16", "key-10", "key-18"],
)
def test_aes_xcbc_prf_128_matches_rfc4434_vectors(key_hex: str, expected_hex: str) -> None:
    assert aes_xcbc_prf_128(bytes.fromhex(key_hex), RFC_MESSAGE_20).hex() == expected_hex


# RFC 3566 §4.6 (the MAC underneath, full 128-bit output): message lengths
# that exercise the empty, partial, exact and multi-block last-block rules.
@pytest.mark.parametrize(
    ("message", "expected_hex"),
    [
        (b"", "75f0251d528ac01c4573dfd584d79f29"),
        (bytes(range(3)), "5b376580ae2f19afe7219ceef172756f"),
        (bytes(range(16)), "d2a246fa349b68a79998a4394ff7a263"),
        (bytes(range(20)), "47f51b4564966215b8985c63055ed308"),
        (bytes(range(32)), "f54f0ec8d2b9f3d36807734bd5283fd4"),
        (bytes(range(34)), "becbb3bccdb518a30677d5481fb6b4d8"),
        (bytes(1000), "f0dafee895db30253761103b5d84528f"),
    ],
    ids=["0", "3", "16", "20", "32", "34", "1000"],
)
def test_aes_xcbc_mac_matches_rfc3566_vectors(message: bytes, expected_hex: str) -> None:
    key = bytes(range(16))
    assert aes_xcbc_prf_128(key, message).hex() == expected_hex


# RFC 4615 §4: all three test cases, keys of 18, 16 and 10 octets (both the
# short and the long key are reduced by AES-CMAC under the zero key).
@pytest.mark.parametrize(
    ("key_hex", "expected_hex"),
    [
        ("000102030405060708090a0b0c0d0e0fedcb", "84a348a4a45d235babfffc0d2b4da09a"),
        ("000102030405060708090a0b0c0d0e0f", "980ae87b5f4c9c5214f5b6a8455e4c2d"),
        ("00010203040506070809", "290d9e112edb09ee141fcf64c0b72f3d"),
    ],
    ids=["key-18", "key-16", "key-10"],
)
def test_aes_cmac_prf_128_matches_rfc4615_vectors(key_hex: str, expected_hex: str) -> None:
    assert aes_cmac_prf_128(bytes.fromhex(key_hex), RFC_MESSAGE_20).hex() == expected_hex


_RFC4231_LONG_DATA = (
    b"This is a test using a larger than block-size key and a larger than block-size data. "
    b"The key needs to be hashed before being used by the HMAC algorithm."
)


# RFC 4231 §4: the HMAC-SHA-256 results of test cases 1-7 (case 5 is
# specified truncated to 128 bits).
@pytest.mark.parametrize(
    ("key", "data", "expected_hex"),
    [
        (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
        (
            b"\xaa" * 131,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (b"\xaa" * 131, _RFC4231_LONG_DATA, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
    ],
    ids=["case1", "case2", "case3", "case4", "case5-truncated", "case6", "case7"],
)
def test_hmac_sha256_matches_rfc4231_vectors(key: bytes, data: bytes, expected_hex: str) -> None:
    output = prf_hmac_sha256(key, data)
    assert output[: len(expected_hex) // 2].hex() == expected_hex


def test_prf_plus_chains_blocks_as_rfc7296_defines() -> None:
    key, seed = b"k" * 32, b"seed"
    t1 = prf_hmac_sha256(key, seed + b"\x01")
    t2 = prf_hmac_sha256(key, t1 + seed + b"\x02")
    t3 = prf_hmac_sha256(key, t2 + seed + b"\x03")
    assert prf_plus(prf_hmac_sha256, key, seed, 80) == (t1 + t2 + t3)[:80]


def test_prf_plus_with_a_128_bit_prf_and_odd_length() -> None:
    key, seed = bytes(16), b"nonces"
    t1 = aes_cmac_prf_128(key, seed + b"\x01")
    t2 = aes_cmac_prf_128(key, t1 + seed + b"\x02")
    assert prf_plus(aes_cmac_prf_128, key, seed, 20) == (t1 + t2)[:20]
    assert prf_plus(aes_cmac_prf_128, key, seed, 0) == b""


def test_prf_plus_refuses_more_than_255_blocks() -> None:
    assert len(prf_plus(aes_xcbc_prf_128, bytes(16), b"", 255 * 16)) == 255 * 16
    with pytest.raises(P3Error) as failure:
        prf_plus(aes_xcbc_prf_128, bytes(16), b"", 255 * 16 + 1)
    assert failure.value.code == "P3-E999"


def test_registry_names_the_three_negotiable_prfs() -> None:
    assert prf_by_id(PRF_HMAC_SHA2_256).function is prf_hmac_sha256
    assert prf_by_id(PRF_AES128_XCBC).function is aes_xcbc_prf_128
    assert prf_by_id(PRF_AES128_CMAC).function is aes_cmac_prf_128
    assert (prf_by_id(5).key_bytes, prf_by_id(4).key_bytes, prf_by_id(8).key_bytes) == (32, 16, 16)


def test_unknown_prf_id_is_a_proposal_mismatch() -> None:
    with pytest.raises(P3Error) as failure:
        prf_by_id(2)  # PRF_HMAC_SHA1: not offered by p3hw
    assert failure.value.code == "P3-E302"
