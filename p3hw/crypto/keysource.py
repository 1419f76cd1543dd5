"""Where key material comes from (Appendix A `key_generation`: 1 software, 2 hardware).

The rekey machine and the key arrays ask a `KeySource` for octets and never
care how they were made. `SoftwareKeySource` reads the operating system's
CSPRNG (`secrets`, i.e. getrandom(2)); the hardware source (PKCS#11
C_GenerateRandom, or RDSEED) implements the same protocol in
backends/ and plugs in here without touching the protocol machines.
"""

from __future__ import annotations

import secrets
from typing import Protocol, runtime_checkable

from p3hw.reasons import P3Error

#: One request never asks for more than this (a full key array is asked
#: for entry by entry); a larger request is a bug, not a user input.
MAX_REQUEST_BYTES = 1 << 16


@runtime_checkable
class KeySource(Protocol):
    """A source of secret random octets."""

    name: str

    def random_bytes(self, length: int) -> bytes:
        """*length* fresh secret octets, or P3Error P3-E407 (KEY_SOURCE_FAILED)."""
        ...


class SoftwareKeySource:
    """`key_generation = 1`: the OS CSPRNG."""

    name = "software"

    def __init__(self) -> None:
        self.bytes_served = 0

    def random_bytes(self, length: int) -> bytes:
        if not 0 < length <= MAX_REQUEST_BYTES:
            raise P3Error("KEY_SOURCE_FAILED", f"asked for {length} octets of key material (1..{MAX_REQUEST_BYTES})")
        self.bytes_served += length
        return secrets.token_bytes(length)
