"""``p3hw setup`` (spec §3): driven through its prompts and through its flags."""

from __future__ import annotations

import argparse
import ipaddress
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from p3hw.commands import setup
from p3hw.config import load_config
from p3hw.reasons import P3Error

SCRIPT = Path(sys.executable).parent / "p3hw"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "p3hw.cli"]


def run_setup(args: list[str], answers: list[str] | None = None, cwd: Path | None = None
              ) -> subprocess.CompletedProcess[str]:
    stdin = "".join(a + "\n" for a in answers) if answers is not None else ""
    return subprocess.run([*COMMAND, "setup", *args], input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_primary_through_prompts_reasks_bad_answers_and_writes_a_valid_config(tmp_path: Path) -> None:
    output = tmp_path / "etc" / "p3.conf"
    answers = [
        "primary",
        str(output),
        "4",
        "198.51.100.300",          # bad: not an address -> asked again
        "198.51.100.1",
        "",                        # port: default
        "203.0.113.10",
        "10.1.0.1/16",             # bad: host bits set -> asked again
        "10.1.0.0/16",
        "10.2.0.0/255.255.255.0",
        "",                        # no more subnets for remote 1
        "203.0.113.20",
        "10.1.0.0/255.255.0.0",    # bad: already routed to remote 1
        "10.1.77.0/24",            # nested in remote 1's prefix: fine
        "",
        "",                        # no more remotes
        "aes256",
        "",                        # psk for remote 1: default path
        "none",                    # no psk file for remote 2
    ]
    done = run_setup([], answers)
    assert done.returncode == 0, done.stderr
    rejected = [line for line in done.stderr.splitlines() if "P3-E120" in line]
    assert len(rejected) == 3
    assert "P3-E107" in rejected[0] and "P3-E109" in rejected[1] and "P3-E111" in rejected[2]

    config = load_config(output)
    assert config.role == "primary"
    assert config.local.address == ipaddress.ip_address("198.51.100.1")
    assert [[str(n) for n in r.subnets] for r in config.remotes] == [["10.1.0.0/16", "10.2.0.0/24"],
                                                                     ["10.1.77.0/24"]]
    assert {r.key_type for r in config.remotes} == {"AES256"}
    psk = config.remote(1).psk_file
    assert psk == output.parent / "psk" / "remote-1.key"
    assert stat.S_IMODE(psk.stat().st_mode) == 0o600
    assert len(psk.read_text().strip()) == 2 * setup.PSK_BYTES
    assert config.remote(2).psk_file is None


def test_secondary_through_prompts(tmp_path: Path) -> None:
    output = tmp_path / "s.conf"
    answers = ["secondary", str(output), "4", "203.0.113.10", "198.51.100.1", "10.0.0.0/8", "198.51.100.1", "",
               "99999",                # bad port -> asked again
               "6000", "", str(tmp_path / "primary.key")]
    done = run_setup([], answers)
    assert done.returncode == 0, done.stderr
    assert "P3-E104" in done.stderr  # the port answer was refused with the parser's reason
    config = load_config(output)
    assert config.role == "secondary"
    primary = config.remote(1)
    assert primary.address == ipaddress.ip_address("198.51.100.1") and primary.port == 6000
    assert [str(n) for n in primary.subnets] == ["10.0.0.0/8", "198.51.100.1/32"]
    assert primary.psk_file == tmp_path / "primary.key"


def test_end_of_input_while_prompting_is_a_reason_coded_failure(tmp_path: Path) -> None:
    done = run_setup([], ["primary", str(tmp_path / "p.conf")])
    assert done.returncode == 2
    assert "P3-E120" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "p.conf").exists()


def test_non_interactive_primary_from_flags(tmp_path: Path) -> None:
    output = tmp_path / "p.conf"
    done = run_setup(["--non-interactive", "--role", "primary", "--ip", "4", "--address", "198.51.100.1",
                      "--remote", "203.0.113.10,10.1.0.0/16,10.3.0.0/255.255.0.0",
                      "--remote", "203.0.113.20,203.0.113.20", "--key-type", "AES128",
                      "--psk-file", "keys/one.key", "--psk-file", "none", "--output", str(output)])
    assert done.returncode == 0, done.stderr
    config = load_config(output)
    assert [r.id for r in config.remotes] == [1, 2]
    assert [str(n) for n in config.remote(2).subnets] == ["203.0.113.20/32"]  # a standalone P3 host
    assert config.remote(1).psk_file == tmp_path / "keys" / "one.key"


def test_non_interactive_ipv6_secondary_from_flags(tmp_path: Path) -> None:
    output = tmp_path / "s6.conf"
    done = run_setup(["--non-interactive", "--role", "secondary", "--ip", "6", "--address", "2001:db8::10",
                      "--primary", "2001:db8::1,2001:db8:100::/48", "--primary-port", "7000",
                      "--psk-file", "none", "-o", str(output)])
    assert done.returncode == 0, done.stderr
    config = load_config(output)
    assert config.local.ip == 6 and config.remote(1).port == 7000


def test_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    output = tmp_path / "p.conf"
    output.write_text("precious\n")
    flags = ["--non-interactive", "--role", "primary", "--address", "198.51.100.1",
             "--remote", "203.0.113.10,10.1.0.0/16", "--psk-file", "none", "-o", str(output)]
    done = run_setup(flags)
    assert done.returncode == 2 and "P3-E120" in done.stderr and "--force" in done.stderr
    assert output.read_text() == "precious\n"
    done = run_setup([*flags, "--force"])
    assert done.returncode == 0, done.stderr
    assert load_config(output).remote(1).address == ipaddress.ip_address("203.0.113.10")


@pytest.mark.parametrize(("flags", "code"), [
    (["--key-type", "DES"], "P3-E120"),
    (["--address", "2001:db8::1"], "P3-E107"),
    (["--remote", "203.0.113.10"], "P3-E120"),
    (["--remote", "203.0.113.10,10.0.0.0/255.0.255.0"], "P3-E108"),
    (["--port", "0"], "P3-E104"),
    (["--address", "198.51.100.1\nkey_generation 2"], "control character"),  # no extra lines smuggled in
])
def test_bad_flag_fails_with_its_reason(tmp_path: Path, flags: list[str], code: str) -> None:
    base = {"--role": "primary", "--ip": "4", "--address": "198.51.100.1", "--remote": "203.0.113.10,10.0.0.0/8",
            "--psk-file": "none", "-o": str(tmp_path / "p.conf")}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        base[flag] = value
    argv = ["--non-interactive", *[part for pair in base.items() for part in pair]]
    done = run_setup(argv)
    assert done.returncode == 2
    assert code in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "p.conf").exists()


def test_missing_answer_in_non_interactive_mode(tmp_path: Path) -> None:
    done = run_setup(["--non-interactive", "--role", "primary", "-o", str(tmp_path / "p.conf")])
    assert done.returncode == 2
    assert "P3-E120" in done.stderr and "address" in done.stderr


def test_psk_file_open_to_others_is_refused_and_asked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    loose = tmp_path / "loose.key"
    loose.write_text("secret\n")
    os.chmod(loose, 0o644)
    answers = iter([str(loose), "none"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    parser = argparse.ArgumentParser()
    setup.add_arguments(parser)
    args = parser.parse_args(["--role", "primary", "--ip", "4", "--address", "198.51.100.1", "--port", "5653",
                              "--remote",
                              "203.0.113.10,10.0.0.0/8", "--key-type", "AES128", "-o", str(tmp_path / "p.conf")])
    assert setup.run(args) == 0
    err = capsys.readouterr().err
    assert "P3-E120" in err and "P3-E117" in err and "chmod 600" in err
    assert load_config(tmp_path / "p.conf").remote(1).psk_file is None


def test_unwritable_output_is_a_reason_coded_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    parser = argparse.ArgumentParser()
    setup.add_arguments(parser)
    args = parser.parse_args(["--non-interactive", "--role", "primary", "--address", "198.51.100.1", "--remote",
                              "203.0.113.10,10.0.0.0/8", "--psk-file", "none", "-o", str(blocker / "p.conf")])
    with pytest.raises(P3Error) as caught:
        setup.run(args)
    assert caught.value.code in ("P3-E120", "P3-E121")
