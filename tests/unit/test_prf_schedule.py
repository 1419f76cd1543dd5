"""The key schedule: IKE SA keys (RFC 7296 §2.14) and child KEYMAT (§2.17)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from p3hw.crypto.keys import CIPHERS, CONTROL_KEY_BYTES, HP_KEY_BYTES, material_length
from p3hw.crypto.prf import PRF_AES128_CMAC, PRF_AES128_XCBC, PRF_HMAC_SHA2_256, aes_cmac_prf_128
from p3hw.crypto.schedule import (
    child_keymat_length,
    derive_child_keys,
    derive_ike_sa_keys,
    derive_session_keys,
)
from p3hw.reasons import P3Error

NI = bytes(range(32))
NR = bytes(range(100, 132))
SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("1112131415161718")
SHARED = bytes(range(200, 232))


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def test_ike_sa_keys_follow_rfc7296_with_hmac_sha256() -> None:
    keys = derive_ike_sa_keys(PRF_HMAC_SHA2_256, 32, SHARED, NI, NR, SPI_I, SPI_R)
    # Independent computation with hashlib: SKEYSEED then prf+ blocks.
    seed = _hmac(NI + NR, SHARED)
    s = NI + NR + SPI_I + SPI_R
    stream, block = b"", b""
    for counter in range(1, 8):
        block = _hmac(seed, block + s + bytes([counter]))
        stream += block
    # SK_d(32) SK_ai(0) SK_ar(0) SK_ei(36) SK_er(36) SK_pi(32) SK_pr(32)
    assert keys.sk_d == stream[0:32]
    assert keys.sk_ai == keys.sk_ar == b""
    assert keys.sk_ei == stream[32:68] and keys.sk_er == stream[68:104]
    assert keys.sk_pi == stream[104:136] and keys.sk_pr == stream[136:168]
    assert keys.encryption_key_i + keys.salt_i == keys.sk_ei
    assert (len(keys.encryption_key_r), len(keys.salt_r)) == (32, 4)


def test_aes_prfs_key_skeyseed_with_64_bits_of_each_nonce() -> None:
    keys = derive_ike_sa_keys(PRF_AES128_CMAC, 16, SHARED, NI, NR, SPI_I, SPI_R)
    seed = aes_cmac_prf_128(NI[:8] + NR[:8], SHARED)
    first_block = aes_cmac_prf_128(seed, NI + NR + SPI_I + SPI_R + b"\x01")
    assert keys.sk_d == first_block  # SK_d is 16 octets, the PRF's preferred key size
    assert (len(keys.sk_ei), len(keys.sk_pi), len(keys.sk_pr)) == (20, 16, 16)


@pytest.mark.parametrize("prf_id", [PRF_HMAC_SHA2_256, PRF_AES128_XCBC, PRF_AES128_CMAC])
def test_different_prfs_give_different_keys(prf_id: int) -> None:
    keys = derive_ike_sa_keys(prf_id, 16, SHARED, NI, NR, SPI_I, SPI_R)
    other = derive_ike_sa_keys(PRF_HMAC_SHA2_256 if prf_id != PRF_HMAC_SHA2_256 else PRF_AES128_XCBC,
                               16, SHARED, NI, NR, SPI_I, SPI_R)
    assert keys.sk_ei != other.sk_ei
    assert len({keys.sk_d, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr}) == 5


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
def test_both_roles_get_mirrored_session_keys(cipher: str) -> None:
    sk_d = bytes(range(32))
    initiator = derive_session_keys(PRF_HMAC_SHA2_256, sk_d, NI, NR, cipher, 0x1111, 0x2222, initiator=True)
    responder = derive_session_keys(PRF_HMAC_SHA2_256, sk_d, NI, NR, cipher, 0x1111, 0x2222, initiator=False)
    assert initiator.outbound == responder.inbound
    assert initiator.inbound == responder.outbound
    assert initiator.control_out_key == responder.control_in_key
    assert initiator.control_in_key == responder.control_out_key
    assert initiator.hp_out_key == responder.hp_in_key
    assert initiator.hp_in_key == responder.hp_out_key
    # The receiver allocates the ID: what the initiator seals with is named by
    # the responder's ID.
    assert initiator.outbound.p3_id == 0x2222 and initiator.inbound.p3_id == 0x1111
    assert initiator.outbound.cipher == cipher
    every_key = [initiator.outbound.key, initiator.inbound.key, initiator.control_out_key,
                 initiator.control_in_key, initiator.hp_out_key, initiator.hp_in_key]
    assert len(set(every_key)) == len(every_key)


def test_keymat_order_is_i2r_sa_then_r2i_sa_then_control_then_hp() -> None:
    sk_d = bytes(32)
    cipher = "aes-256-gcm"
    child = derive_child_keys(PRF_HMAC_SHA2_256, sk_d, NI, NR, cipher, 7, 9)
    stream, block = b"", b""
    for counter in range(1, 10):
        block = _hmac(sk_d, block + NI + NR + bytes([counter]))
        stream += block
    sa = material_length(cipher)
    assert child_keymat_length(cipher) == 2 * sa + 2 * CONTROL_KEY_BYTES + 2 * HP_KEY_BYTES
    assert child.i2r.key == stream[0:32] and child.i2r.salt == stream[32:36]
    assert child.r2i.key == stream[sa:sa + 32]
    assert child.control_i2r == stream[2 * sa:2 * sa + 32]
    assert child.control_r2i == stream[2 * sa + 32:2 * sa + 64]
    assert child.hp_i2r == stream[2 * sa + 64:2 * sa + 80]
    assert child.hp_r2i == stream[2 * sa + 80:2 * sa + 96]


def test_unsupported_ike_key_length_is_a_proposal_mismatch() -> None:
    with pytest.raises(P3Error) as failure:
        derive_ike_sa_keys(PRF_HMAC_SHA2_256, 24, SHARED, NI, NR, SPI_I, SPI_R)
    assert failure.value.code == "P3-E302"
