"""The CPU's hardware RNG as a key source, behind NIST SP 800-90B-style health tests.

The bytes come from RDSEED (or RDRAND when RDSEED keeps running dry) through
``p3hw.dataplane.rng_fill`` (backends/rng/rng.c). Every byte handed out has
passed the continuous health tests first:

* repetition count test (SP 800-90B §4.4.1): the same byte value too many
  times in a row;
* adaptive proportion test (§4.4.2): one byte value too frequent within a
  window of 512 bytes;
* stuck output (FIPS 140-2 §4.9.2 continuous test): a 64-bit word equal to
  the one before it — what a stuck or broken instruction looks like (some
  CPUs have returned a constant with CF = 1).

A start-up test (§4.3) runs the tests over 4096 bytes before the first use.
A failure is P3-E604 and latches: the source is not used again until it is
reset (§4.3: "the entropy source shall not produce output" after a failure).
A CPU without the instruction is P3-E605.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable

from p3hw.crypto.keysource import MAX_REQUEST_BYTES
from p3hw.reasons import P3Error

NAME = "rng"

#: SP 800-90B §4.4: false-positive probability per test; 2^-40 keeps false
#: alarms away over the life of a gateway while catching a stuck source at once.
ALPHA_LOG2 = -40
#: Assessed min-entropy per byte. RDSEED output is conditioned to full
#: entropy; claiming less (7 of 8 bits) makes the cutoffs a little tighter.
MIN_ENTROPY_BITS_PER_BYTE = 7.0
#: §4.4.2: window size for non-binary samples.
APT_WINDOW = 512
#: §4.3: start-up tests over at least 1024 samples; 4096 fills the APT window eight times.
STARTUP_BYTES = 4096
#: Bounded retries per 64-bit word when the CPU reports no data (CF = 0).
RDSEED_RETRIES = 100
RDRAND_RETRIES = 10       # Intel DRNG guide §5.2.1: ten failures in a row mean a broken RNG
STUCK_WORD_BYTES = 8


def repetition_cutoff(entropy_bits: float = MIN_ENTROPY_BITS_PER_BYTE, alpha_log2: int = ALPHA_LOG2) -> int:
    """SP 800-90B §4.4.1: C = 1 + ceil(-log2(alpha) / H)."""
    return 1 + math.ceil(-alpha_log2 / entropy_bits)


def proportion_cutoff(entropy_bits: float = MIN_ENTROPY_BITS_PER_BYTE, alpha_log2: int = ALPHA_LOG2,
                      window: int = APT_WINDOW) -> int:
    """SP 800-90B §4.4.2: the smallest C with P(count of one value in the window >= C) <= alpha.

    The count of the window's first value among the other W-1 samples is
    binomial(W-1, 2^-H); the first sample itself adds one.
    """
    p = 2.0 ** -entropy_bits
    alpha = 2.0 ** alpha_log2
    n = window - 1
    tail = 1.0
    for c in range(n + 1):
        # tail = P(X >= c)
        if tail <= alpha:
            return c + 1
        tail -= math.comb(n, c) * p ** c * (1 - p) ** (n - c)
    return window


class HealthTests:
    """The continuous tests over a stream of bytes; ``feed`` raises P3-E604 on the first failure."""

    def __init__(self, entropy_bits: float = MIN_ENTROPY_BITS_PER_BYTE) -> None:
        self.rct_cutoff = repetition_cutoff(entropy_bits)
        self.apt_cutoff = proportion_cutoff(entropy_bits)
        self._last: int | None = None
        self._run = 0
        self._apt_value: int | None = None
        self._apt_seen = 0
        self._apt_count = 0
        self._last_word: bytes | None = None
        self._partial = bytearray()
        self.bytes_tested = 0

    def feed(self, data: bytes) -> None:
        for value in data:
            # §4.4.1 repetition count test
            if value == self._last:
                self._run += 1
                if self._run >= self.rct_cutoff:
                    raise P3Error("RNG_HEALTH", f"repetition count test: byte 0x{value:02x} repeated {self._run} "
                                  f"times in a row (cutoff {self.rct_cutoff})")
            else:
                self._last, self._run = value, 1
            # §4.4.2 adaptive proportion test
            if self._apt_seen == 0:
                self._apt_value, self._apt_count = value, 1
            elif value == self._apt_value:
                self._apt_count += 1
                if self._apt_count >= self.apt_cutoff:
                    raise P3Error("RNG_HEALTH", f"adaptive proportion test: byte 0x{value:02x} seen "
                                  f"{self._apt_count} times in a window of {APT_WINDOW} (cutoff {self.apt_cutoff})")
            self._apt_seen = (self._apt_seen + 1) % APT_WINDOW
        # stuck output: consecutive 64-bit words must differ
        self._partial += data
        whole = len(self._partial) - len(self._partial) % STUCK_WORD_BYTES
        for offset in range(0, whole, STUCK_WORD_BYTES):
            word = bytes(self._partial[offset:offset + STUCK_WORD_BYTES])
            if word == self._last_word:
                raise P3Error("RNG_HEALTH", f"stuck output: the word {word.hex()} came twice in a row")
            self._last_word = word
        del self._partial[:whole]
        self.bytes_tested += len(data)


def native_reader(source: str, max_retries: int) -> Callable[[int], bytes]:
    """``length -> bytes`` from the CPU instruction *source* (``rdseed`` or ``rdrand``)."""
    from p3hw import dataplane

    def read(length: int) -> bytes:
        return dataplane.rng_fill(source, length, max_retries)[0]

    return read


def cpu_rng_available() -> tuple[bool, str]:
    """(usable, why) for doctor and make_key_source."""
    from p3hw import dataplane

    try:
        features = dataplane.cpu_features()
    except P3Error as exc:
        return False, exc.message()
    if features.get("rdseed"):
        return True, "RDSEED (and RDRAND)" if features.get("rdrand") else "RDSEED"
    if features.get("rdrand"):
        return True, "RDRAND only (no RDSEED)"
    return False, "P3-E605 the CPU has neither RDSEED nor RDRAND"


class CpuRngKeySource:
    """A KeySource over RDSEED (RDRAND when RDSEED runs dry), every byte health-tested first."""

    name = "cpu-rng"

    def __init__(self, read_seed: Callable[[int], bytes] | None = None,
                 read_rand: Callable[[int], bytes] | None = None) -> None:
        if read_seed is None and read_rand is None:
            ok, why = cpu_rng_available()
            if not ok:
                raise P3Error("RNG_UNAVAILABLE", why.removeprefix("P3-E605 "),
                              "use key_generation = 1, or a PKCS#11 token (pkcs11_module)")
            from p3hw import dataplane

            features = dataplane.cpu_features()
            read_seed = native_reader("rdseed", RDSEED_RETRIES) if features.get("rdseed") else None
            read_rand = native_reader("rdrand", RDRAND_RETRIES) if features.get("rdrand") else None
        self._readers = [r for r in (read_seed, read_rand) if r is not None]
        self._health = HealthTests()
        self._lock = threading.Lock()
        self._failed: P3Error | None = None
        self.bytes_served = 0
        self.seed_exhaustions = 0
        self.recent_sources: deque[int] = deque(maxlen=64)   # which reader served each recent request
        self._startup()

    def _startup(self) -> None:
        with self._lock:
            self._read_tested(STARTUP_BYTES)   # discarded: §4.3 start-up test

    def _read_tested(self, length: int) -> bytes:
        if self._failed is not None:
            raise P3Error("RNG_HEALTH", f"the hardware RNG failed earlier and stays off: {self._failed.detail}")
        last_error: P3Error | None = None
        for index, read in enumerate(self._readers):
            try:
                data = read(length)
            except P3Error as exc:
                if exc.reason.name == "RNG_HEALTH" and index + 1 < len(self._readers):
                    self.seed_exhaustions += 1   # RDSEED ran dry: the DRBG it seeds takes over
                    last_error = exc
                    continue
                self._failed = exc
                raise
            if len(data) != length:
                self._failed = P3Error("RNG_HEALTH", f"asked {length} octets, got {len(data)}")
                raise self._failed
            try:
                self._health.feed(data)
            except P3Error as exc:
                self._failed = exc
                raise
            self.recent_sources.append(index)
            return data
        assert last_error is not None
        self._failed = last_error
        raise last_error

    def random_bytes(self, length: int) -> bytes:
        if not 0 < length <= MAX_REQUEST_BYTES:
            raise P3Error("KEY_SOURCE_FAILED", f"asked for {length} octets of key material (1..{MAX_REQUEST_BYTES})")
        with self._lock:
            data = self._read_tested(length)
            self.bytes_served += length
            return data

    def reset(self) -> None:
        """Clear a latched failure and rerun the start-up test (an operator's decision)."""
        with self._lock:
            self._failed = None
            self._health = HealthTests()
            self._read_tested(STARTUP_BYTES)


__all__ = ["APT_WINDOW", "CpuRngKeySource", "HealthTests", "NAME", "cpu_rng_available", "native_reader",
           "proportion_cutoff", "repetition_cutoff"]
