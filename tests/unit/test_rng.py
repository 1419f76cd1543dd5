"""The hardware RNG: RDSEED/RDRAND through the native code, and health tests that trip on broken sources."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable

import pytest

from p3hw import dataplane
from p3hw.backends.rng import (
    APT_WINDOW,
    STARTUP_BYTES,
    CpuRngKeySource,
    HealthTests,
    cpu_rng_available,
    proportion_cutoff,
    repetition_cutoff,
)
from p3hw.reasons import P3Error

HAS_RDSEED = dataplane.cpu_features().get("rdseed", False)


def stream(chunks: list[bytes]) -> Callable[[int], bytes]:
    """A reader serving the given byte strings in turn."""
    pieces = iter(chunks)

    def read(length: int) -> bytes:
        data = next(pieces)
        assert len(data) >= length
        return data[:length]

    return read


def urandom_reader(length: int) -> bytes:
    return os.urandom(length)


def test_cutoffs_follow_sp800_90b_formulas() -> None:
    # §4.4.1: C = 1 + ceil(-log2(alpha) / H); alpha = 2^-40, H = 7 bits per byte.
    assert repetition_cutoff() == 1 + 6
    assert repetition_cutoff(entropy_bits=1.0, alpha_log2=-20) == 21
    # §4.4.2 with H = 1: the count is 1 + binomial(511, 1/2), whose 2^-20 tail starts near
    # 256 + 5.3 standard deviations (11.3) = 316; a better source gets a lower cutoff.
    assert 270 < proportion_cutoff(entropy_bits=1.0, alpha_log2=-20) < 330
    assert proportion_cutoff(entropy_bits=8.0) < proportion_cutoff(entropy_bits=7.0) < APT_WINDOW


def test_a_good_source_passes_a_megabyte() -> None:
    tests = HealthTests()
    for _ in range(256):
        tests.feed(os.urandom(4096))
    assert tests.bytes_tested == 1 << 20


def test_stuck_byte_trips_the_repetition_count_test() -> None:
    tests = HealthTests()
    with pytest.raises(P3Error) as caught:
        tests.feed(os.urandom(100) + b"\x42" * repetition_cutoff())
    assert caught.value.code == "P3-E604" and "repetition count" in caught.value.detail


def test_biased_source_without_long_runs_trips_the_adaptive_proportion_test() -> None:
    # One value in every 8 bytes, never twice in a row: invisible to the repetition test.
    rng = random.Random(5)
    biased = bytes(0x00 if i % 8 == 0 else rng.randrange(1, 256) for i in range(4 * APT_WINDOW))
    tests = HealthTests()
    with pytest.raises(P3Error) as caught:
        tests.feed(biased)
    assert caught.value.code == "P3-E604" and "adaptive proportion" in caught.value.detail


def test_repeated_word_trips_the_stuck_output_test() -> None:
    word = os.urandom(8)
    tests = HealthTests()
    tests.feed(os.urandom(64))
    with pytest.raises(P3Error) as caught:
        tests.feed(word + word)
    assert caught.value.code == "P3-E604" and "stuck output" in caught.value.detail


def test_stuck_instruction_fails_the_start_up_test() -> None:
    # Like a CPU whose RDRAND returns a constant with CF = 1.
    constant = bytes(range(8)) * (STARTUP_BYTES // 8)
    with pytest.raises(P3Error) as caught:
        CpuRngKeySource(read_seed=stream([constant]))
    assert caught.value.code == "P3-E604"


def test_a_failure_at_run_time_latches_until_reset() -> None:
    good = [os.urandom(STARTUP_BYTES), os.urandom(32)]
    source = CpuRngKeySource(read_seed=stream(good + [b"\x00" * 32] + [os.urandom(STARTUP_BYTES), os.urandom(16)]))
    assert len(source.random_bytes(32)) == 32
    with pytest.raises(P3Error) as first:
        source.random_bytes(32)
    assert first.value.code == "P3-E604"
    with pytest.raises(P3Error) as again:   # the next (good) bytes are not even read
        source.random_bytes(16)
    assert again.value.code == "P3-E604" and "stays off" in again.value.detail
    source.reset()
    assert len(source.random_bytes(16)) == 16


def test_rdseed_running_dry_hands_over_to_rdrand() -> None:
    calls = itertools.count()

    def dry_seed(length: int) -> bytes:
        if next(calls) > 0:
            raise P3Error("RNG_HEALTH", "rdseed: no data after 100 retries")
        return os.urandom(length)

    source = CpuRngKeySource(read_seed=dry_seed, read_rand=urandom_reader)
    assert len(source.random_bytes(32)) == 32
    assert source.seed_exhaustions == 1 and list(source.recent_sources)[-1] == 1


@pytest.mark.skipif(not HAS_RDSEED, reason="this CPU has no RDSEED")
def test_the_cpu_rng_serves_fresh_health_tested_bytes() -> None:
    assert cpu_rng_available()[0]
    source = CpuRngKeySource()
    keys = [source.random_bytes(32) for _ in range(64)]
    assert len(set(keys)) == 64
    assert source.bytes_served == 64 * 32


@pytest.mark.skipif(not HAS_RDSEED, reason="this CPU has no RDSEED")
@pytest.mark.parametrize("instruction", ["rdseed", "rdrand"])
def test_native_fill_returns_the_asked_length(instruction: str) -> None:
    for length in (1, 7, 8, 9, 100):
        data, retries = dataplane.rng_fill(instruction, length, 100)
        assert len(data) == length and retries >= 0
    assert dataplane.rng_fill(instruction, 64, 100)[0] != dataplane.rng_fill(instruction, 64, 100)[0]


def test_native_fill_refuses_a_bad_request() -> None:
    with pytest.raises(P3Error) as caught:
        dataplane.rng_fill("rdtsc", 16, 10)
    assert caught.value.code == "P3-E605"
