"""The key schedule of the initial exchange (RFC 7296 §2.14, §2.17).

IKE SA keys::

    SKEYSEED = prf(Ni | Nr, g^ir)
    {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
        = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)

The IKE SA of p3hw is always protected by AES-GCM-16 (RFC 5282), an AEAD:
there are no SK_ai/SK_ar (zero length) and each SK_e is the AES key followed
by the 4-octet salt (RFC 5282 §7.1).

Child SA key material (RFC 7296 §2.17, no PFS in the initial exchange)::

    KEYMAT = prf+(SK_d, Ni | Nr)

taken in this order (docs/handshake.md, "Key material"):

1. the initiator-to-responder data SA (``material_length(cipher)`` octets,
   split by ``SaKeys.from_material``),
2. the responder-to-initiator data SA (same length) — these two are what
   RFC 7296 §2.17 prescribes,
3. p3hw's extension: the initiator-to-responder control key, then the
   responder-to-initiator control key (``CONTROL_KEY_BYTES`` each), then the
   header-protection keys in the same direction order (``HP_KEY_BYTES`` each).
"""

from __future__ import annotations

from dataclasses import dataclass

from p3hw.crypto.keys import CONTROL_KEY_BYTES, HP_KEY_BYTES, SaKeys, SessionKeys, material_length
from p3hw.crypto.prf import PrfAlgorithm, prf_by_id, prf_plus
from p3hw.reasons import P3Error

#: RFC 5282 §7.1: the salt that follows each AES-GCM key in SK_e.
GCM_SALT_BYTES = 4
#: RFC 7296 §2.10: nonces are at least 128 bits; p3hw sends and demands 256.
MIN_NONCE_BYTES = 32


@dataclass(frozen=True)
class IkeSaKeys:
    """The seven keys of an IKE SA (RFC 7296 §2.14)."""

    prf_id: int
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    @property
    def encryption_key_i(self) -> bytes:
        """The AES key of SK_ei (without its salt)."""
        return self.sk_ei[:-GCM_SALT_BYTES]

    @property
    def salt_i(self) -> bytes:
        return self.sk_ei[-GCM_SALT_BYTES:]

    @property
    def encryption_key_r(self) -> bytes:
        return self.sk_er[:-GCM_SALT_BYTES]

    @property
    def salt_r(self) -> bytes:
        return self.sk_er[-GCM_SALT_BYTES:]


def skeyseed(prf: PrfAlgorithm, nonce_i: bytes, nonce_r: bytes, shared_secret: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14).

    For the AES-based PRFs the key is the first 64 bits of Ni and the first
    64 bits of Nr: RFC 7296 §2.14 ("half the bits must come from Ni and half
    from Nr") for PRFs with a fixed key length, as RFC 3664 defined
    AES-XCBC-PRF-128; strongSwan and libreswan do the same for XCBC and CMAC.
    """
    if prf.fixed_key_nonces:
        half = prf.key_bytes // 2
        key = nonce_i[:half] + nonce_r[:half]
    else:
        key = nonce_i + nonce_r
    return prf.function(key, shared_secret)


def derive_ike_sa_keys(
    prf_id: int,
    encryption_key_bytes: int,
    shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeSaKeys:
    """SK_d, SK_ai/ar (empty: AEAD), SK_ei/er (key ‖ 4-octet salt), SK_pi/pr."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise P3Error("INTERNAL", "IKE SPIs are 8 octets")
    if encryption_key_bytes not in (16, 32):
        raise P3Error("IKE_NO_PROPOSAL_CHOSEN", f"AES-GCM key of {encryption_key_bytes} octets")
    prf = prf_by_id(prf_id)
    seed = skeyseed(prf, nonce_i, nonce_r, shared_secret)
    sk_e_bytes = encryption_key_bytes + GCM_SALT_BYTES
    lengths = (prf.key_bytes, 0, 0, sk_e_bytes, sk_e_bytes, prf.key_bytes, prf.key_bytes)
    stream = prf_plus(prf.function, seed, nonce_i + nonce_r + spi_i + spi_r, sum(lengths))
    keys: list[bytes] = []
    at = 0
    for length in lengths:
        keys.append(stream[at:at + length])
        at += length
    return IkeSaKeys(prf_id, *keys)


def child_keymat_length(cipher: str) -> int:
    """Octets of KEYMAT the initial child SA consumes (both directions, all our keys)."""
    return 2 * material_length(cipher) + 2 * CONTROL_KEY_BYTES + 2 * HP_KEY_BYTES


@dataclass(frozen=True)
class ChildKeys:
    """KEYMAT split by direction: i2r is what the initiator seals with."""

    i2r: SaKeys
    r2i: SaKeys
    control_i2r: bytes
    control_r2i: bytes
    hp_i2r: bytes
    hp_r2i: bytes

    def for_role(self, initiator: bool) -> SessionKeys:
        """This side's SessionKeys: outbound is what it seals with."""
        if initiator:
            return SessionKeys(
                outbound=self.i2r,
                inbound=self.r2i,
                control_out_key=self.control_i2r,
                control_in_key=self.control_r2i,
                hp_out_key=self.hp_i2r,
                hp_in_key=self.hp_r2i,
            )
        return SessionKeys(
            outbound=self.r2i,
            inbound=self.i2r,
            control_out_key=self.control_r2i,
            control_in_key=self.control_i2r,
            hp_out_key=self.hp_r2i,
            hp_in_key=self.hp_i2r,
        )


def split_child_keymat(keymat: bytes, cipher: str, initiator_p3_id: int, responder_p3_id: int) -> ChildKeys:
    """Cut KEYMAT in the order of the module docstring.

    P3 IDs are allocated by the receiver (DESIGN.md §3) and carried as the
    child SA's SPI: the initiator-to-responder SA is named by the
    responder's ID, the responder-to-initiator SA by the initiator's.
    """
    if len(keymat) != child_keymat_length(cipher):
        raise P3Error("INTERNAL", f"KEYMAT for {cipher} must be {child_keymat_length(cipher)} octets")
    sa_bytes = material_length(cipher)
    at = 0

    def take(length: int) -> bytes:
        nonlocal at
        chunk = keymat[at:at + length]
        at += length
        return chunk

    i2r = SaKeys.from_material(responder_p3_id, cipher, take(sa_bytes))
    r2i = SaKeys.from_material(initiator_p3_id, cipher, take(sa_bytes))
    control_i2r = take(CONTROL_KEY_BYTES)
    control_r2i = take(CONTROL_KEY_BYTES)
    hp_i2r = take(HP_KEY_BYTES)
    hp_r2i = take(HP_KEY_BYTES)
    return ChildKeys(i2r, r2i, control_i2r, control_r2i, hp_i2r, hp_r2i)


def derive_child_keys(
    prf_id: int,
    sk_d: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    cipher: str,
    initiator_p3_id: int,
    responder_p3_id: int,
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, Ni | Nr) (RFC 7296 §2.17), split per direction."""
    prf = prf_by_id(prf_id)
    keymat = prf_plus(prf.function, sk_d, nonce_i + nonce_r, child_keymat_length(cipher))
    return split_child_keymat(keymat, cipher, initiator_p3_id, responder_p3_id)


def derive_session_keys(
    prf_id: int,
    sk_d: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    cipher: str,
    initiator_p3_id: int,
    responder_p3_id: int,
    initiator: bool,
) -> SessionKeys:
    """One side's SessionKeys from the initial exchange."""
    child = derive_child_keys(prf_id, sk_d, nonce_i, nonce_r, cipher, initiator_p3_id, responder_p3_id)
    return child.for_role(initiator)
