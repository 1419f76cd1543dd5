"""Reading a configuration file as editors write it, and checks that name the real reason (issue 16)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from p3hw.config import ConfigErrors, config_error_text, load_config, parse_config

KEY_HEX = "5eC1a9f0b2c4d6e8f0a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5"
KEY_BASE64 = "q3Zt8Vb0Yx2Lm4Np6Rs8Tu0Wx2Yz4Ab6Cd8Ef0Gh2I="


def config_text(local: str = "", remote: str = "") -> str:
    return ("localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\n" + local + "localend\n"
            "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n" + remote)


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p3hw.cli", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)


def errors_of(path: Path) -> ConfigErrors:
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    return caught.value


def test_a_byte_order_mark_before_the_first_line_is_not_part_of_it(tmp_path: Path) -> None:
    path = tmp_path / "bom.conf"
    path.write_bytes(b"\xef\xbb\xbf" + config_text().encode())
    config = load_config(path)
    assert (config.role, str(config.local.address)) == ("primary", "198.51.100.1")
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert "\\ufeff" not in result.stdout + result.stderr


def test_crlf_line_endings_read_like_lf(tmp_path: Path) -> None:
    psk = tmp_path / "k.psk"
    psk.write_text("ab" * 32 + "\r\n")
    psk.chmod(0o600)
    lf = config_text(local="interface = p3-crlf\n", remote="1/psk_file = k.psk\n")
    path = tmp_path / "crlf.conf"
    path.write_bytes(lf.replace("\n", "\r\n").encode())
    config = load_config(path)
    assert config.local.interface == "p3-crlf"
    assert config.remotes[0].psk_file == psk
    assert config.to_dict() == {**parse_config(lf, filename=str(path), base_dir=tmp_path).to_dict()}


def test_cr_only_line_endings_are_refused_on_the_line_that_has_one(tmp_path: Path) -> None:
    path = tmp_path / "cr.conf"
    path.write_bytes(config_text().replace("\n", "\r").encode())
    errors = errors_of(path)
    assert [(e.line, e.code) for e in errors] == [(1, "P3-E101")]
    assert "CR-only line endings" in errors.message()
    path.write_bytes(config_text(local="interface = p3-0\rjunk\n").encode())
    assert [(e.line, e.code) for e in errors_of(path)] == [(5, "P3-E101")]


def test_a_key_written_where_the_psk_path_belongs_is_not_repeated(tmp_path: Path) -> None:
    for key in (KEY_HEX, KEY_BASE64):
        path = tmp_path / "key.conf"
        path.write_text(config_text(remote=f"1/psk_file = {key}\n"))
        errors = errors_of(path)
        assert [e.code for e in errors] == ["P3-E117"]
        assert "does not exist" in errors.message()
        result = check(path)
        assert result.returncode == 2
        for shown in (errors.message(), result.stderr, result.stdout):
            assert key not in shown and key[:12] not in shown


def test_a_pin_written_where_the_pin_file_belongs_is_not_repeated(tmp_path: Path) -> None:
    path = tmp_path / "pin.conf"
    path.write_text(config_text(local="pkcs11_module = /usr/lib/softhsm/libsofthsm2.so\npkcs11_token = p3\n"
                                      "pkcs11_pin_file = 731942\n"))
    errors = errors_of(path)
    assert [e.code for e in errors] == ["P3-E117"]
    assert "731942" not in errors.message() and "does not exist" in errors.message()


def test_a_missing_psk_file_that_is_a_path_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing.conf"
    path.write_text(config_text(remote="1/psk_file = keys/branch1.key\n"))
    assert "keys/branch1.key" in errors_of(path).message()


def test_admin_socket_naming_an_existing_file_is_a_configuration_error(tmp_path: Path) -> None:
    regular = tmp_path / "not-a-socket"
    regular.write_text("keep me\n")
    path = tmp_path / "a.conf"
    path.write_text(config_text(local=f"admin_socket = {regular}\n"))
    errors = errors_of(path)
    assert [(e.line, e.code) for e in errors] == [(5, "P3-E104")]
    assert "is a file, not a socket" in errors.message()
    result = check(path)
    assert result.returncode == 2 and f"{path}:5: P3-E104" in result.stderr
    assert "P3-E999" not in result.stderr and "Traceback" not in result.stderr
    assert regular.read_text() == "keep me\n"


def test_admin_socket_under_a_file_is_a_configuration_error(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("")
    path = tmp_path / "a.conf"
    path.write_text(config_text(local=f"admin_socket = {regular}/run/admin.sock\n"))
    errors = errors_of(path)
    assert [(e.line, e.code) for e in errors] == [(5, "P3-E104")]
    assert f"{regular} is a file" in errors.message()


def test_admin_socket_that_is_a_stale_socket_or_in_a_new_directory_is_accepted(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    for target in (stale, tmp_path / "new" / "dir" / "admin.sock"):
        path = tmp_path / "a.conf"
        path.write_text(config_text(local=f"admin_socket = {target}\n"))
        assert load_config(path).local.admin_socket == str(target)


def test_error_text_for_a_log_line_carries_each_code_once(tmp_path: Path) -> None:
    path = tmp_path / "two.conf"
    path.write_text(config_text(local="rekey_wait = soon\nbogus = 1\n"))
    errors = errors_of(path)
    text = config_error_text(errors)
    first, second = errors.errors
    line = f"{first.code} {text}"
    assert line.count(first.code) == 1 and line.count(second.code) == 1
    assert f"{path}:{first.line}:" in text and f"{path}:{second.line}:" in text
