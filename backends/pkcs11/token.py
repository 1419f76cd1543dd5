"""A logged-in PKCS#11 token and a pool of its sessions (python-pkcs11).

PKCS#11 v2.40 §5.1.6: a session must not be used by two threads at once,
but one application may hold several sessions of a token. ``TokenPool``
keeps up to ``size`` read-write sessions (the user is logged in once per
application, §5.6) and lends one per operation, so concurrent callers
never share a session. Every python-pkcs11 failure becomes a P3Error:
P3-E600 module, P3-E601 PIN, P3-E602 token missing or removed,
P3-E603 any other operation failure.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pkcs11
from pkcs11 import exceptions as pk

from p3hw.backends.pkcs11 import pinguard
from p3hw.backends.pkcs11.elf import check_pkcs11_module
from p3hw.reasons import P3Error

#: The environment variable that may hold the user PIN instead of a pin file.
PIN_ENV = "P3HW_PKCS11_PIN"
DEFAULT_POOL_SIZE = 4
#: A caller waits at most this long for a free session before P3-E603.
SESSION_WAIT_S = 10.0
MAX_PIN_BYTES = 256

_PIN_ERRORS = (pk.PinIncorrect, pk.PinInvalid, pk.PinLenRange, pk.PinLocked, pk.PinExpired,
               pk.UserPinNotInitialized)
_TOKEN_GONE = (pk.NoSuchToken, pk.TokenNotPresent, pk.TokenNotRecognised, pk.DeviceRemoved, pk.SlotIDInvalid,
               pk.SessionHandleInvalid, pk.SessionClosed)

T = TypeVar("T")


def read_pin(pin_file: str | os.PathLike[str] | None) -> str:
    """The user PIN from its mode-0600 file, else from ``P3HW_PKCS11_PIN`` (never from the config line)."""
    if pin_file is not None:
        name = os.fspath(pin_file)
        try:
            info = os.stat(name)
            if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077:
                raise P3Error("CONFIG_SECRET_FILE", f"PIN file {name} must be a regular file of mode 0600",
                              f"chmod 600 {name}")
            with open(name, "rb") as handle:
                pin = handle.read(MAX_PIN_BYTES + 1).strip()
        except OSError as exc:
            raise P3Error("CONFIG_SECRET_FILE", f"cannot read PIN file {name}: {exc.strerror or exc}") from None
        if not pin or len(pin) > MAX_PIN_BYTES:
            raise P3Error("PKCS11_PIN", f"PIN file {name} is empty or longer than {MAX_PIN_BYTES} octets")
        return pin.decode("utf-8", "replace")
    pin_text = os.environ.get(PIN_ENV, "")
    if not pin_text:
        raise P3Error("PKCS11_PIN", f"no PIN: neither pkcs11_pin_file nor {PIN_ENV} is set",
                      "write the user PIN to a mode-0600 file and name it in pkcs11_pin_file")
    return pin_text


def translate(exc: BaseException, doing: str) -> P3Error:
    """The reason-coded error for a python-pkcs11 failure during *doing*."""
    name = type(exc).__name__
    if isinstance(exc, _PIN_ERRORS):
        return P3Error("PKCS11_PIN", f"{doing}: the token refused the PIN ({name})",
                       "check pkcs11_pin_file / P3HW_PKCS11_PIN; a locked PIN needs the SO to reset it")
    if isinstance(exc, _TOKEN_GONE):
        return P3Error("PKCS11_TOKEN", f"{doing}: the token is missing or was removed ({name})",
                       "check pkcs11_token and that the HSM is connected")
    return P3Error("PKCS11_OPERATION", f"{doing}: {name} {exc}".rstrip())


class TokenPool:
    """A logged-in token of a checked module, lending sessions one caller at a time."""

    def __init__(self, module: str, label: str, pin: str, size: int = DEFAULT_POOL_SIZE) -> None:
        check_pkcs11_module(module)          # before dlopen: P3-E600 for a wrong file
        pinguard.check(module, label, pin)   # a PIN the token refused before: P3-E601, no C_Login
        self.module, self.label, self.size = module, label, max(1, size)
        try:
            with module_lock(module):
                self.lib = pkcs11.lib(module)
        except Exception as exc:  # noqa: BLE001 - C_Initialize of an unknown module can fail any way
            raise P3Error("PKCS11_MODULE", f"{module} exports C_GetFunctionList but could not be "
                          f"initialised: {type(exc).__name__} {exc}".rstrip()) from None
        with module_lock(module):
            self.token = self.find_token()
        self._pin = pin
        self._idle: list[Any] = []
        self._opened = 1
        self._free = threading.Condition()
        self._closed = False
        # Log in now, so a wrong PIN is P3-E601 at start-up, not at the first rekey.
        with module_lock(module):
            self._idle.append(self._open_session())

    def find_token(self) -> Any:
        try:
            return self.lib.get_token(token_label=self.label)
        except pk.NoSuchToken:
            raise P3Error("PKCS11_TOKEN", f"no token labelled {self.label!r} in {self.module}",
                          "check pkcs11_token (softhsm2-util --show-slots lists the labels)") from None
        except pk.PKCS11Error as exc:
            raise translate(exc, f"looking for token {self.label!r}") from None

    def present(self) -> bool:
        """Whether the token can still be found (after a failure: P3-E602 rather than P3-E603)."""
        try:
            self.lib.get_token(token_label=self.label)
            return True
        except Exception:  # noqa: BLE001 - any failure here means "not usable"
            return False

    def _open_session(self) -> Any:
        try:
            session = self.token.open(user_pin=self._pin, rw=True)
        except pk.UserAlreadyLoggedIn:       # §5.6: the login is per application, not per session
            session = self.token.open(rw=True)
        except _PIN_ERRORS as exc:
            pinguard.remember(self.module, self.label, self._pin)
            raise P3Error("PKCS11_PIN", f"logging in to token {self.label!r}: the token refused the PIN "
                          f"({type(exc).__name__})", pinguard.REFUSED_HINT) from None
        except pk.PKCS11Error as exc:
            raise translate(exc, f"opening a session on token {self.label!r}") from None
        return session

    @contextmanager
    def session(self) -> Iterator[Any]:
        """Borrow a session for one operation; it returns to the pool, or is dropped if it failed.

        python-pkcs11 calls C_Initialize(NULL_PTR), which per PKCS#11 v2.40
        §5.4 promises the module that no two threads call it at once (SoftHSM2
        then takes no locks of its own). So the call itself runs under the
        process-wide lock of the module; the pool keeps each caller's session
        state (an operation in progress, a find) apart.
        """
        session = self._borrow()
        healthy = False
        try:
            with module_lock(self.module):
                yield session
            healthy = True
        finally:
            self._give_back(session, healthy)

    def _borrow(self) -> Any:
        with self._free:
            if self._closed:
                raise P3Error("PKCS11_OPERATION", "the token pool is closed")
            if not self._idle and self._opened >= self.size:
                if not self._free.wait_for(lambda: self._idle or self._opened < self.size or self._closed,
                                           timeout=SESSION_WAIT_S):
                    raise P3Error("PKCS11_OPERATION", f"no free session on token {self.label!r} after "
                                  f"{SESSION_WAIT_S:.0f} s")
            if self._idle:
                return self._idle.pop()
            self._opened += 1          # reserve the slot before opening outside the condition
        try:
            with module_lock(self.module):
                return self._open_session()
        except BaseException:
            with self._free:
                self._opened -= 1
                self._free.notify()
            raise

    def _give_back(self, session: Any, healthy: bool) -> None:
        with self._free:
            if healthy and not self._closed:
                self._idle.append(session)
                self._free.notify()
                return
            self._opened -= 1
            self._free.notify()
        with module_lock(self.module):
            _close_quietly(session)

    def run(self, doing: str, operation: Callable[[Any], T]) -> T:
        """*operation(session)* with reason-coded failures (P3-E602 when the token has gone)."""
        try:
            with self.session() as session:
                return operation(session)
        except P3Error:
            raise
        except pk.PKCS11Error as exc:
            error = translate(exc, doing)
            if error.reason.name == "PKCS11_OPERATION":
                with module_lock(self.module):
                    gone = not self.present()
                if gone:
                    error = P3Error("PKCS11_TOKEN", f"{doing}: token {self.label!r} was removed "
                                    f"({type(exc).__name__})", "reconnect the HSM; the daemon follows key_fallback")
            raise error from None

    def close(self) -> None:
        with self._free:
            self._closed = True
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            self._free.notify_all()
        with module_lock(self.module):
            for session in idle:
                _close_quietly(session)


_module_locks: dict[str, threading.Lock] = {}
_module_locks_guard = threading.Lock()


def module_lock(module: str) -> threading.Lock:
    """One lock per loaded module: python-pkcs11 keeps one library object per path."""
    with _module_locks_guard:
        return _module_locks.setdefault(os.path.realpath(module), threading.Lock())


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except Exception:  # noqa: BLE001, S110 - a dead session cannot be closed any better
        pass

