"""`key_generation = 2` with a PKCS#11 token: every secret octet is a key the token generated.

Each request is one ``C_GenerateKey`` (CKM_GENERIC_SECRET_KEY_GEN) of the
asked length, made as a *token object* labelled ``p3hw-key-<run>-<serial>``
and extractable, so the daemon can read its value and install it. The
object stays in the token as the audit record: anyone holding the PIN can
list the token's objects, see ``CKA_LOCAL = true`` (PKCS#11 v2.40 §4.4: the
key was generated on the token, not imported) and compare ``CKA_VALUE``
with the keys in use. Only the last ``retention`` keys of a run are kept,
so the token does not fill up and old keys do not stay (docs/hardware.md).
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, KeyType, ObjectClass

from p3hw.backends.pkcs11.token import TokenPool
from p3hw.crypto.keysource import MAX_REQUEST_BYTES
from p3hw.reasons import P3Error

LABEL_PREFIX = "p3hw-key-"
#: Keys of one run kept in the token; a session uses a few dozen at most.
DEFAULT_RETENTION = 1024


@dataclass(frozen=True)
class TokenKey:
    """A key object as the token reports it."""

    label: str
    value: bytes
    local: bool


class Pkcs11KeySource:
    """A KeySource whose octets are generic-secret keys generated in the token."""

    name = "pkcs11"

    def __init__(self, pool: TokenPool, retention: int = DEFAULT_RETENTION) -> None:
        self.pool = pool
        self.retention = max(1, retention)
        self.run_id = secrets.token_hex(4)
        self._serial = 0
        self._kept: deque[str] = deque()
        self._lock = threading.Lock()
        self.keys_generated = 0

    def _next_label(self) -> str:
        with self._lock:
            self._serial += 1
            return f"{LABEL_PREFIX}{self.run_id}-{self._serial}"

    def random_bytes(self, length: int) -> bytes:
        if not 0 < length <= MAX_REQUEST_BYTES:
            raise P3Error("KEY_SOURCE_FAILED", f"asked for {length} octets of key material (1..{MAX_REQUEST_BYTES})")
        label = self._next_label()

        def generate(session: Any) -> bytes:
            key = session.generate_key(
                KeyType.GENERIC_SECRET, length * 8, label=label, id=label.encode(), store=True,
                template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False, Attribute.PRIVATE: True},
            )
            value = bytes(key[Attribute.VALUE])
            if len(value) != length:
                raise P3Error("PKCS11_OPERATION", f"the token returned {len(value)} octets for a {length}-octet key")
            return value

        value = self.pool.run(f"generating key {label}", generate)
        with self._lock:
            self.keys_generated += 1
            self._kept.append(label)
            expired = [self._kept.popleft() for _ in range(max(0, len(self._kept) - self.retention))]
        for old in expired:
            self.pool.run(f"destroying key {old}", lambda session, old=old: _destroy(session, old))
        return value


    def close(self) -> None:
        """Give the token's sessions back (the key objects stay: they are the audit record)."""
        self.pool.close()


def _destroy(session: Any, label: str) -> None:
    for key in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}):
        key.destroy()


def token_keys(pool: TokenPool, run_id: str | None = None) -> list[TokenKey]:
    """The p3hw keys the token holds (of one run, or all), as the token reports them."""
    prefix = LABEL_PREFIX + (f"{run_id}-" if run_id else "")

    def listing(session: Any) -> list[TokenKey]:
        found = []
        for key in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
            label = key[Attribute.LABEL]
            if label.startswith(prefix):
                found.append(TokenKey(label, bytes(key[Attribute.VALUE]), bool(key[Attribute.LOCAL])))
        return found

    return pool.run("listing the token's keys", listing)


__all__ = ["DEFAULT_RETENTION", "LABEL_PREFIX", "Pkcs11KeySource", "TokenKey", "token_keys"]
