"""One login attempt per wrong PIN: a real HSM locks the user PIN after a few failures.

When a token refuses the PIN (CKR_PIN_INCORRECT, CKR_PIN_LOCKED, ...), the
refusal is remembered for that module, token and PIN. Every later attempt
with the same PIN -- the key source's retry every HARDWARE_RETRY_S under
``key_fallback = software``, the PKCS#11 crypto engine of the same daemon,
another shard's engine -- is refused here with P3-E601 without calling
C_Login. A different PIN (the operator rewrote ``pkcs11_pin_file``) is tried
again. The PIN itself is not kept: only a keyed digest whose key lives in
this process. A daemon that cannot start because of the PIN exits with
:data:`EXIT_PIN_REFUSED`, which the systemd units name in
``RestartPreventExitStatus=`` so ``Restart=on-failure`` does not retry it
every few seconds (docs/hardware.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading

from p3hw.reasons import P3Error

#: The daemon's exit status when the token refused its PIN (EX_NOPERM of sysexits.h); packaging/*.service.
EXIT_PIN_REFUSED = 77

_KEY = secrets.token_bytes(32)
_lock = threading.Lock()
_refused: dict[tuple[str, str], bytes] = {}


def _slot(module: str, label: str) -> tuple[str, str]:
    return os.path.realpath(module) if module else "", label


def _digest(pin: str) -> bytes:
    return hashlib.blake2b(pin.encode("utf-8", "surrogateescape"), key=_KEY, digest_size=32).digest()


class PinRefused(P3Error):
    """P3-E601 for a PIN this process already saw refused: no login was attempted (logged once already)."""

    already_reported = True


def check(module: str, label: str, pin: str) -> None:
    """Raise :class:`PinRefused` when this module's token *label* already refused *pin*."""
    with _lock:
        known = _refused.get(_slot(module, label))
    if known is not None and hmac.compare_digest(known, _digest(pin)):
        raise PinRefused("PKCS11_PIN", f"token {label!r} refused this PIN before; no further login is attempted "
                         "with it (a real HSM locks the PIN after a few failures)",
                         "write the right user PIN to pkcs11_pin_file (the next attempt uses it), or restart")


def remember(module: str, label: str, pin: str) -> None:
    """The token refused *pin*: no further login with it."""
    with _lock:
        _refused[_slot(module, label)] = _digest(pin)


def forget_all() -> None:
    """Forget every refusal (tests; a daemon forgets at exit)."""
    with _lock:
        _refused.clear()


REFUSED_HINT = ("no further login is attempted with this PIN until pkcs11_pin_file changes; a real HSM locks "
                "the PIN after a few failures (the SO resets it)")
