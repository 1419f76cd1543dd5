"""Which KeySource a gateway uses (Appendix A `key_generation`), and the token-failure policy.

``key_generation = 1``: the OS CSPRNG (SoftwareKeySource).
``key_generation = 2``: hardware — a PKCS#11 token (``hardware_rng = pkcs11``,
every key a ``C_GenerateKey`` in the token) or the CPU's RDSEED/RDRAND
(``hardware_rng = cpu``) behind health tests.

When the hardware fails — at start-up or at run time — ``key_fallback``
decides: ``none`` (default) raises the reason-coded error, so the rekey that
asked fails and is retried by the protocol; ``software`` logs the reason code
and serves software keys, trying the hardware again every
``HARDWARE_RETRY_S`` seconds (docs/hardware.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from p3hw.config import Config, LocalHost
from p3hw.crypto.keysource import KeySource, SoftwareKeySource
from p3hw.log import LOGGER_NAME, failure
from p3hw.reasons import P3Error

#: While on software keys, how often the hardware is tried again.
HARDWARE_RETRY_S = 60.0
#: The reasons that mean "the hardware failed" (and so follow key_fallback).
HARDWARE_REASONS = frozenset({"PKCS11_MODULE", "PKCS11_PIN", "PKCS11_TOKEN", "PKCS11_OPERATION", "RNG_HEALTH",
                              "RNG_UNAVAILABLE", "CONFIG_SECRET_FILE"})


def open_hardware_source(local: LocalHost) -> KeySource:
    """The hardware KeySource the local section names; reason-coded P3Error when it cannot be opened."""
    if local.hardware_rng == "pkcs11":
        from p3hw.backends.pkcs11.keysource import Pkcs11KeySource
        from p3hw.backends.pkcs11.token import TokenPool, read_pin

        if local.pkcs11_module is None or local.pkcs11_token is None:
            raise P3Error("PKCS11_MODULE", "hardware_rng = pkcs11 needs pkcs11_module and pkcs11_token")
        pool = TokenPool(local.pkcs11_module, local.pkcs11_token, read_pin(local.pkcs11_pin_file))
        return Pkcs11KeySource(pool)
    from p3hw.backends.rng import CpuRngKeySource

    return CpuRngKeySource()


class PolicyKeySource:
    """Hardware first; on a hardware failure, software keys only if key_fallback allows it."""

    def __init__(self, open_hardware: Callable[[], KeySource], allow_software: bool,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic,
                 retry_s: float = HARDWARE_RETRY_S) -> None:
        self._open_hardware = open_hardware
        self.allow_software = allow_software
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self._clock = clock
        self._retry_s = retry_s
        self._lock = threading.Lock()
        self.software = SoftwareKeySource()
        self.hardware: KeySource | None = None
        self._retry_at = 0.0
        #: reason codes of the hardware failures seen, in order
        self.failures: list[str] = []
        self.hardware_requests = 0
        self.software_requests = 0
        self._try_hardware()   # start-up: P3Error here unless software keys are allowed

    @property
    def name(self) -> str:
        if self.hardware is not None:
            return self.hardware.name
        return "software (fallback)"

    @property
    def on_fallback(self) -> bool:
        return self.hardware is None

    def _hardware_failed(self, error: P3Error, when: str) -> None:
        self.failures.append(error.code)
        self._close_hardware()
        if getattr(error, "already_reported", False):
            # The same refusal again (a PIN the token refused: no login was attempted): logged once, not per retry.
            if not self.allow_software:
                raise error
            self._retry_at = self._clock() + self._retry_s
            return
        # A refused PIN: say that it is not tried again (backends/pkcs11/pinguard.py), not "retrying".
        pin = f"; {error.hint}" if error.reason.name == "PKCS11_PIN" and error.hint else ""
        if not self.allow_software:
            failure(self.log, error.reason.name, f"hardware key source failed {when}: {error.detail} "
                    f"(key_fallback = none: no keys until it works again){pin}")
            raise error
        self._retry_at = self._clock() + self._retry_s
        retry = f"{pin}; pkcs11_pin_file is read again every {self._retry_s:.0f} s" if pin else \
            f", retrying the hardware in {self._retry_s:.0f} s"
        failure(self.log, error.reason.name, f"hardware key source failed {when}: {error.detail}; using software "
                f"keys (key_fallback = software){retry}", level=logging.WARNING)

    def _close_hardware(self) -> None:
        hardware, self.hardware = self.hardware, None
        close = getattr(hardware, "close", None)
        if close is not None:
            try:
                close()
            except P3Error:
                pass          # a failed device cannot be closed any better

    def close(self) -> None:
        """Release the hardware (a daemon's shutdown)."""
        with self._lock:
            self._close_hardware()

    def _try_hardware(self) -> None:
        try:
            self.hardware = self._open_hardware()
        except P3Error as error:
            self._hardware_failed(error, "to open")

    def random_bytes(self, length: int) -> bytes:
        with self._lock:
            if self.hardware is None and self._clock() >= self._retry_at:
                self._try_hardware()
                if self.hardware is not None:
                    self.log.info("hardware key source %s is back; software keys no longer used", self.hardware.name)
            if self.hardware is not None:
                try:
                    data = self.hardware.random_bytes(length)
                    self.hardware_requests += 1
                    return data
                except P3Error as error:
                    if error.reason.name not in HARDWARE_REASONS:
                        raise       # a bad request, not a hardware failure
                    self._hardware_failed(error, "at run time")
            self.software_requests += 1
            return self.software.random_bytes(length)


def key_source_status(source: KeySource) -> str:
    """What `p3ctl status` says of the key source actually in use (not what the configuration asked for):
    ``software``, ``hardware (pkcs11)`` / ``hardware (cpu-rng)``, or ``software (fallback)`` while a failed
    hardware source is replaced by software keys (key_fallback = software)."""
    if getattr(source, "on_fallback", False):
        return "software (fallback)"
    if isinstance(source, PolicyKeySource):
        return f"hardware ({source.name})"
    return source.name


def make_key_source(config: Config, logger: logging.Logger | None = None) -> KeySource:
    """The KeySource for *config*: software for key_generation 1, else hardware under the key_fallback policy."""
    local = config.local
    if local.key_generation != 2:
        return SoftwareKeySource()
    return PolicyKeySource(lambda: open_hardware_source(local), local.key_fallback == "software", logger)


__all__ = ["HARDWARE_RETRY_S", "PolicyKeySource", "make_key_source", "open_hardware_source"]
