"""The foundation a user touches first: reason codes, the CLI's error handling, CI's skip rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from p3hw.reasons import BY_NAME, REASONS, P3Error

ROOT = Path(__file__).resolve().parents[2]
P3HW = [sys.executable, "-m", "p3hw.cli"]


def run_p3hw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*P3HW, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


def test_every_reason_code_is_well_formed_and_unique() -> None:
    assert len(REASONS) == len(BY_NAME)
    for code, r in REASONS.items():
        assert code.startswith("P3-E") and len(code) == 7 and code[4:].isdigit()
        assert r.meaning and r.name.isupper()


def test_p3error_message_starts_with_its_code() -> None:
    err = P3Error("DP_REPLAY", "seq 7 from 192.0.2.1", hint="nothing to do")
    assert err.code == "P3-E203"
    assert str(err).startswith("P3-E203 seq 7 from 192.0.2.1")


def test_reasons_command_lists_the_catalogue_as_json() -> None:
    out = run_p3hw("reasons", "--json")
    assert out.returncode == 0
    listed = json.loads(out.stdout)
    assert {row["code"] for row in listed} == set(REASONS)


def test_reasons_command_rejects_unknown_code_with_a_reason() -> None:
    out = run_p3hw("reasons", "P3-E000")
    assert out.returncode == 2
    assert "P3-E122" in out.stdout + out.stderr


def test_cli_without_command_prints_usage_and_exits_2() -> None:
    out = run_p3hw()
    assert out.returncode == 2
    assert "usage" in out.stderr.lower()


def test_doctor_reports_the_native_dataplane_as_json() -> None:
    out = run_p3hw("doctor", "--json")
    assert out.returncode == 0
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["native dataplane"]["ok"] is True


def test_a_skip_fails_when_p3hw_ci_is_set(tmp_path: Path) -> None:
    """CI must not pass with something silently untested."""
    (tmp_path / "test_skips.py").write_text(textwrap.dedent("""
        import pytest
        def test_needs_hardware():
            pytest.skip("no hardware here")
    """))
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    env = {**os.environ, "P3HW_CI": "1"}
    ci = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert ci.returncode == 1, ci.stdout
    assert "1 failed" in ci.stdout
    env["P3HW_CI"] = "0"
    local = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert local.returncode == 0, local.stdout
    assert "1 skipped" in local.stdout


@pytest.mark.parametrize("module", ["p3hw.backends", "p3hw.simulators"])
def test_mapped_packages_import_from_the_install(module: str) -> None:
    out = subprocess.run([sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
                         capture_output=True, text=True, cwd="/", timeout=60)
    assert out.returncode == 0, out.stderr
    folder = module.split(".")[1]
    assert Path(out.stdout.strip()).parent.name == folder
