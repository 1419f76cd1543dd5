"""make_key_source: which key source a configuration gets, and the key_fallback policy on hardware failure."""

from __future__ import annotations

import logging

import pytest

from p3hw import dataplane
from p3hw.config import parse_config
from p3hw.crypto.keygen import PolicyKeySource, key_source_status, make_key_source
from p3hw.crypto.keysource import SoftwareKeySource
from p3hw.reasons import P3Error


def config_text(local: str) -> str:
    return (f"localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\n{local}localend\n"
            "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")


class FlakyHardware:
    """A hardware source that can be unplugged and plugged back."""

    name = "flaky-hw"

    def __init__(self) -> None:
        self.working = True
        self.served = 0

    def random_bytes(self, length: int) -> bytes:
        if not self.working:
            raise P3Error("PKCS11_TOKEN", "token unplugged")
        self.served += 1
        return b"\xaa" * length


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_key_generation_1_is_the_software_source() -> None:
    assert isinstance(make_key_source(parse_config(config_text("key_generation = 1\n"))), SoftwareKeySource)


@pytest.mark.skipif(not dataplane.cpu_features().get("rdseed"), reason="this CPU has no RDSEED")
def test_key_generation_2_without_a_module_uses_the_cpu_rng() -> None:
    source = make_key_source(parse_config(config_text("key_generation = 2\n")))
    assert source.name == "cpu-rng"
    assert len({source.random_bytes(32) for _ in range(8)}) == 8


def test_hardware_failure_without_fallback_raises_and_logs_its_code(caplog: pytest.LogCaptureFixture) -> None:
    hardware = FlakyHardware()
    source = PolicyKeySource(lambda: hardware, allow_software=False)
    assert source.random_bytes(16) == b"\xaa" * 16
    hardware.working = False
    with caplog.at_level(logging.ERROR, logger="p3hw"), pytest.raises(P3Error) as caught:
        source.random_bytes(16)
    assert caught.value.code == "P3-E602"
    assert [r.getMessage()[:7] for r in caplog.records] == ["P3-E602"]
    assert source.software_requests == 0


def test_hardware_failure_with_fallback_serves_software_then_returns_to_hardware(
        caplog: pytest.LogCaptureFixture) -> None:
    hardware = FlakyHardware()
    clock = Clock()
    source = PolicyKeySource(lambda: hardware, allow_software=True, clock=clock, retry_s=60.0)
    hardware.working = False
    with caplog.at_level(logging.INFO, logger="p3hw"):
        fallback_key = source.random_bytes(16)
        assert fallback_key != b"\xaa" * 16 and source.on_fallback and source.name == "software (fallback)"
        hardware.working = True
        clock.now = 30.0
        assert source.random_bytes(16) != b"\xaa" * 16       # not retried before retry_s
        clock.now = 61.0
        assert source.random_bytes(16) == b"\xaa" * 16       # the hardware is back
    assert source.failures == ["P3-E602"]
    assert (source.hardware_requests, source.software_requests) == (1, 2)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("P3-E602 hardware key source failed at run time") and "key_fallback = software" \
        in messages[0]
    assert "is back" in messages[-1]


def test_a_bad_request_is_not_a_hardware_failure() -> None:
    source = PolicyKeySource(lambda: FlakyHardware(), allow_software=True)
    source.hardware = SoftwareKeySource()
    with pytest.raises(P3Error) as caught:
        source.random_bytes(0)
    assert caught.value.code == "P3-E407" and not source.on_fallback


def test_unopenable_hardware_at_start_up_follows_the_policy(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> FlakyHardware:
        raise P3Error("RNG_UNAVAILABLE", "no RDSEED here")

    with pytest.raises(P3Error) as caught:
        PolicyKeySource(broken, allow_software=False)
    assert caught.value.code == "P3-E605"
    with caplog.at_level(logging.WARNING, logger="p3hw"):
        source = PolicyKeySource(broken, allow_software=True)
    assert len(source.random_bytes(32)) == 32 and source.failures == ["P3-E605"]
    assert caplog.records[0].getMessage().startswith("P3-E605 hardware key source failed to open")


def test_status_names_the_key_source_in_use_and_a_token_fallback() -> None:
    assert key_source_status(SoftwareKeySource()) == "software"
    hardware = FlakyHardware()
    clock = Clock()
    source = PolicyKeySource(lambda: hardware, allow_software=True, clock=clock, retry_s=60.0)
    assert key_source_status(source) == "hardware (flaky-hw)"
    hardware.working = False
    source.random_bytes(16)
    # key_generation = 2 is still configured, but software keys are served: status says so.
    assert key_source_status(source) == "software (fallback)"
    hardware.working = True
    clock.now = 61.0
    source.random_bytes(16)
    assert key_source_status(source) == "hardware (flaky-hw)"
