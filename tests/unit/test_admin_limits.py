"""What a local user without a role can cost the admin server (issue 16): root is always served, idle and
excess connections are closed with P3-E708, refusals are audited at a bounded rate, numbers are range-checked.

The other uid is real: a forked child drops to it (root only), so the server sees it through SO_PEERCRED.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p3hw.admin import limits, p3ctl, protocol
from p3hw.simulators.fleet import FleetTarget, ServedTarget, write_fleet_config

OTHER_UID = OTHER_GID = 4244
IDLE_CONNECTIONS = 70          # more than the 64 connections the server served at once before issue 16
REFUSED_REQUESTS = 3000


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedTarget]:
    target = FleetTarget(write_fleet_config(tmp_path / "fleet", 3))
    socket_dir = tempfile.mkdtemp(prefix="p3ctl-limits-")
    try:
        with ServedTarget(target, os.path.join(socket_dir, "admin.sock"), str(tmp_path / "admin.db")) as s:
            # What an administrator does for a local user: the socket's group, and a way to it.
            os.chown(s.socket_path, -1, OTHER_GID)
            os.chmod(socket_dir, 0o755)
            yield s
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _read_frame(sock: socket.socket) -> dict[str, Any] | None:
    """One response frame, or None when the server closed without one."""
    data = b""
    while len(data) < protocol.HEADER_BYTES:
        chunk = sock.recv(protocol.HEADER_BYTES - len(data))
        if not chunk:
            return None
        data += chunk
    (length,) = struct.unpack(">I", data)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return dict(json.loads(body))


def as_other_user(work: Any) -> Any:
    """Run ``work(report)`` in a child as OTHER_UID; ``report(obj)`` sends a JSON line back. Yields the lines."""
    read_fd, write_fd = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_fd)
            os.close(go_write)
            os.setgroups([])
            os.setgid(OTHER_GID)
            os.setuid(OTHER_UID)
            out = os.fdopen(write_fd, "w")

            def report(obj: Any) -> None:
                out.write(json.dumps(obj) + "\n")
                out.flush()

            def wait_go() -> None:
                os.read(go_read, 1)

            work(report, wait_go)
        except BaseException as exc:  # noqa: BLE001 - the child reports, never returns into pytest
            try:
                os.write(write_fd, (json.dumps({"child_error": repr(exc)}) + "\n").encode())
            finally:
                status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    os.close(go_read)
    return pid, os.fdopen(read_fd), go_write


@pytest.mark.root
def test_root_is_answered_while_a_uid_without_role_holds_many_idle_connections(served: ServedTarget) -> None:
    def hold_idle_connections(report: Any, wait_go: Any) -> None:
        held = []
        for _ in range(IDLE_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(60)
            sock.connect(served.socket_path)
            held.append(sock)
        report({"connected": len(held)})
        wait_go()
        answers = []
        for sock in held:                     # each one: closed by the server, with a reason code
            try:
                frame = _read_frame(sock)
            except OSError as exc:
                frame = {"os_error": str(exc)}
            answers.append(frame)
        report({"answers": answers})

    pid, lines, go = as_other_user(hold_idle_connections)
    try:
        first = json.loads(lines.readline())
        assert first == {"connected": IDLE_CONNECTIONS}
        status = p3ctl.call(served.socket_path, "status")      # root, while the idle connections are held
        assert status["ok"] is True and len(status["result"]["peers"]) == 3
        os.write(go, b"g")
        answers = json.loads(lines.readline())["answers"]
    finally:
        os.close(go)
        os.waitpid(pid, 0)
    codes = [a["error"]["code"] if a and "error" in a else a for a in answers]
    assert codes == ["P3-E708"] * IDLE_CONNECTIONS
    details = [a["error"]["detail"] for a in answers]
    assert sum("sent no request within" in d for d in details) == limits.MAX_CONNECTIONS_NO_ROLE
    assert sum(f"holds {limits.MAX_CONNECTIONS_NO_ROLE} admin connections already" in d for d in details) == \
        IDLE_CONNECTIONS - limits.MAX_CONNECTIONS_NO_ROLE


def _store_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


@pytest.mark.root
def test_3000_refused_requests_grow_the_store_by_a_bounded_amount(served: ServedTarget) -> None:
    def flood(report: Any, _wait_go: Any) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(served.socket_path)
        codes: dict[str, int] = {}
        big = "x" * 4000                    # the largest argument a request may carry, audited as given
        for n in range(REFUSED_REQUESTS):
            sock.sendall(protocol.frame(protocol.request("status", {"session": big}, n + 1)))
            frame = _read_frame(sock)
            code = frame["error"]["code"] if frame and not frame.get("ok") else "answered"
            codes[code] = codes.get(code, 0) + 1
        report(codes)

    served.run(served.store.audit, 0, "root", "admin", "whoami", {}, "ok", "")
    before = _store_bytes(served.store_path)
    pid, lines, go = as_other_user(flood)
    try:
        codes = json.loads(lines.readline())
    finally:
        os.close(go)
        os.waitpid(pid, 0)
    assert codes == {"P3-E701": REFUSED_REQUESTS}
    grown = _store_bytes(served.store_path) - before
    assert grown < 1024 * 1024, f"the store grew by {grown} bytes"
    served.run(served.server.refusals.flush)            # the summary's final count (as at the end of its minute)
    rows = [r for r in served.run(served.store.audit_log, 1000) if r["uid"] == OTHER_UID]
    one_by_one = [r for r in rows if r["command"] == "status"]
    summaries = [r for r in rows if r["command"] == limits.SUMMARY_COMMAND]
    assert summaries and all(r["result"] == "P3-E708" for r in summaries)
    counted = sum(int(re.match(r"(\d+) more refused request", r["detail"]).group(1)) for r in summaries)  # type: ignore[union-attr]
    assert len(one_by_one) + counted == REFUSED_REQUESTS       # every refusal is accounted for
    assert all(r["result"] == "P3-E701" and len(json.dumps(r["args"])) <= 2 * limits.REFUSED_ARGS_CHARS
               for r in one_by_one)


@pytest.mark.parametrize(("argv", "what"), [
    (["group", "create", "huge", "--priority", str(2 ** 62)], "priority = 4611686018427387904"),
    (["group", "create", "neg", "--priority", "-1"], "priority = -1"),
    (["audit", "--limit", "-5"], "limit = -5"),
    (["audit", "--limit", "0"], "limit = 0"),
])
def test_out_of_range_numbers_are_refused_with_a_reason_code(served: ServedTarget, capsys: pytest.CaptureFixture[str],
                                                             argv: list[str], what: str) -> None:
    code = p3ctl.main(["--socket", served.socket_path, "--json", *argv])
    out, _err = capsys.readouterr()
    result = json.loads(out)
    assert code == p3ctl.EXIT_USAGE
    assert result["error"]["code"] == "P3-E709" and what in result["error"]["detail"]
    assert served.run(served.store.list_groups) == []


# ------------------------------------------------------------------ the metrics endpoint

def _scrape_as(uid: int | None, port: int) -> tuple[int, str]:
    """GET /metrics, from a child running as *uid* (None: this process); HTTP status and body."""
    import encodings.idna  # noqa: F401 - imported here: the child, as another uid, may not read the library
    import urllib.error
    import urllib.request

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    if uid is None:
        return get()

    def work(report: Any, _wait_go: Any) -> None:
        report(get())

    pid, lines, go = as_other_user(work)
    try:
        line = json.loads(lines.readline())
        assert isinstance(line, list), line
        status, body = line
    finally:
        os.close(go)
        os.waitpid(pid, 0)
    return int(status), str(body)


@pytest.mark.root
def test_metrics_are_served_on_loopback_to_p3hw_users_only(served: ServedTarget,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from p3hw.admin import metrics

    async def start() -> Any:
        return await metrics.start_metrics_server(served.target.status, 0, allow=metrics.allow_users(served.store))

    http = asyncio.run_coroutine_threadsafe(start(), served.loop).result(10)
    try:
        host, port = http.sockets[0].getsockname()[:2]
        assert host == "127.0.0.1"
        code, body = _scrape_as(OTHER_UID, port)              # a local user with no role
        assert code == 403 and body.startswith("P3-E701") and f"uid {OTHER_UID}" in body
        assert "p3hw_sessions" not in body
        assert _scrape_as(None, port)[0] == 200                # root
        assert p3ctl.main(["--socket", served.socket_path, "user", "add", "prom", "--uid", str(OTHER_UID),
                           "--role", "viewer"]) == 0
        capsys.readouterr()
        code, body = _scrape_as(OTHER_UID, port)
        assert code == 200 and "p3hw_sessions" in body
    finally:
        async def stop() -> None:
            http.close()
            await http.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), served.loop).result(10)
