"""A wrong HSM PIN is tried once (issue 16): a real HSM locks the user PIN after a few failed logins.

Real SoftHSM2 tokens and a wrong PIN: the key source's retries, the crypto engine of the same daemon and
a daemon started by systemd do not log in again with a PIN the token refused; a new PIN in the file is.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p3hw.backends.pkcs11 import pinguard
from p3hw.backends.pkcs11.engine import start_engine
from p3hw.config import parse_config
from p3hw.crypto.keygen import PolicyKeySource, open_hardware_source
from p3hw.dataplane import Dataplane, EngineParams
from p3hw.reasons import P3Error
from p3hw.simulators import softhsm

pytestmark = pytest.mark.skipif(not softhsm.available()[0], reason=softhsm.available()[1])

REFUSED_BY_TOKEN = "the token refused the PIN"


@pytest.fixture(autouse=True)
def no_remembered_refusals() -> Iterator[None]:
    pinguard.forget_all()
    yield
    pinguard.forget_all()


@pytest.fixture(scope="module")
def token() -> softhsm.Token:
    return softhsm.create_token()


def write_pin(path: Path, pin: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(pin + "\n")
    return path


def primary_text(token: softhsm.Token, pin_file: Path, fallback: str, psk: str = "") -> str:
    return (f"localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\nkey_generation = 2\n"
            f"pkcs11_module = {token.module}\npkcs11_token = {token.label}\npkcs11_pin_file = {pin_file}\n"
            f"key_fallback = {fallback}\nlocalend\n"
            f"1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n{psk}")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_refused_pin_is_tried_once_and_the_retries_do_not_log_in(
        token: softhsm.Token, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pin_file = write_pin(tmp_path / "wrong.pin", "not-" + token.pin)
    local = parse_config(primary_text(token, pin_file, "software"), "primary.conf").local
    clock = Clock()
    with caplog.at_level(logging.DEBUG, logger="p3hw"):
        source = PolicyKeySource(lambda: open_hardware_source(local), allow_software=True, clock=clock,
                                 retry_s=60.0)
        for _ in range(5):                       # five retry periods on software keys
            clock.now += 61.0
            assert len(source.random_bytes(32)) == 32
    assert source.on_fallback and source.failures == ["P3-E601"] * 6
    refusals = [r.getMessage() for r in caplog.records if "P3-E601" in r.getMessage()]
    assert len(refusals) == 1, refusals          # one login, one line
    assert REFUSED_BY_TOKEN in refusals[0] and "no further login" in refusals[0]


def test_the_right_pin_written_to_the_file_is_used_at_the_next_retry(token: softhsm.Token, tmp_path: Path) -> None:
    pin_file = write_pin(tmp_path / "pin", "not-" + token.pin)
    local = parse_config(primary_text(token, pin_file, "software"), "primary.conf").local
    clock = Clock()
    source = PolicyKeySource(lambda: open_hardware_source(local), allow_software=True, clock=clock, retry_s=60.0)
    assert source.on_fallback
    write_pin(pin_file, token.pin)
    clock.now = 61.0
    source.random_bytes(16)
    assert not source.on_fallback and source.hardware_requests == 1
    source.close()


def test_the_crypto_engine_does_not_log_in_with_a_pin_the_key_source_saw_refused(
        token: softhsm.Token, tmp_path: Path) -> None:
    wrong = "not-" + token.pin
    local = parse_config(primary_text(token, write_pin(tmp_path / "pin", wrong), "none"), "primary.conf").local
    with pytest.raises(P3Error) as first:
        open_hardware_source(local)
    assert first.value.code == "P3-E601" and REFUSED_BY_TOKEN in first.value.detail
    params = EngineParams(module_path=token.module, token_label=token.label, pin=wrong)
    with Dataplane(max_peers=4, max_inbound_sas=8) as dp, pytest.raises(pinguard.PinRefused) as again:
        start_engine(dp, "pkcs11", params, "aesni")
    assert again.value.code == "P3-E601" and "no further login" in again.value.detail


def test_the_crypto_engine_remembers_its_own_refused_pin(token: softhsm.Token) -> None:
    params = EngineParams(module_path=token.module, token_label=token.label, pin="not-" + token.pin)
    with Dataplane(max_peers=4, max_inbound_sas=8) as dp:
        with pytest.raises(P3Error) as first:
            start_engine(dp, "pkcs11", params, "aesni")
        assert first.value.code == "P3-E601" and not isinstance(first.value, pinguard.PinRefused)
        assert "refused the PIN" in first.value.detail and "no further login" in first.value.hint
        with pytest.raises(pinguard.PinRefused):
            start_engine(dp, "pkcs11", params, "aesni")
        start_engine(dp, "pkcs11", EngineParams(module_path=token.module, token_label=token.label, pin=token.pin),
                     "aesni")                    # the right PIN is not held back
        assert dp.engine_status().engine == "pkcs11"


@pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")
def test_a_daemon_whose_pin_is_refused_exits_77_so_systemd_does_not_restart_it(
        token: softhsm.Token, tmp_path: Path) -> None:
    psk = tmp_path / "site.psk"
    write_pin(psk, secrets.token_hex(32))
    config = tmp_path / "primary.conf"
    config.write_text(primary_text(token, write_pin(tmp_path / "pin", "not-" + token.pin), "none",
                                   f"1/psk_file = {psk}\n"))
    done = subprocess.run([sys.executable, "-m", "p3hw.cli", "primary", "-c", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == pinguard.EXIT_PIN_REFUSED, done.stderr
    assert "P3-E601" in done.stderr and "no further login" in done.stderr and "Traceback" not in done.stderr
    unit = (Path(__file__).resolve().parents[2] / "packaging" / "p3hw-primary.service").read_text()
    assert f"RestartPreventExitStatus={pinguard.EXIT_PIN_REFUSED}" in unit.splitlines()


class _TokenThatRefusesItsPin:
    """Hardware that worked, then had its PIN refused (a token re-initialised under the daemon)."""

    name = "pkcs11"

    def random_bytes(self, length: int) -> bytes:
        raise pinguard.PinRefused("PKCS11_PIN", "token 't' refused this PIN before; no further login is attempted")


def test_with_key_fallback_none_a_remembered_refusal_never_turns_into_software_keys() -> None:
    opened = [_TokenThatRefusesItsPin()]

    def open_hardware() -> _TokenThatRefusesItsPin:
        if opened:
            return opened.pop()
        raise pinguard.PinRefused("PKCS11_PIN", "token 't' refused this PIN before; no further login is attempted")

    source = PolicyKeySource(open_hardware, allow_software=False, clock=Clock(), retry_s=60.0)
    for _ in range(3):
        with pytest.raises(P3Error) as caught:
            source.random_bytes(16)
        assert caught.value.code == "P3-E601"
    assert source.software_requests == 0
