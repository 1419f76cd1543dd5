"""The hardware key-generation keywords: pkcs11_module, pkcs11_token, pkcs11_pin_file, key_fallback, hardware_rng."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p3hw.config import ConfigError, ConfigErrors, parse_config

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def primary(local: str = "") -> str:
    return (f"localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\nkey_generation = 2\n{local}localend\n"
            "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")


def errors_of(text: str, base_dir: Path | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(text, filename="hw.conf", base_dir=base_dir)
    return caught.value.errors


def line_of(text: str, snippet: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), start=1) if snippet in line)


def pin_file(directory: Path, mode: int = 0o600) -> Path:
    path = directory / "token.pin"
    path.write_text("1234\n")
    os.chmod(path, mode)
    return path


def test_defaults_without_a_module_use_the_cpu_rng_and_no_fallback() -> None:
    local = parse_config(primary()).local
    assert (local.pkcs11_module, local.pkcs11_token, local.pkcs11_pin_file) == (None, None, None)
    assert local.key_fallback == "none"
    assert local.hardware_rng == "cpu"
    assert local.source("hardware_rng") == "default"


def test_a_configured_token_becomes_the_default_rng(tmp_path: Path) -> None:
    pin = pin_file(tmp_path)
    text = primary(f"pkcs11_module = {MODULE}\npkcs11_token = p3hw-test\npkcs11_pin_file = {pin}\n"
                   "key_fallback = Software\n")
    local = parse_config(text).local
    assert local.pkcs11_module == MODULE
    assert local.pkcs11_token == "p3hw-test"
    assert local.pkcs11_pin_file == pin
    assert local.key_fallback == "software"
    assert local.hardware_rng == "pkcs11"
    data = parse_config(text).to_dict()["local"]
    assert data["pkcs11_pin_file"] == {"value": str(pin), "source": "local", "line": line_of(text, "pin_file")}


def test_pin_file_open_to_others_is_refused_with_its_line(tmp_path: Path) -> None:
    pin = pin_file(tmp_path, 0o644)
    text = primary(f"pkcs11_module = {MODULE}\npkcs11_token = t\npkcs11_pin_file = {pin}\n")
    [error] = errors_of(text)
    assert (error.code, error.line, error.file) == ("P3-E117", line_of(text, "pkcs11_pin_file"), "hw.conf")
    assert "chmod 600" in error.hint


def test_missing_pin_file_is_refused(tmp_path: Path) -> None:
    text = primary(f"pkcs11_module = {MODULE}\npkcs11_token = t\npkcs11_pin_file = absent.pin\n")
    [error] = errors_of(text, base_dir=tmp_path)
    assert error.code == "P3-E117" and str(tmp_path / "absent.pin") in error.detail


def test_module_without_token_label_is_refused() -> None:
    text = primary(f"pkcs11_module = {MODULE}\n")
    [error] = errors_of(text)
    assert (error.code, error.line) == ("P3-E116", line_of(text, "pkcs11_module"))
    assert "pkcs11_token" in error.hint


def test_token_without_module_is_refused() -> None:
    text = primary("pkcs11_token = t\n")
    [error] = errors_of(text)
    assert (error.code, error.line) == ("P3-E116", line_of(text, "pkcs11_token"))


def test_pkcs11_rng_without_module_is_refused() -> None:
    text = primary("hardware_rng = pkcs11\n")
    [error] = errors_of(text)
    assert (error.code, error.line) == ("P3-E116", line_of(text, "hardware_rng"))


@pytest.mark.parametrize("line", ["pkcs11_module = libsofthsm2.so", "key_fallback = maybe", "hardware_rng = tpm",
                                  "pkcs11_token = " + "x" * 33])
def test_bad_hardware_values_are_out_of_range(line: str) -> None:
    text = primary(line + "\n")
    found = errors_of(text)
    assert any(e.code == "P3-E104" and e.line == line_of(text, line.split()[0]) for e in found), found


def test_hardware_keywords_belong_to_the_primary() -> None:
    text = ("localstart\nrole = secondary\nip = 4\naddress = 203.0.113.10\nkey_fallback = software\nlocalend\n"
            "1/address = 198.51.100.1\n1/subnet1 = 10.0.0.0\n1/mask1 = 255.0.0.0\n")
    [error] = errors_of(text)
    assert (error.code, error.line) == ("P3-E106", 5)
