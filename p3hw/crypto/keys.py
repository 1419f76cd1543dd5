"""Key material shapes shared by the handshake, the rekey machine and the dataplane.

One direction of traffic is an SA: the P3 ID the *receiver* allocated
(DESIGN.md §3), the cipher, its keys, and the obfuscation key of spec §2.1.5.
A session holds one SA per direction, a control key per direction (the
control channel has its own keys, spec §2.1.2) and a header-protection key
per direction (DESIGN.md §3).

Key lengths by cipher (RFC 4106 / RFC 4309 / RFC 3686 + RFC 4868):

=============  =========  ==========  ============
cipher          key        salt        auth_key
=============  =========  ==========  ============
aes-128-gcm     16         4           -
aes-256-gcm     32         4           -
aes-128-ccm     16         3           -
aes-256-ccm     32         3           -
aes-128-ctr     16         4 (nonce)   32 (HMAC-SHA-256-128)
aes-256-ctr     32         4 (nonce)   32
=============  =========  ==========  ============
"""

from __future__ import annotations

from dataclasses import dataclass

from p3hw.reasons import P3Error

CIPHERS: dict[str, tuple[int, int, int]] = {
    # name: (key_bytes, salt_bytes, auth_key_bytes)
    "aes-128-gcm": (16, 4, 0),
    "aes-256-gcm": (32, 4, 0),
    "aes-128-ccm": (16, 3, 0),
    "aes-256-ccm": (32, 3, 0),
    "aes-128-ctr": (16, 4, 32),
    "aes-256-ctr": (32, 4, 32),
}

OBFS_KEY_BYTES = 16
HP_KEY_BYTES = 16
CONTROL_KEY_BYTES = 32  # control messages use AES-256-GCM whatever the data cipher


def cipher_name(key_type: str, mode: str) -> str:
    """Config `key_type` (AES128|AES256) and `cipher` (gcm|ccm|ctr) -> a CIPHERS name."""
    bits = {"AES128": "128", "AES256": "256"}.get(key_type.upper())
    if bits is None or mode not in ("gcm", "ccm", "ctr"):
        raise P3Error("DP_BAD_CIPHER", f"unsupported key_type/cipher {key_type!r}/{mode!r}")
    return f"aes-{bits}-{mode}"


def material_length(cipher: str) -> int:
    """Octets of key material one SA of this cipher consumes (key + salt + auth + obfs)."""
    key_bytes, salt_bytes, auth_bytes = CIPHERS[cipher]
    return key_bytes + salt_bytes + auth_bytes + OBFS_KEY_BYTES


@dataclass(frozen=True)
class SaKeys:
    """One direction's data SA."""

    p3_id: int
    cipher: str
    key: bytes
    salt: bytes
    obfs_key: bytes
    auth_key: bytes = b""

    def __post_init__(self) -> None:
        if self.cipher not in CIPHERS:
            raise P3Error("DP_BAD_CIPHER", f"unknown cipher {self.cipher!r}")
        key_bytes, salt_bytes, auth_bytes = CIPHERS[self.cipher]
        if (len(self.key), len(self.salt), len(self.auth_key)) != (key_bytes, salt_bytes, auth_bytes):
            raise P3Error("DP_BAD_CIPHER", f"wrong key lengths for {self.cipher}")
        if len(self.obfs_key) != OBFS_KEY_BYTES:
            raise P3Error("DP_BAD_CIPHER", "obfuscation key must be 16 octets")
        if not 0 < self.p3_id <= 0xFFFFFFFF:
            raise P3Error("DP_BAD_ARGUMENT", f"P3 ID {self.p3_id} out of range 1..2^32-1")

    @classmethod
    def from_material(cls, p3_id: int, cipher: str, material: bytes) -> SaKeys:
        """Split material_length(cipher) octets: key ‖ salt ‖ auth_key ‖ obfs_key."""
        key_bytes, salt_bytes, auth_bytes = CIPHERS[cipher]
        if len(material) != material_length(cipher):
            raise P3Error("DP_BAD_CIPHER", f"{cipher} needs {material_length(cipher)} octets of material")
        at = 0
        key = material[at:at + key_bytes]
        at += key_bytes
        salt = material[at:at + salt_bytes]
        at += salt_bytes
        auth_key = material[at:at + auth_bytes]
        at += auth_bytes
        obfs_key = material[at:at + OBFS_KEY_BYTES]
        return cls(p3_id=p3_id, cipher=cipher, key=key, salt=salt, obfs_key=obfs_key, auth_key=auth_key)


@dataclass(frozen=True)
class SessionKeys:
    """Everything one side needs to seal and open a session's traffic.

    *outbound* is what this side seals with (its p3_id was allocated by the
    peer); *inbound* is what it opens with (its p3_id allocated here).
    """

    outbound: SaKeys
    inbound: SaKeys
    control_out_key: bytes
    control_in_key: bytes
    hp_out_key: bytes
    hp_in_key: bytes
