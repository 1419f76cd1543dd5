"""p3ctl against real daemons in network namespaces (issue 7).

A star of one primary and two secondaries (simulators/deployment.py); every
daemon gets its own admin socket and store. The p3ctl command line runs as a
real process; actions are checked on the daemons' status (counters, P3 IDs,
session states seen from both ends) and on traffic through the tunnels.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p3hw.admin import configfile
from p3hw.admin.store import Store
from p3hw.config import load_config
from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.fleet import call_as
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]

VIEWER_UID = VIEWER_GID = 4343
SOCKET_WAIT_S = 15.0
METRICS_PORT = 19190


#: Sockets live outside pytest's 0700 temporary tree, so that a non-root user can be let in.
_SOCKET_DIRS: dict[Path, Path] = {}


def admin_paths(dep: Deployment, index: int) -> tuple[str, str]:
    """Site ``index``'s admin socket and store."""
    if dep.workdir not in _SOCKET_DIRS:
        _SOCKET_DIRS[dep.workdir] = Path(tempfile.mkdtemp(prefix="p3hw-admin-"))
        os.chmod(_SOCKET_DIRS[dep.workdir], 0o755)
    return str(_SOCKET_DIRS[dep.workdir] / f"site{index}.sock"), str(dep.workdir / f"site{index}-admin.db")


def remove_socket_dir(dep: Deployment) -> None:
    shutil.rmtree(_SOCKET_DIRS.pop(dep.workdir, Path("/nonexistent")), ignore_errors=True)


def give_each_daemon_its_admin_socket(dep: Deployment) -> None:
    """Own socket and store per daemon; the primary also serves metrics (inside its namespace's loopback)."""
    for index, daemon in dep.daemons.items():
        sock, store = admin_paths(dep, index)
        text = daemon.config_path.read_text()
        text = configfile.set_value(text, "admin_socket", sock)
        text = configfile.set_value(text, "admin_store", store)
        if index == 0:
            text = configfile.set_value(text, "metrics_port", str(METRICS_PORT))
        daemon.config_path.write_text(text)


def wait_for_socket(path: str, dep: Deployment) -> None:
    deadline = time.monotonic() + SOCKET_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"no admin socket {path}:\n{dep.daemons[0].log()[-2000:]}")
        time.sleep(0.1)


def p3ctl(sock: str, *argv: str, as_json: bool = True) -> tuple[int, Any]:
    """The real command line; exit code and its output (parsed when --json)."""
    done = subprocess.run([sys.executable, "-m", "p3hw.admin.p3ctl", "--socket", sock,
                           *(["--json"] if as_json else []), *argv], capture_output=True, text=True, timeout=60)
    if as_json:
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else done.stderr
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def star(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Topology, Deployment, str]]:
    with Topology.star(2) as topo:
        dep = Deployment(topo, tmp_path_factory.mktemp("admin"), Options())
        dep.write_configs()
        give_each_daemon_its_admin_socket(dep)
        try:
            dep.start()
            dep.wait_established(30)
            sock = admin_paths(dep, 0)[0]
            wait_for_socket(sock, dep)
            yield topo, dep, sock
        finally:
            dep.stop()
            remove_socket_dir(dep)


def primary_peer(dep: Deployment, remote_id: int) -> dict[str, Any]:
    status = dep.daemons[0].status() or {"peers": []}
    return next(p for p in status["peers"] if p["id"] == remote_id)


def test_status_lists_both_sessions_in_json_and_in_a_table(star: tuple[Topology, Deployment, str]) -> None:
    topo, dep, sock = star
    code, status = p3ctl(sock, "status")
    assert code == 0
    assert {p["address"]: p["state"] for p in status["peers"]} == {
        str(s.gw_wan4): "established" for s in topo.secondaries}
    code, text = p3ctl(sock, "status", as_json=False)
    assert code == 0 and all(str(s.gw_wan4) in text for s in topo.secondaries)
    code, one = p3ctl(sock, "status", str(topo.secondaries[0].gw_wan4))
    assert code == 0 and [p["id"] for p in one["peers"]] == [1]


def test_forced_rekey_is_seen_in_counters_and_p3_ids(star: tuple[Topology, Deployment, str]) -> None:
    topo, dep, sock = star
    before = primary_peer(dep, 2)
    other_before = primary_peer(dep, 1)["rekeys_completed"]
    code, result = p3ctl(sock, "rekey", "2")
    assert code == 0 and result["done"] == [2]
    dep.wait(lambda: primary_peer(dep, 2)["rekeys_completed"] == before["rekeys_completed"] + 1, 20, "the rekey")
    assert primary_peer(dep, 2)["outbound_p3_id"] != before["outbound_p3_id"]
    dep.wait(lambda: (dep.peer_status(2) or {}).get("rekeys_completed", 0) >= before["rekeys_completed"] + 1, 20,
             "the secondary to see the rekey")
    assert primary_peer(dep, 1)["rekeys_completed"] == other_before
    site = topo.secondaries[1]
    assert topo.ping(site.lan_ns, str(topo.primary.host4), count=3, interval_s=0.05).received == 3


def test_viewer_reads_status_but_is_refused_a_rekey(star: tuple[Topology, Deployment, str]) -> None:
    _topo, dep, sock = star
    assert p3ctl(sock, "user", "add", "vic", "--uid", str(VIEWER_UID), "--role", "viewer")[0] == 0
    os.chown(sock, -1, VIEWER_GID)
    rekeys = primary_peer(dep, 1)["rekeys_completed"]
    assert call_as(VIEWER_UID, VIEWER_GID, sock, "status")["ok"]
    refused = call_as(VIEWER_UID, VIEWER_GID, sock, "rekey", {"session": "1"})
    assert refused["error"]["code"] == "P3-E701"
    time.sleep(1)  # a rekey would have completed by now on an idle testbed
    assert primary_peer(dep, 1)["rekeys_completed"] == rekeys
    _, audit = p3ctl(sock, "audit", "--command", "rekey", "--limit", "1")
    assert (audit["audit"][0]["user"], audit["audit"][0]["result"]) == ("vic", "P3-E701")


def test_config_set_permanent_round_trips_and_bad_value_is_refused(star: tuple[Topology, Deployment, str]) -> None:
    _topo, dep, sock = star
    path = dep.daemons[0].config_path
    code, result = p3ctl(sock, "config", "set", "heartbeat_time", "20", "--permanent")
    assert code == 0, result
    assert load_config(path, role="primary").local.heartbeat_time_s == 20
    assert p3ctl(sock, "config", "get", "heartbeat_time")[1]["value"] == 20
    before = path.read_bytes()
    code, result = p3ctl(sock, "config", "set", "heartbeat_time", "never", "--permanent")
    assert code == 1 and result["error"]["code"] == "P3-E104"
    assert path.read_bytes() == before


def test_malformed_requests_never_stop_the_daemon(star: tuple[Topology, Deployment, str]) -> None:
    _topo, dep, sock = star
    for data in (b"\x00\x00", struct.pack(">I", 1 << 30), b"\x00\x00\x00\x05[1,2]",
                 struct.pack(">I", 24) + b'{"v":9,"id":1,"cmd":"x"}'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(sock)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            header = s.recv(4, socket.MSG_WAITALL)
            reply = json.loads(s.recv(struct.unpack(">I", header)[0], socket.MSG_WAITALL))
            assert reply["error"]["code"] == "P3-E700"
    assert dep.daemons[0].running
    assert p3ctl(sock, "whoami")[0] == 0


def test_metrics_show_the_sessions_over_the_socket_and_http(star: tuple[Topology, Deployment, str]) -> None:
    topo, _dep, sock = star
    code, text = p3ctl(sock, "metrics", as_json=False)
    assert code == 0 and 'p3hw_sessions{state="established"} 2' in text
    scrape = topo.run(topo.primary.gw_ns, [sys.executable, "-c", "import urllib.request, sys; sys.stdout.write("
                                           f"urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics', "
                                           "timeout=10).read().decode())"])
    assert scrape.returncode == 0, scrape.stderr
    assert 'p3hw_sessions{state="established"} 2' in scrape.stdout
    assert "p3hw_dataplane_sealed_packets_total" in scrape.stdout


def test_running_daemons_dump_no_core(star: tuple[Topology, Deployment, str]) -> None:
    """They hold keys: RLIMIT_CORE 0, hard and soft, from the start (issue 16; --allow-core-dumps to debug)."""
    _topo, dep, _sock = star
    for daemon in dep.daemons.values():
        assert daemon.proc is not None and daemon.running
        limits = Path(f"/proc/{daemon.proc.pid}/limits").read_text().splitlines()
        core = next(line for line in limits if line.startswith("Max core file size"))
        assert core.split()[4:6] == ["0", "0"], core


def test_group_shutdown_ends_only_its_members_sessions(star: tuple[Topology, Deployment, str]) -> None:
    topo, dep, sock = star
    assert p3ctl(sock, "group", "create", "east")[0] == 0
    assert p3ctl(sock, "group", "add", "east", "2")[0] == 0
    code, status = p3ctl(sock, "status", "--group", "east")
    assert [p["id"] for p in status["peers"]] == [2]
    code, result = p3ctl(sock, "shutdown", "--group", "east")
    assert code == 0 and result["done"] == [2]
    # The secondary hears SHUTDOWN (P3-E501 on its side); the other secondary's session is untouched.
    dep.wait(lambda: "P3-E501" in ((dep.peer_status(2) or {}).get("losses") or []), 20, "the secondary to see it")
    assert primary_peer(dep, 1)["state"] == "established"
    site = topo.secondaries[0]
    assert topo.ping(site.lan_ns, str(topo.primary.host4), count=3, interval_s=0.05).received == 3
    _, audit = p3ctl(sock, "audit", "--command", "shutdown", "--limit", "1")
    assert audit["audit"][0]["args"] == {"group": "east"} and audit["audit"][0]["result"] == "ok"


# ------------------------------------------------------------------ enrollment (spec 2.1.1.1 1)

@pytest.fixture
def unknown_secondary(stale_testbeds_removed: list[str], tmp_path: Path) -> Iterator[tuple[Topology, Deployment, str]]:
    """Site 2 runs, but the primary has no definition (and no key) for it: it is not enrolled."""
    with Topology.star(2) as topo:
        dep = Deployment(topo, tmp_path, Options())
        dep.write_configs()
        give_each_daemon_its_admin_socket(dep)
        primary = dep.daemons[0].config_path
        primary.write_text("".join(line for line in primary.read_text().splitlines(keepends=True)
                                   if not line.startswith("2/")))
        try:
            dep.start()
            dep.wait(lambda: (dep.peer_status(1) or {}).get("state") == "established", 30, "site 1")
            sock = admin_paths(dep, 0)[0]
            wait_for_socket(sock, dep)
            yield topo, dep, sock
        finally:
            dep.stop()
            remove_socket_dir(dep)


def test_pending_secondary_cannot_send_data_until_approved(unknown_secondary: tuple[Topology, Deployment, str]) -> None:
    topo, dep, sock = unknown_secondary
    site = topo.secondaries[1]
    assert topo.ping(site.lan_ns, str(topo.primary.host4), count=3, interval_s=0.05).received == 0
    code, status = p3ctl(sock, "status")
    assert str(site.gw_wan4) not in {p["address"] for p in status["peers"]}
    # The anonymous IKE exchange that records the request is not built yet (docs/admin.md):
    # the test records what it would, in the primary's store.
    store = Store(admin_paths(dep, 0)[1])
    entry = store.add_enrollment(str(site.gw_wan4), 4, [str(site.lan4)])
    store.close()
    code, listed = p3ctl(sock, "enroll", "list")
    assert [e["address"] for e in listed["enrollments"]] == [str(site.gw_wan4)]
    code, approved = p3ctl(sock, "enroll", "approve", str(entry))
    assert code == 0, approved
    # Credential delivery over the anonymous SA is the missing piece; copy the key as an operator would.
    dep.psk_paths[2].write_text(Path(approved["psk_file"]).read_text())
    dep.wait(lambda: (dep.peer_status(2) or {}).get("state") == "established", 60, "the enrolled secondary")
    assert topo.ping(site.lan_ns, str(topo.primary.host4), count=3, interval_s=0.05).received == 3
