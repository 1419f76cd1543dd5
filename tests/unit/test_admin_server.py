"""The admin server and p3ctl over a real Unix socket, against a simulated primary (simulators/fleet.py).

The e2e tests (tests/e2e/test_admin_daemons.py) run the same commands against real daemons.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p3hw.admin import p3ctl, protocol
from p3hw.simulators.fleet import FleetTarget, ServedTarget, call_as, write_fleet_config

OTHER_UID = OTHER_GID = 4242


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedTarget]:
    target = FleetTarget(write_fleet_config(tmp_path / "fleet", 6))
    # The socket lives outside pytest's 0700 tree so that another uid can reach it when a test allows it.
    socket_dir = tempfile.mkdtemp(prefix="p3ctl-test-")
    try:
        with ServedTarget(target, os.path.join(socket_dir, "admin.sock"), str(tmp_path / "admin.db")) as s:
            yield s
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def ctl(served: ServedTarget, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run p3ctl --json; exit code, parsed stdout and stderr."""
    code = p3ctl.main(["--socket", served.socket_path, "--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def human(served: ServedTarget, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = p3ctl.main(["--socket", served.socket_path, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def peer(served: ServedTarget, remote_id: int) -> dict[str, Any]:
    return next(p for p in served.run(served.target.status)["peers"] if p["id"] == remote_id)


def open_to(served: ServedTarget, gid: int) -> None:
    """What an administrator does for a non-root user: the socket's group, and a way to it."""
    os.chown(served.socket_path, -1, gid)
    os.chmod(os.path.dirname(served.socket_path), 0o755)


# ------------------------------------------------------------------ socket and status

def test_socket_is_mode_0660(served: ServedTarget) -> None:
    info = os.stat(served.socket_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o660


def test_status_lists_every_session_in_json_and_as_a_table(served: ServedTarget,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = ctl(served, capsys, "status")
    assert code == 0
    assert [p["id"] for p in result["peers"]] == [2, 3, 4, 5, 6, 7]
    assert all(p["state"] == "established" for p in result["peers"])
    code, text, _ = human(served, capsys, "status")
    assert code == 0
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["ID", "ADDRESS", "STATE"]
    assert any(line.split()[:3] == ["4", "198.18.0.4", "established"] for line in lines)


def test_status_of_one_session_by_id_or_address(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    _, by_id, _ = ctl(served, capsys, "status", "3")
    _, by_address, _ = ctl(served, capsys, "status", "198.18.0.3")
    assert [p["id"] for p in by_id["peers"]] == [3]
    assert [p["id"] for p in by_address["peers"]] == [3]
    code, result, _ = ctl(served, capsys, "status", "99")
    assert code == p3ctl.EXIT_NOT_FOUND
    assert result["error"]["code"] == "P3-E702"


def test_root_is_admin(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = ctl(served, capsys, "whoami")
    assert code == 0 and result["uid"] == 0 and result["role"] == "admin"


def test_unreachable_daemon_exits_3_with_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = p3ctl.main(["--socket", str(tmp_path / "none.sock"), "status"])
    assert code == p3ctl.EXIT_UNREACHABLE
    assert capsys.readouterr().err.startswith("p3ctl: P3-E704 ")


# ------------------------------------------------------------------ sessions and keys

def test_forced_rekey_gives_the_session_new_p3_ids(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    before = peer(served, 4)
    code, result, _ = ctl(served, capsys, "rekey", "4")
    assert code == 0 and result["done"] == [4]
    after = peer(served, 4)
    assert after["rekeys_completed"] == before["rekeys_completed"] + 1
    assert after["outbound_p3_id"] != before["outbound_p3_id"]
    assert peer(served, 5)["rekeys_completed"] == 0


def test_rekey_needs_a_target(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = ctl(served, capsys, "rekey")
    assert code == p3ctl.EXIT_FAILED and result["error"]["code"] == "P3-E700"
    assert all(p["rekeys_completed"] == 0 for p in served.run(served.target.status)["peers"])


def test_group_shutdown_takes_only_the_members_down(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "group", "create", "branch")[0] == 0
    assert ctl(served, capsys, "group", "add", "branch", "2", "198.18.0.3")[0] == 0
    code, result, _ = ctl(served, capsys, "shutdown", "--group", "branch")
    assert code == 0 and sorted(result["done"]) == [2, 3]
    states = {p["id"]: p["state"] for p in served.run(served.target.status)["peers"]}
    assert states == {2: "down", 3: "down", 4: "established", 5: "established", 6: "established", 7: "established"}
    assert peer(served, 2)["losses"] == ["P3-E504"]
    # A second shutdown is refused per session, and p3ctl says so with exit code 6.
    code, result, _ = ctl(served, capsys, "shutdown", "--group", "branch")
    assert code == p3ctl.EXIT_PARTIAL and set(result["refused"]) == {"2", "3"}


def test_keyarray_generate_and_flush(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "keyarray", "generate", "--all")[0] == 0
    assert all(s.key_array_installed for s in served.target.sessions.values())
    assert ctl(served, capsys, "keyarray", "flush", "5")[0] == 0
    assert not served.target.sessions[5].key_array_installed
    assert served.target.sessions[6].key_array_installed
    assert ctl(served, capsys, "keyarray", "flush", "--regenerate", "5")[0] == 0
    assert served.target.sessions[5].key_arrays_generated == 2


# ------------------------------------------------------------------ users, roles and audit

@pytest.mark.root
def test_viewer_is_refused_a_rekey_with_a_reason_code(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "user", "add", "vera", "--uid", str(OTHER_UID), "--role", "viewer")[0] == 0
    open_to(served, OTHER_GID)
    status = call_as(OTHER_UID, OTHER_GID, served.socket_path, "status")
    assert status["ok"] and len(status["result"]["peers"]) == 6
    refused = call_as(OTHER_UID, OTHER_GID, served.socket_path, "rekey", {"session": "3"})
    assert not refused["ok"] and refused["error"]["code"] == "P3-E701"
    assert peer(served, 3)["rekeys_completed"] == 0
    audit = served.run(served.store.audit_log, 10, "rekey")
    assert audit[0]["user"] == "vera" and audit[0]["uid"] == OTHER_UID and audit[0]["result"] == "P3-E701"


@pytest.mark.root
def test_operator_rekeys_but_cannot_manage_users(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    ctl(served, capsys, "user", "add", "otto", "--uid", str(OTHER_UID), "--role", "operator")
    open_to(served, OTHER_GID)
    assert call_as(OTHER_UID, OTHER_GID, served.socket_path, "rekey", {"session": "3"})["ok"]
    assert peer(served, 3)["rekeys_completed"] == 1
    denied = call_as(OTHER_UID, OTHER_GID, served.socket_path, "user.add",
                     {"name": "mallory", "uid": 5000, "role": "admin"})
    assert denied["error"]["code"] == "P3-E701"
    # Promoted by an admin, the same uid may.
    assert ctl(served, capsys, "user", "role", "otto", "admin")[0] == 0
    assert call_as(OTHER_UID, OTHER_GID, served.socket_path, "user.list")["ok"]


@pytest.mark.root
def test_unknown_uid_is_denied_everything(served: ServedTarget) -> None:
    open_to(served, OTHER_GID)
    answer = call_as(OTHER_UID, OTHER_GID, served.socket_path, "status")
    assert answer["error"]["code"] == "P3-E701"


@pytest.mark.root
def test_uid_outside_the_socket_group_cannot_connect(served: ServedTarget) -> None:
    os.chmod(os.path.dirname(served.socket_path), 0o755)  # the socket itself stays root:root 0660
    answer = call_as(OTHER_UID, OTHER_GID, served.socket_path, "status")
    assert answer["error"]["code"] == "P3-E704"


def test_users_are_listed_changed_and_removed(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "user", "add", "ann", "--uid", "1001", "--role", "viewer")[0] == 0
    code, result, _ = ctl(served, capsys, "user", "add", "ann", "--uid", "1002", "--role", "viewer")
    assert code == p3ctl.EXIT_FAILED and result["error"]["code"] == "P3-E703"
    assert ctl(served, capsys, "user", "role", "ann", "operator")[0] == 0
    _, listed, _ = ctl(served, capsys, "user", "list")
    assert [(u["name"], u["uid"], u["role"]) for u in listed["users"]] == [("ann", 1001, "operator")]
    code, text, _ = human(served, capsys, "user", "list")
    assert "ann" in text and "operator" in text
    assert ctl(served, capsys, "user", "remove", "ann")[0] == 0
    assert ctl(served, capsys, "user", "remove", "ann")[0] == p3ctl.EXIT_NOT_FOUND


def test_every_request_is_audited_with_who_what_when_result(served: ServedTarget,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    ctl(served, capsys, "rekey", "2")
    ctl(served, capsys, "group", "show", "nosuch")
    code, result, _ = ctl(served, capsys, "audit", "--limit", "5")
    assert code == 0
    latest = result["audit"]
    assert [e["command"] for e in latest[:3]] == ["audit.list", "group.show", "rekey"][:3] or \
        [e["command"] for e in latest[:2]] == ["group.show", "rekey"]
    rekey = next(e for e in latest if e["command"] == "rekey")
    assert rekey["user"] == "root" and rekey["role"] == "admin" and rekey["result"] == "ok"
    assert rekey["args"] == {"session": "2"} and rekey["at"].endswith("Z")
    failed = next(e for e in latest if e["command"] == "group.show")
    assert failed["result"] == "P3-E702"


# ------------------------------------------------------------------ malformed requests

def raw_exchange(path: str, data: bytes, half_close: bool = True) -> dict[str, Any] | None:
    """Send raw bytes; the one response frame, or None when the server closed without answering."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(path)
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        header = sock.recv(4, socket.MSG_WAITALL)
        if len(header) < 4:
            return None
        (length,) = struct.unpack(">I", header)
        return json.loads(sock.recv(length, socket.MSG_WAITALL))


def body(obj: Any) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


@pytest.mark.parametrize("data", [
    pytest.param(b"\x00\x00", id="truncated-header"),
    pytest.param(struct.pack(">I", 100) + b'{"v": 1', id="truncated-body"),
    pytest.param(struct.pack(">I", 0x7FFFFFFF), id="huge-length"),
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="http-instead"),
    pytest.param(struct.pack(">I", 4) + b"\xff\xfe\x00{", id="not-utf8"),
    pytest.param(body([1, 2, 3]), id="json-array"),
    pytest.param(body({"v": 2, "id": 1, "cmd": "status"}), id="wrong-version"),
    pytest.param(body({"id": 1, "cmd": "status"}), id="no-version"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "format-disk"}), id="unknown-command"),
    pytest.param(body({"v": 1, "id": 1, "cmd": 7}), id="command-not-string"),
    pytest.param(body({"v": 1, "id": "x", "cmd": "status"}), id="id-not-integer"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "rekey", "args": {"session": 3}}), id="session-not-string"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "user.add", "args": {"name": "a", "uid": "0", "role": "admin"}}),
                 id="uid-not-integer"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "user.add", "args": {"name": "a", "uid": True, "role": "admin"}}),
                 id="uid-boolean"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "group.add", "args": {"name": "g", "sessions": "2"}}),
                 id="sessions-not-list"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "group.create", "args": {}}), id="missing-argument"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "status", "args": {"bogus": 1}}), id="unknown-argument"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "status", "args": []}), id="args-not-object"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "keyarray", "args": {"op": "explode", "all": True}}), id="bad-op"),
    pytest.param(body({"v": 1, "id": 1, "cmd": "user.add", "args": {"name": "a", "uid": 1, "role": "god"}}),
                 id="bad-role"),
])
def test_malformed_request_gets_p3_e700_and_the_server_goes_on(served: ServedTarget, data: bytes) -> None:
    response = raw_exchange(served.socket_path, data)
    assert response is not None and response["ok"] is False
    assert response["error"]["code"] == "P3-E700"
    assert response["error"]["detail"]
    still = raw_exchange(served.socket_path, body(protocol.request("status")))
    assert still is not None and still["ok"] and len(still["result"]["peers"]) == 6
    assert served.run(served.store.list_users) == []  # nothing a malformed request said was done


def test_a_connection_closed_mid_header_is_dropped_quietly(served: ServedTarget) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(served.socket_path)
        sock.sendall(b"\x00")
    assert raw_exchange(served.socket_path, body(protocol.request("whoami")))["ok"]


def test_several_requests_on_one_connection(served: ServedTarget) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(served.socket_path)
        sock.sendall(body({"v": 1, "id": 7, "cmd": "bogus"}) + body(protocol.request("whoami", request_id=8)))
        ids = []
        for _ in range(2):
            (length,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
            ids.append(json.loads(sock.recv(length, socket.MSG_WAITALL))["id"])
    assert ids == [7, 8]


def test_a_second_daemon_cannot_take_a_served_socket(served: ServedTarget, tmp_path: Path) -> None:
    other = FleetTarget(write_fleet_config(tmp_path / "other", 2))
    with pytest.raises(Exception) as caught:
        with ServedTarget(other, served.socket_path, str(tmp_path / "other.db")):
            pass
    assert "P3-E901" in str(caught.value)
    assert raw_exchange(served.socket_path, body(protocol.request("whoami")))["ok"]


def test_a_stale_socket_of_an_earlier_run_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    target = FleetTarget(write_fleet_config(tmp_path / "fleet", 2))
    with ServedTarget(target, path, str(tmp_path / "admin.db")):
        assert raw_exchange(path, body(protocol.request("whoami")))["ok"]
    assert not os.path.exists(path)


def test_json_flag_may_follow_the_command(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert p3ctl.main(["--socket", served.socket_path, "status", "2", "--json"]) == 0
    assert [p["id"] for p in json.loads(capsys.readouterr().out)["peers"]] == [2]
    assert p3ctl.main(["--socket", served.socket_path, "group", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"groups": [], "summary": "0 group(s)"}


def test_status_shows_where_packets_go_and_the_dpdk_link_counters() -> None:
    base = {"role": "primary", "address": "198.18.0.1", "pid": 1, "summary": "1 session", "peers": []}
    dpdk = p3ctl._show_status({**base, "io": {"backend": "dpdk", "lan_port": "net_af_packet0",
                                              "wan_port": "net_af_packet1", "lan_address": "10.1.0.1/24",
                                              "workers": 2, "udp_port": 5653},
                               "worker": {"link_replies": 3, "link_drops": 1, "neighbour_drops": 0,
                                          "tx_full_drops": 0, "handoffs": 40, "handoff_drops": 0}})
    assert ("io: DPDK ports net_af_packet0 (LAN 10.1.0.1/24) and net_af_packet1 (WAN), 2 worker(s); "
            "link replies 3, link drops 1, neighbour drops 0, tx full 0, hand-offs 40 (dropped 0)") in dpdk
    kernel = p3ctl._show_status({**base, "io": {"backend": "kernel", "interface": "p3-0", "transport": "esp",
                                                "udp_port": 5653}})
    assert "io: kernel, interface p3-0, transport esp, UDP port 5653" in kernel
