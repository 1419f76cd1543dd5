"""``p3hw config check``: exit codes and output, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(str(p) for p in (REPO / "examples").glob("*.conf"))
SCRIPT = Path(sys.executable).parent / "p3hw"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "p3hw.cli"]


def p3hw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={k: v for k, v in os.environ.items() if k != "P3HW_DEBUG"})


def assert_no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout


def test_shipped_examples_pass_and_show_every_value_with_its_source() -> None:
    done = p3hw("config", "check", *EXAMPLES)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "examples/primary.conf: OK" in out.replace(str(REPO) + "/", "")
    # examples/primary.conf: remote 1 overrides rekey_wait, remote 2 inherits it from the local section.
    assert any(line.split()[:2] == ["1/rekey_wait", "900"] and "remote (line" in line for line in out.splitlines())
    assert any(line.split()[:2] == ["2/rekey_wait", "3600"] and "local (line" in line for line in out.splitlines())
    assert any(line.split()[:3] == ["1/cipher", "gcm", "default"] for line in out.splitlines())


def test_json_output_is_the_effective_configuration() -> None:
    done = p3hw("config", "check", "--json", str(REPO / "examples" / "primary.conf"))
    assert done.returncode == 0
    data = json.loads(done.stdout)
    assert data["ok"] is True
    remote2 = data["config"]["remotes"][1]
    assert remote2["id"] == 2
    assert remote2["key_array"]["value"] == 64 and remote2["key_array"]["source"] == "remote"


def test_bad_file_exits_2_with_every_error_as_file_line_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("localstart\nrole primary\nip 4\naddress 198.51.100.1\nrekey_wait 0\nheartbeat_tme 4\n"
                   "localend\n1/address 203.0.113.1\n1/subnet1 10.0.0.1\n1/mask1 255.0.0.0\n")
    done = p3hw("config", "check", str(bad))
    assert done.returncode == 2
    assert_no_traceback(done)
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{bad}:5: P3-E104 rekey_wait: 0 is out of range (hint: use a number from 1 to 31536000)",
        f"{bad}:6: P3-E102 unknown keyword 'heartbeat_tme' (hint: did you mean heartbeat_time?)",
        f"{bad}:9: P3-E109 1/subnet1 10.0.0.1 has bits set outside its mask /8 (hint: did you mean 10.0.0.0?)",
    ]


def test_role_flag_checks_the_file_as_that_role() -> None:
    done = p3hw("config", "check", "--role", "secondary", str(REPO / "examples" / "primary.conf"))
    assert done.returncode == 2
    assert "P3-E106" in done.stderr


def test_one_bad_file_among_good_ones_fails_the_run(tmp_path: Path) -> None:
    bad = tmp_path / "empty.conf"
    bad.write_text("")
    done = p3hw("config", "check", EXAMPLES[0], str(bad))
    assert done.returncode == 2
    assert "OK" in done.stdout
    assert f"{bad}:1: P3-E114" in done.stderr


@pytest.mark.parametrize("kind", ["directory", "binary", "huge", "missing", "latin1", "fifo"])
def test_any_file_gives_a_reason_code_never_a_traceback(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.conf"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(Path(sys.executable).resolve().read_bytes()[:4096])
    elif kind == "huge":
        with open(path, "wb") as handle:
            handle.truncate(64 * 1024 * 1024)
    elif kind == "latin1":
        path.write_bytes(b"# \xe9\xe9\n")
    elif kind == "fifo":
        os.mkfifo(path)
    done = p3hw("config", "check", str(path))
    assert done.returncode == 2
    assert_no_traceback(done)
    assert done.stderr.startswith(f"{path}:")
    assert " P3-E1" in done.stderr
