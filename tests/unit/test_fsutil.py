"""The safe file writer: private, atomic, never following a planted link, failures reason-coded (issue 16)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from p3hw.fsutil import FailureLog, StatusFileWriter, write_private_file


def test_written_file_is_not_world_readable(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    old_umask = os.umask(0)  # a permissive umask must not widen it
    try:
        assert write_private_file(str(target), b"{}") is None
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_bytes() == b"{}"


def test_rewrite_replaces_the_file_and_leaves_no_temporary_behind(tmp_path: Path) -> None:
    target = tmp_path / "status.json"
    for text in (b"first", b"second"):
        assert write_private_file(str(target), text) is None
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_symlink_planted_at_the_old_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "status.json"
    (tmp_path / "status.json.tmp").symlink_to(victim)
    assert write_private_file(str(target), b"{}") is None
    assert victim.read_text() == "precious\n"
    assert target.read_bytes() == b"{}"


def test_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "status.json"
    target.symlink_to(victim)
    assert write_private_file(str(target), b"{}") is None
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_bytes() == b"{}"


def test_file_takes_the_group_asked_for(tmp_path: Path) -> None:
    group = os.getgroups()[-1] if os.geteuid() != 0 else 4242  # root may give any group
    target = tmp_path / "status.json"
    assert write_private_file(str(target), b"{}", group=group) is None
    assert target.stat().st_gid == group


def test_status_file_takes_the_group_of_the_admin_socket(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root gives a file to another group")
    socket_path = tmp_path / "admin.sock"
    socket_path.write_text("")
    os.chown(socket_path, -1, 4243)
    writer = StatusFileWriter(str(tmp_path / "status.json"), logging.getLogger("test"), group_from=str(socket_path))
    assert writer.write(b"{}")
    assert (tmp_path / "status.json").stat().st_gid == 4243


def test_write_failure_is_a_reason_code_not_an_exception(tmp_path: Path) -> None:
    error = write_private_file(str(tmp_path / "no-such-dir" / "status.json"), b"{}", what="status file")
    assert error is not None
    assert error.code == "P3-E902"
    assert "status file" in error.detail and "no-such-dir" in error.detail
    assert error.hint


def test_a_failing_write_is_logged_once_and_its_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("p3hw.test.fsutil")
    failures = FailureLog(logger, "status file /x")
    error = write_private_file("/proc/no-such/status.json", b"{}", what="status file")
    assert error is not None
    with caplog.at_level(logging.INFO, logger="p3hw.test.fsutil"):
        for _ in range(50):
            assert failures.record(error) is False
        assert failures.record(None) is True
        assert failures.record(None) is True
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if line.startswith("P3-E902 ")]) == 1
    assert lines[-1] == "status file /x written again after 50 failed attempt(s)"
    assert len(lines) == 2
