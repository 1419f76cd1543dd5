"""The version has one source, git describe (docs/install.md), and travels in CONFIG (p3hw.peer_version)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import p3hw
from p3hw.peer_version import primary_settings, secondary_answer, version_in


def _git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_version_of_a_checkout_grows_with_each_commit_and_follows_tags(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    (tmp_path / "f").write_text("1")
    _git(tmp_path, "add", "f")
    _git(tmp_path, "commit", "-qm", "one")
    first = _git(tmp_path, "rev-parse", "--short=10", "HEAD")
    assert p3hw.version_from_git(str(tmp_path)) == f"0.0.0+1.g{first}"
    _git(tmp_path, "tag", "v1.2.0")
    assert p3hw.version_from_git(str(tmp_path)) == "1.2.0"
    (tmp_path / "f").write_text("2")
    assert p3hw.version_from_git(str(tmp_path)) == "1.2.0+dirty"
    _git(tmp_path, "commit", "-qam", "two")
    version = p3hw.version_from_git(str(tmp_path))
    assert version is not None and version.startswith("1.2.0+1.g")
    newer = subprocess.run(["dpkg", "--compare-versions", version, "gt", "1.2.0"])
    assert newer.returncode == 0


def test_a_directory_that_is_no_checkout_has_no_git_version(tmp_path: Path) -> None:
    assert p3hw.version_from_git(str(tmp_path)) is None


def test_p3hw_version_flag_prints_the_checkout_version() -> None:
    done = subprocess.run([sys.executable, "-m", "p3hw.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"p3hw {p3hw.version_from_git()}"


def test_checkout_finds_its_native_libraries_in_build() -> None:
    tree = Path(p3hw.__file__).resolve().parent.parent
    assert p3hw.native_library("libp3dpdk.so") == str(tree / "build" / "libp3dpdk.so")


def test_primary_config_carries_its_version_and_the_secondary_answers_with_its_own() -> None:
    settings = primary_settings(1, 3)
    assert json.loads(settings)["heartbeat_time_s"] == 1
    assert version_in(settings) == p3hw.__version__
    answer = secondary_answer(settings)
    assert answer is not None and version_in(answer) == p3hw.__version__


def test_config_from_an_older_primary_has_no_version_and_gets_no_answer() -> None:
    old = json.dumps({"heartbeat_time_s": 15, "heartbeat_fail_s": 120})
    assert version_in(old) is None
    assert secondary_answer(old) is None
    assert version_in("not json") is None
