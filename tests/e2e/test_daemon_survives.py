"""The daemons live through what should only be logged (issue 16).

A primary and one secondary in namespaces (simulators/deployment.py). Their
``--status-file``s live on a small tmpfs the test mounts, their admin stores
on another; the test fills them and makes them read-only, and checks that the
tunnel keeps its session and carries traffic, that each daemon logs the reason
code once (not once per write), and that the status is written again once
the file system is usable. A secondary whose pre-shared key file becomes
mode 0644 at run time logs P3-E117 and retries; a refused reload is logged
with each problem's own code.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from e2e_support import host, wait_for

from p3hw.admin import configfile
from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]

STATUS_FS_BYTES = 1024 * 1024
STORE_FS_BYTES = 16 * 1024 * 1024
#: Long enough for a few dozen status writes (two a second) to fail.
FAILING_S = 4.0


def mount_tmpfs(where: Path, size_bytes: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(where)], check=True)


def unmount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(where)], check=True)


@contextmanager
def filled(where: Path) -> Iterator[None]:
    """Every block of the file system taken by one file, given back after."""
    filler = where / "filler"
    try:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (64 * 1024, 4096, 1):  # then the last partial blocks
                while True:
                    try:
                        os.write(fd, bytes(size))
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        yield
    finally:
        filler.unlink(missing_ok=True)


def count(dep: Deployment, index: int, text: str) -> int:
    return dep.daemons[index].log().count(text)


def pings_through_the_tunnel(topo: Topology) -> int:
    primary, secondary = topo.sites
    there = topo.ping(primary.lan_ns, host(secondary, 4), count=5, interval_s=0.1).received
    back = topo.ping(secondary.lan_ns, host(primary, 4), count=5, interval_s=0.1).received
    return there + back


def both_running(dep: Deployment) -> bool:
    return all(d.running for d in dep.daemons.values())


def one_session_each(dep: Deployment) -> list[tuple[str, int, list[str]]]:
    return [(p["state"], p["sessions_started"], p["losses"])
            for d in dep.daemons.values() for p in (d.status() or {"peers": []})["peers"]]


@pytest.fixture(scope="module")
def two_sites(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Topology, Deployment, Path, Path]]:
    workdir = tmp_path_factory.mktemp("survives")
    status_fs, store_fs = workdir / "status-fs", workdir / "store-fs"
    mount_tmpfs(status_fs, STATUS_FS_BYTES)
    try:
        mount_tmpfs(store_fs, STORE_FS_BYTES)
        try:
            with Topology.two_site() as topo:
                dep = Deployment(topo, workdir, Options())
                dep.write_configs()
                for index, daemon in dep.daemons.items():
                    daemon.status_path = status_fs / f"site{index}.status.json"
                    # The name the daemon once wrote through, planted as a link to a file it must not touch.
                    victim = workdir / f"victim{index}"
                    victim.write_text("precious\n")
                    Path(f"{daemon.status_path}.tmp").symlink_to(victim)
                    daemon.config_path.write_text(configfile.set_value(
                        daemon.config_path.read_text(), "admin_store", str(store_fs / f"site{index}-admin.db")))
                try:
                    dep.start()
                    dep.wait_established(30)
                    yield topo, dep, status_fs, store_fs
                finally:
                    dep.stop()
        finally:
            unmount(store_fs)
    finally:
        unmount(status_fs)


def p3ctl(dep: Deployment, index: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p3hw.admin.p3ctl", "--socket", str(dep.admin_socket(
        dep.daemons[index].site)), *argv], capture_output=True, text=True, timeout=60)


def test_status_file_is_private_and_a_planted_link_is_not_followed(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    _topo, dep, _status_fs, _store_fs = two_sites
    for index, daemon in dep.daemons.items():
        info = daemon.status_path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o640, oct(info.st_mode)
        assert (dep.workdir / f"victim{index}").read_text() == "precious\n"


def test_full_file_systems_are_logged_once_and_the_tunnel_keeps_running(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    topo, dep, status_fs, store_fs = two_sites
    before = {i: count(dep, i, "P3-E902 ") for i in dep.daemons}
    again = {i: count(dep, i, f"{d.status_path} written again") for i, d in dep.daemons.items()}
    with filled(status_fs), filled(store_fs):
        wait_for(dep, lambda: all(count(dep, i, "P3-E902 ") > before[i] for i in dep.daemons), 10,
                 "both daemons to log that the status file cannot be written")
        deadline = time.monotonic() + FAILING_S
        while time.monotonic() < deadline:
            assert pings_through_the_tunnel(topo) == 10
            for index in dep.daemons:  # each request writes an audit record to the full store
                assert p3ctl(dep, index, "status").returncode == 0
        assert both_running(dep)
        for index in dep.daemons:
            log = dep.daemons[index].log()
            assert count(dep, index, "P3-E902 ") == before[index] + 1, log[-3000:]
            assert "No space left on device" in log
            assert log.count("P3-E707 ") <= 1, log[-3000:]
            assert "P3-E999" not in log
    wait_for(dep, lambda: all(count(dep, i, f"{d.status_path} written again") > again[i]
                              for i, d in dep.daemons.items()), 10,
             "the status files to be written again")
    assert both_running(dep)
    assert one_session_each(dep) == [("established", 1, []), ("established", 1, [])]


def test_read_only_status_file_system_is_logged_once_and_the_tunnel_keeps_running(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    topo, dep, status_fs, _store_fs = two_sites
    before = {i: count(dep, i, "Read-only file system") for i in dep.daemons}
    again = {i: count(dep, i, f"{d.status_path} written again") for i, d in dep.daemons.items()}
    remount(status_fs, "ro")
    try:
        wait_for(dep, lambda: all(count(dep, i, "Read-only file system") > before[i] for i in dep.daemons), 10,
                 "both daemons to log that the status file system is read-only")
        deadline = time.monotonic() + FAILING_S
        while time.monotonic() < deadline:
            assert pings_through_the_tunnel(topo) == 10
        for index in dep.daemons:
            assert count(dep, index, "Read-only file system") == before[index] + 1, dep.daemons[index].log()[-3000:]
        assert both_running(dep)
    finally:
        remount(status_fs, "rw")
    wait_for(dep, lambda: all(count(dep, i, f"{d.status_path} written again") > again[i]
                              for i, d in dep.daemons.items()), 10,
             "the status files to be written again")
    assert one_session_each(dep) == [("established", 1, []), ("established", 1, [])]


def test_primary_restarted_on_full_file_systems_serves_the_tunnel_again(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    topo, dep, status_fs, store_fs = two_sites
    sessions_before = count(dep, 1, " established: ")
    with filled(status_fs), filled(store_fs):
        assert dep.stop_daemon(0) == 0
        dep.start_daemon(0)
        wait_for(dep, lambda: count(dep, 1, " established: ") > sessions_before or not dep.daemons[0].running, 40,
                 "the secondary to re-establish with the restarted primary")
        log = dep.daemons[0].log()
        assert dep.daemons[0].running, log[-3000:]
        assert pings_through_the_tunnel(topo) == 10
        assert both_running(dep)
        assert "P3-E999" not in log and "P3-E902 " in log
    wait_for(dep, dep.established, 20, "both status files to show the session")


def test_psk_file_opened_to_others_at_run_time_is_logged_and_retried(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    topo, dep, _status_fs, _store_fs = two_sites
    psk = dep.psk_paths[1]
    lost_before = count(dep, 1, "P3-E117 ")
    os.chmod(psk, 0o644)
    try:
        done = p3ctl(dep, 0, "shutdown", "1")  # the primary ends the session: the secondary reconnects
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(dep, lambda: count(dep, 1, "P3-E117 ") > lost_before, 30,
                 "the secondary to log that its psk file is open to others")
        log = dep.daemons[1].log()
        assert dep.daemons[1].running, log[-3000:]
        assert "chmod 600" in log and "reconnecting to" in log
    finally:
        os.chmod(psk, 0o600)
    wait_for(dep, dep.established, 60, "the secondary to reconnect once the psk file is private again")
    assert pings_through_the_tunnel(topo) == 10


def test_primary_whose_psk_file_is_opened_to_others_refuses_the_attempt_and_serves_on(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    topo, dep, _status_fs, _store_fs = two_sites
    primary_psk = dep.psk_paths[1]
    own_psk = dep.workdir / "site1-own.psk"  # the same key, in a file of the secondary's own
    own_psk.write_bytes(primary_psk.read_bytes())
    own_psk.chmod(0o600)
    secondary = dep.daemons[1]
    good = secondary.config_path.read_text()
    refused_before = count(dep, 0, "P3-E117 ")
    try:
        dep.stop_daemon(1)
        secondary.config_path.write_text(configfile.set_value(good, "1/psk_file", str(own_psk)))
        os.chmod(primary_psk, 0o644)
        dep.start_daemon(1)
        wait_for(dep, lambda: count(dep, 0, "P3-E117 ") > refused_before or not dep.daemons[0].running, 40,
                 "the primary to log that its psk file is open to others")
        log = dep.daemons[0].log()
        assert dep.daemons[0].running, log[-3000:]
        assert "chmod 600" in log and "Traceback" not in log
    finally:
        os.chmod(primary_psk, 0o600)
    try:
        wait_for(dep, dep.established, 60, "the secondary to connect once the primary's psk file is private again")
        assert pings_through_the_tunnel(topo) == 10
    finally:
        dep.stop_daemon(1)
        secondary.config_path.write_text(good)
        dep.start_daemon(1)
        dep.wait_established(40)


def test_refused_reload_logs_each_problem_with_its_own_code(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    _topo, dep, _status_fs, _store_fs = two_sites
    daemon = dep.daemons[0]
    good = daemon.config_path.read_text()
    bad = configfile.set_value(good, "rekey_wait", "soon")
    daemon.config_path.write_text(bad)
    try:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(dep, lambda: "reload refused" in daemon.log(), 10, "the primary to refuse the reload")
        refusal = [line for line in daemon.log().splitlines() if "reload refused" in line][-1]
        assert " P3-E104 reload refused" in refusal and "P3-E101" not in refusal, refusal
        assert f"{daemon.config_path}:" in refusal and "soon" in refusal
        assert daemon.running
    finally:
        daemon.config_path.write_text(good)


def test_admin_socket_that_cannot_be_created_is_logged_and_the_daemon_runs_on(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    topo, dep, _status_fs, _store_fs = two_sites
    read_only = dep.workdir / "ro-fs"
    read_only.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=65536", "tmpfs", str(read_only)], check=True)
    daemon = dep.daemons[1]
    good = daemon.config_path.read_text()
    sessions_before = count(dep, 1, " established: ")
    try:
        dep.stop_daemon(1)
        daemon.config_path.write_text(configfile.set_value(good, "admin_socket", f"{read_only}/run/admin.sock"))
        dep.start_daemon(1)
        wait_for(dep, lambda: count(dep, 1, " established: ") > sessions_before or not daemon.running, 40,
                 "the secondary to come up without its admin socket")
        log = daemon.log()
        assert daemon.running, log[-3000:]
        assert f"admin socket {read_only}/run/admin.sock not served" in log and "Read-only file system" in log
        assert "P3-E999" not in log
        assert pings_through_the_tunnel(topo) == 10
    finally:
        dep.stop_daemon(1)
        daemon.config_path.write_text(good)
        unmount(read_only)
    dep.start_daemon(1)
    dep.wait_established(40)


def test_primary_starts_from_a_configuration_saved_with_crlf_and_a_bom(
        two_sites: tuple[Topology, Deployment, Path, Path]) -> None:
    topo, dep, _status_fs, _store_fs = two_sites
    daemon = dep.daemons[0]
    good = daemon.config_path.read_text()
    sessions_before = count(dep, 1, " established: ")
    try:
        dep.stop_daemon(0)
        daemon.config_path.write_bytes(b"\xef\xbb\xbf" + good.replace("\n", "\r\n").encode())
        dep.start_daemon(0)
        wait_for(dep, lambda: count(dep, 1, " established: ") > sessions_before or not daemon.running, 40,
                 "the secondary to re-establish with the primary")
        assert daemon.running, daemon.log()[-3000:]
        dep.wait_established(20)
        assert pings_through_the_tunnel(topo) == 10
        # The admin socket named on a CRLF line is the path without the CR.
        done = p3ctl(dep, 0, "status")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        daemon.config_path.write_text(good)
