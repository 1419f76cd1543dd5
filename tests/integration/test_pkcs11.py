"""key_generation = 2 with a SoftHSM2 token: every key from the token, checked by the token's own view.

Each test gets a fresh token (simulators/softhsm.py). The audit check lists
the token's secret-key objects with a separate session and compares their
CKA_VALUE with the keys the protocol installed; CKA_LOCAL = true is the
token's statement that it generated the key itself (PKCS#11 v2.40 §4.4).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from p3hw.backends.pkcs11.keysource import Pkcs11KeySource, token_keys
from p3hw.backends.pkcs11.token import TokenPool
from p3hw.config import parse_config
from p3hw.crypto.keyarray import ArrayKind
from p3hw.crypto.keygen import PolicyKeySource, make_key_source
from p3hw.protocol.session import SessionConfig
from p3hw.reasons import P3Error
from p3hw.simulators import softhsm
from p3hw.simulators.harness import Harness

pytestmark = [pytest.mark.hsm,
              pytest.mark.skipif(not softhsm.available()[0], reason=softhsm.available()[1])]


@pytest.fixture
def token() -> Iterator[softhsm.Token]:
    made = softhsm.create_token()
    yield made
    try:
        made.delete()
    except P3Error:
        pass      # a test removed it already


@pytest.fixture
def pool(token: softhsm.Token) -> Iterator[TokenPool]:
    opened = TokenPool(token.module, token.label, token.pin)
    yield opened
    opened.close()


def hardware_config(token: softhsm.Token, directory: Path, fallback: str = "none", module: str | None = None) -> str:
    pin = token.write_pin_file(directory)
    return ("localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\nkey_generation = 2\n"
            f"pkcs11_module = {module or token.module}\npkcs11_token = {token.label}\npkcs11_pin_file = {pin}\n"
            f"key_fallback = {fallback}\nlocalend\n"
            "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")


def session_config(**overrides: object) -> SessionConfig:
    settings: dict[str, object] = {"rekey_wait_s": 0.5, "grace_s": 0.5, "retransmit_s": 0.5,
                                   "heartbeat_time_s": 15.0, "heartbeat_fail_s": 120.0}
    settings.update(overrides)
    return SessionConfig("primary", "aes-256-gcm", "10.255.0.1", "10.255.0.2", **settings)  # type: ignore[arg-type]


def test_every_installed_key_is_a_key_the_token_generated(token: softhsm.Token, tmp_path: Path) -> None:
    source = make_key_source(parse_config(hardware_config(token, tmp_path)))
    assert isinstance(source, PolicyKeySource) and source.name == "pkcs11"
    harness = Harness(seed=7, primary_config=session_config(), data_interval_s=0.01, key_source=source)
    harness.run_until(3.0)
    harness.quiesce()
    report = harness.report()
    assert len(harness.primary.rekeys_completed) >= 4
    assert report.data_delivered == report.data_sent and report.sessions_lost == []

    # The token's view, through a session of its own.
    auditor = TokenPool(token.module, token.label, token.pin)
    try:
        in_token = token_keys(auditor)
    finally:
        auditor.close()
    assert in_token and all(key.local for key in in_token)
    assert len(in_token) == source.hardware_requests and source.software_requests == 0
    values = [key.value for key in in_token]
    for side in (harness.primary, harness.secondary):
        installed = side.dataplane.installed
        assert len(installed) >= 5
        for sa in installed:   # initial keys and every rekey's keys
            assert any(sa.key in value and sa.salt in value for value in values), sa.p3_id


def test_key_arrays_are_generated_entry_by_entry_in_the_token(pool: TokenPool) -> None:
    source = Pkcs11KeySource(pool)
    config = session_config(rekey_wait_s=1.0, use_key_arrays=True, array_size=8, data_array_time_s=2.0,
                            control_array_time_s=2.0)
    harness = Harness(seed=3, primary_config=config, data_interval_s=0.01, key_source=source)
    harness.run_until(6.0)
    harness.quiesce()
    assert harness.report().sessions_lost == []
    values = {key.value for key in token_keys(pool, source.run_id)}
    for kind in (ArrayKind.DATA, ArrayKind.CONTROL):
        array = harness.primary.session.schedules[kind].array
        assert array is not None and len(array.entries) == 8
        assert set(array.entries) <= values
        received = harness.secondary.session.arrays.lookup(kind, array.generation)
        assert received is not None and received.entries == array.entries


def test_software_keys_are_not_in_the_token(pool: TokenPool) -> None:
    """The audit check can fail: a key the token did not make is not among its objects."""
    source = Pkcs11KeySource(pool)
    from_token = source.random_bytes(32)
    values = {key.value for key in token_keys(pool, source.run_id)}
    assert from_token in values
    assert os.urandom(32) not in values


def test_concurrent_callers_get_distinct_token_keys(pool: TokenPool) -> None:
    source = Pkcs11KeySource(pool)
    got: list[bytes] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(15):
                got.append(source.random_bytes(32))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(got) == 90 and len(set(got)) == 90
    assert {key.value for key in token_keys(pool, source.run_id)} == set(got)


def test_retention_keeps_only_the_last_keys_in_the_token(pool: TokenPool) -> None:
    source = Pkcs11KeySource(pool, retention=3)
    served = [source.random_bytes(16) for _ in range(7)]
    assert [key.value for key in sorted(token_keys(pool, source.run_id), key=lambda k: k.label)] == served[-3:]


def test_wrong_pin_is_e601(token: softhsm.Token) -> None:
    with pytest.raises(P3Error) as caught:
        TokenPool(token.module, token.label, "not-the-pin")
    assert caught.value.code == "P3-E601"


def test_wrong_pin_in_the_pin_file_stops_start_up_without_fallback(token: softhsm.Token, tmp_path: Path) -> None:
    config = parse_config(hardware_config(token, tmp_path))
    assert config.local.pkcs11_pin_file is not None
    config.local.pkcs11_pin_file.write_text("0000\n")
    with pytest.raises(P3Error) as caught:
        make_key_source(config)
    assert caught.value.code == "P3-E601"


def test_missing_token_label_is_e602(token: softhsm.Token) -> None:
    with pytest.raises(P3Error) as caught:
        TokenPool(token.module, "no-such-token", token.pin)
    assert caught.value.code == "P3-E602" and "no-such-token" in caught.value.detail


@pytest.mark.parametrize("what", ["missing", "text", "truncated", "not-pkcs11", "directory"])
def test_a_file_that_is_not_a_pkcs11_module_is_e600_before_loading(
        token: softhsm.Token, tmp_path: Path, what: str) -> None:
    path = tmp_path / "module.so"
    if what == "text":
        path.write_text("this is not a library\n")
    elif what == "truncated":
        path.write_bytes(Path(token.module).read_bytes()[:4096])
    elif what == "not-pkcs11":
        shutil.copy(os.path.realpath("/proc/self/exe"), path)  # an ELF, without C_GetFunctionList
    elif what == "directory":
        path.mkdir()
    with pytest.raises(P3Error) as caught:
        TokenPool(str(path), token.label, token.pin)
    assert caught.value.code == "P3-E600"
    assert str(path) in caught.value.detail


def test_removed_token_is_e602_without_fallback(token: softhsm.Token, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    source = make_key_source(parse_config(hardware_config(token, tmp_path)))
    source.random_bytes(32)
    token.delete()
    with caplog.at_level(logging.ERROR, logger="p3hw"), pytest.raises(P3Error) as caught:
        source.random_bytes(32)
    assert caught.value.code == "P3-E602"
    assert any(r.getMessage().startswith("P3-E602 hardware key source failed at run time") for r in caplog.records)


def test_removed_token_falls_back_to_software_keys_when_allowed(token: softhsm.Token, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    source = make_key_source(parse_config(hardware_config(token, tmp_path, fallback="software")))
    assert isinstance(source, PolicyKeySource)
    token.delete()
    with caplog.at_level(logging.WARNING, logger="p3hw"):
        key = source.random_bytes(32)
    assert len(key) == 32 and source.on_fallback and source.failures == ["P3-E602"]
    assert any(r.getMessage().startswith("P3-E602") and "key_fallback = software" in r.getMessage()
               for r in caplog.records)


def test_missing_module_falls_back_at_start_up_when_allowed(token: softhsm.Token, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    text = hardware_config(token, tmp_path, fallback="software", module=str(tmp_path / "gone.so"))
    with caplog.at_level(logging.WARNING, logger="p3hw"):
        source = make_key_source(parse_config(text))
    assert source.random_bytes(16) and source.name == "software (fallback)"
    assert any(r.getMessage().startswith("P3-E600") for r in caplog.records)
    with pytest.raises(P3Error) as caught:
        make_key_source(parse_config(hardware_config(token, tmp_path, module=str(tmp_path / "gone.so"))))
    assert caught.value.code == "P3-E600"


def test_pin_from_the_environment_when_no_pin_file(token: softhsm.Token, monkeypatch: pytest.MonkeyPatch) -> None:
    text = ("localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\nkey_generation = 2\n"
            f"pkcs11_module = {token.module}\npkcs11_token = {token.label}\nlocalend\n"
            "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")
    monkeypatch.delenv("P3HW_PKCS11_PIN", raising=False)
    with pytest.raises(P3Error) as caught:
        make_key_source(parse_config(text))
    assert caught.value.code == "P3-E601" and "P3HW_PKCS11_PIN" in caught.value.detail
    monkeypatch.setenv("P3HW_PKCS11_PIN", token.pin)
    source = make_key_source(parse_config(text))
    assert isinstance(source, PolicyKeySource) and source.name == "pkcs11"
    assert len(source.random_bytes(32)) == 32
    source.close()
