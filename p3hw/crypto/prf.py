"""The IKEv2 pseudo-random functions and prf+ (RFC 7296 §2.13).

Three PRFs are negotiable in the initial exchange (DESIGN.md §4.1):

* PRF_HMAC_SHA2_256 (transform id 5, RFC 4868): HMAC-SHA-256, 32-octet output.
* PRF_AES128_XCBC (transform id 4, RFC 4434): AES-XCBC-MAC (RFC 3566) with the
  full 128-bit output, keyed by any length of key.
* PRF_AES128_CMAC (transform id 8, RFC 4615): AES-CMAC (RFC 4493) with the
  full 128-bit output, keyed by any length of key.

Every PRF here has the signature ``prf(key, data) -> bytes`` so prf+ and the
key schedule can take any of them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from p3hw.reasons import P3Error

Prf = Callable[[bytes, bytes], bytes]

AES_BLOCK_BYTES = 16

# IKEv2 Transform Type 2 (PRF) identifiers, IANA "Transform Type 2".
PRF_AES128_XCBC = 4
PRF_HMAC_SHA2_256 = 5
PRF_AES128_CMAC = 8


def prf_hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 (RFC 2104 / RFC 4868); any key length."""
    return hmac.new(key, data, hashlib.sha256).digest()


def _aes_ecb_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _aes_xcbc_mac(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC of RFC 3566 §4, untruncated (128 bits); key must be 16 octets."""
    k1 = _aes_ecb_block(key, b"\x01" * AES_BLOCK_BYTES)
    k2 = _aes_ecb_block(key, b"\x02" * AES_BLOCK_BYTES)
    k3 = _aes_ecb_block(key, b"\x03" * AES_BLOCK_BYTES)
    encryptor = Cipher(algorithms.AES(k1), modes.ECB()).encryptor()
    # All but the last block chain plainly; the empty message has one
    # (incomplete, padded) last block.
    full_blocks = max(0, (len(data) - 1) // AES_BLOCK_BYTES)
    chain = bytes(AES_BLOCK_BYTES)
    for i in range(full_blocks):
        block = data[i * AES_BLOCK_BYTES:(i + 1) * AES_BLOCK_BYTES]
        chain = encryptor.update(_xor(block, chain))
    last = data[full_blocks * AES_BLOCK_BYTES:]
    if len(last) == AES_BLOCK_BYTES:
        # RFC 3566 §4 (3)(a): a complete last block is XORed with K2.
        last = _xor(last, k2)
    else:
        # RFC 3566 §4 (3)(b): pad with a single 1 bit and zeros, XOR with K3.
        padded = last + b"\x80" + bytes(AES_BLOCK_BYTES - len(last) - 1)
        last = _xor(padded, k3)
    return encryptor.update(_xor(last, chain)) + encryptor.finalize()


def aes_xcbc_prf_128(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-PRF-128 (RFC 4434 §2), 16 octets of output.

    RFC 4434 §2: a 128-bit key is used as is; a shorter key is padded on the
    right with zero octets; a longer key is first reduced with
    AES-XCBC-PRF-128 keyed by 128 zero bits.
    """
    if len(key) < AES_BLOCK_BYTES:
        key = key + bytes(AES_BLOCK_BYTES - len(key))
    elif len(key) > AES_BLOCK_BYTES:
        key = _aes_xcbc_mac(bytes(AES_BLOCK_BYTES), key)
    return _aes_xcbc_mac(key, data)


def _aes_cmac(key: bytes, data: bytes) -> bytes:
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def aes_cmac_prf_128(key: bytes, data: bytes) -> bytes:
    """AES-CMAC-PRF-128 (RFC 4615 §3), 16 octets of output.

    RFC 4615 §3: a 128-bit key is used as is; a key of any other length
    (shorter or longer, unlike RFC 4434) is first reduced with AES-CMAC keyed
    by 128 zero bits.
    """
    if len(key) != AES_BLOCK_BYTES:
        key = _aes_cmac(bytes(AES_BLOCK_BYTES), key)
    return _aes_cmac(key, data)


def prf_plus(prf: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ of RFC 7296 §2.13: T1 | T2 | ... truncated to *length* octets.

    T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n). The counter is one
    octet, so at most 255 blocks can be produced.
    """
    if length < 0:
        raise P3Error("INTERNAL", f"prf+ asked for a negative length {length}")
    out = bytearray()
    previous = b""
    counter = 1
    while len(out) < length:
        if counter > 255:
            raise P3Error("INTERNAL", f"prf+ cannot produce {length} octets (255 blocks at most, RFC 7296 §2.13)")
        previous = prf(key, previous + seed + bytes([counter]))
        out += previous
        counter += 1
    return bytes(out[:length])


@dataclass(frozen=True)
class PrfAlgorithm:
    """A negotiable PRF: its IKEv2 transform id, function and sizes.

    *key_bytes* is the preferred key size (RFC 7296 §2.14: the length of
    SK_d, SK_pi and SK_pr), equal to the output size for all three PRFs.
    """

    transform_id: int
    name: str
    function: Prf
    output_bytes: int
    key_bytes: int
    # RFC 7296 §2.14: for the AES-based PRFs the nonce halves Ni and Nr each
    # contribute a fixed 64 bits to the SKEYSEED key.
    fixed_key_nonces: bool


PRF_ALGORITHMS: dict[int, PrfAlgorithm] = {
    PRF_HMAC_SHA2_256: PrfAlgorithm(PRF_HMAC_SHA2_256, "hmac-sha256", prf_hmac_sha256, 32, 32, False),
    PRF_AES128_XCBC: PrfAlgorithm(PRF_AES128_XCBC, "aes128-xcbc", aes_xcbc_prf_128, 16, 16, True),
    PRF_AES128_CMAC: PrfAlgorithm(PRF_AES128_CMAC, "aes128-cmac", aes_cmac_prf_128, 16, 16, True),
}

PRF_BY_NAME: dict[str, PrfAlgorithm] = {algo.name: algo for algo in PRF_ALGORITHMS.values()}


def prf_by_id(transform_id: int) -> PrfAlgorithm:
    """The PRF for an IKEv2 transform id; unknown ids are a proposal mismatch."""
    algo = PRF_ALGORITHMS.get(transform_id)
    if algo is None:
        raise P3Error("IKE_NO_PROPOSAL_CHOSEN", f"PRF transform id {transform_id} is not supported")
    return algo
