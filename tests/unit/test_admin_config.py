"""Groups with settings, per-secondary overrides, config get/set (--permanent), enrollment and metrics via p3ctl."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p3hw.admin import metrics, p3ctl
from p3hw.config import load_config
from p3hw.simulators.fleet import FleetTarget, ServedTarget, write_fleet_config


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedTarget]:
    target = FleetTarget(write_fleet_config(tmp_path / "fleet", 4))
    with ServedTarget(target, str(tmp_path / "admin.sock"), str(tmp_path / "admin.db")) as s:
        yield s


def ctl(served: ServedTarget, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = p3ctl.main(["--socket", served.socket_path, "--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def running(served: ServedTarget, remote_id: int) -> Any:
    return served.target.config.remote(remote_id)


# ------------------------------------------------------------------ groups

def test_group_lifecycle(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert ctl(served, capsys, "group", "create", "north")[0] == 0
    code, result = ctl(served, capsys, "group", "create", "north")
    assert code == p3ctl.EXIT_FAILED and result["error"]["code"] == "P3-E703"
    assert ctl(served, capsys, "group", "add", "north", "2", "3", "4")[0] == 0
    assert ctl(served, capsys, "group", "remove", "north", "3")[0] == 0
    _, shown = ctl(served, capsys, "group", "show", "north")
    assert shown["group"]["members"] == [2, 4]
    _, listed = ctl(served, capsys, "group", "list")
    assert [(g["name"], g["members"]) for g in listed["groups"]] == [("north", 2)]
    _, status = ctl(served, capsys, "status", "--group", "north")
    assert [p["id"] for p in status["peers"]] == [2, 4] and status["peers"][0]["groups"] == ["north"]
    assert ctl(served, capsys, "group", "delete", "north")[0] == 0
    code, result = ctl(served, capsys, "group", "show", "north")
    assert code == p3ctl.EXIT_NOT_FOUND and result["error"]["code"] == "P3-E702"
    code, result = ctl(served, capsys, "group", "add", "nosuch", "2")
    assert code == p3ctl.EXIT_NOT_FOUND


def test_adding_an_unknown_session_to_a_group_is_refused(served: ServedTarget,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ctl(served, capsys, "group", "create", "g")
    code, result = ctl(served, capsys, "group", "add", "g", "2", "77")
    assert code == p3ctl.EXIT_NOT_FOUND and "77" in result["error"]["detail"]
    assert ctl(served, capsys, "group", "show", "g")[1]["group"]["members"] == []


def test_group_setting_reaches_members_and_override_wins(served: ServedTarget,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    ctl(served, capsys, "group", "create", "slow", "--priority", "10")
    ctl(served, capsys, "group", "create", "fast", "--priority", "20")
    ctl(served, capsys, "group", "add", "slow", "2", "3", "4")
    ctl(served, capsys, "group", "add", "fast", "3")
    code, result = ctl(served, capsys, "config", "set", "--group", "slow", "rekey_wait", "600")
    assert code == 0 and sorted(result["live"]) == ["2/rekey_wait", "3/rekey_wait", "4/rekey_wait"]
    ctl(served, capsys, "config", "set", "--group", "fast", "rekey_wait", "60")
    ctl(served, capsys, "config", "set", "--session", "4", "rekey_wait", "90")
    # file (3600) < slow (priority 10) < fast (priority 20) < the secondary's own override
    assert [running(served, i).rekey_wait_s for i in (2, 3, 4, 5)] == [600, 60, 90, 3600]
    _, effective = ctl(served, capsys, "config", "get", "--session", "3", "rekey_wait")
    assert effective["values"]["rekey_wait"]["stored"] == "60"
    assert effective["values"]["rekey_wait"]["stored_origin"] == "group fast"
    # Removing the override falls back to the groups; leaving a group falls back further.
    ctl(served, capsys, "config", "set", "--session", "4", "rekey_wait", "--unset")
    ctl(served, capsys, "group", "remove", "fast", "3")
    assert [running(served, i).rekey_wait_s for i in (2, 3, 4)] == [600, 600, 600]
    ctl(served, capsys, "group", "delete", "slow")
    assert [running(served, i).rekey_wait_s for i in (2, 3, 4)] == [3600, 3600, 3600]


def test_bad_group_setting_is_refused_with_the_parsers_reason(served: ServedTarget,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    ctl(served, capsys, "group", "create", "g")
    code, result = ctl(served, capsys, "config", "set", "--group", "g", "rekey_wait", "soon")
    assert code == p3ctl.EXIT_FAILED and result["error"]["code"] == "P3-E104"
    code, result = ctl(served, capsys, "config", "set", "--group", "g", "address", "10.0.0.1")
    assert result["error"]["code"] == "P3-E102"
    assert ctl(served, capsys, "group", "show", "g")[1]["group"]["settings"] == {}


# ------------------------------------------------------------------ config get / set

def test_config_get_shows_value_and_origin(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = ctl(served, capsys, "config", "get", "rekey_wait")
    assert code == 0 and result["value"] == 3600 and result["source"] == "local" and result["line"] == 6
    _, remote = ctl(served, capsys, "config", "get", "3/address")
    assert remote["value"] == "198.18.0.3"
    code = p3ctl.main(["--socket", served.socket_path, "config", "get", "heartbeat_fail"])
    assert code == 0 and capsys.readouterr().out.startswith("heartbeat_fail = 120")
    assert ctl(served, capsys, "config", "get", "nosuch")[0] == p3ctl.EXIT_NOT_FOUND


def test_config_set_permanent_round_trips_through_the_parser(served: ServedTarget,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(served.target.config_path or "")
    original = path.read_text()
    code, result = ctl(served, capsys, "config", "set", "rekey_wait", "1800", "--permanent")
    assert code == 0 and result["live"] == ["rekey_wait"]
    assert load_config(path, role="primary").local.rekey_wait_s == 1800
    changed = [(a, b) for a, b in zip(original.splitlines(), path.read_text().splitlines(), strict=True) if a != b]
    assert changed == [("rekey_wait = 3600", "rekey_wait = 1800")]  # comments and order untouched
    assert served.target.config.local.rekey_wait_s == 1800
    # A remote keyword that the file does not have yet is added after that remote's lines.
    assert ctl(served, capsys, "config", "set", "3/heartbeat_time", "30", "--permanent")[0] == 0
    lines = path.read_text().splitlines()
    assert lines[lines.index("3/psk_file = fleet.psk") + 1] == "3/heartbeat_time = 30"
    assert load_config(path, role="primary").remote(3).heartbeat_time_s == 30


def test_config_set_bad_value_leaves_the_file_untouched(served: ServedTarget,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(served.target.config_path or "")
    before = path.read_bytes()
    before_inode = path.stat().st_ino
    for key, value, code in [("rekey_wait", "0", "P3-E104"), ("rekey_wait", "-5", "P3-E104"),
                             ("address", "not-an-address", "P3-E107"), ("3/key_type", "DES", "P3-E104"),
                             ("frobnicate", "1", "P3-E102")]:
        exit_code, result = ctl(served, capsys, "config", "set", key, value, "--permanent")
        assert exit_code == p3ctl.EXIT_FAILED, key
        assert result["error"]["code"] == code, (key, result)
    assert path.read_bytes() == before and path.stat().st_ino == before_inode
    assert served.target.applied == []  # the running daemon was not told anything either


def test_config_set_without_permanent_does_not_write(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(served.target.config_path or "")
    before = path.read_bytes()
    code, result = ctl(served, capsys, "config", "set", "heartbeat_time", "20")
    assert code == 0 and result["file"] is None
    assert served.target.config.local.heartbeat_time_s == 20
    assert path.read_bytes() == before


def test_config_set_of_a_restart_setting_says_when_it_applies(served: ServedTarget,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, result = ctl(served, capsys, "config", "set", "interface", "p3-9", "--permanent")
    assert code == 0 and result["on_reload"] == ["interface"] and result["live"] == []
    code = p3ctl.main(["--socket", served.socket_path, "config", "set", "interface", "p3-8"])
    assert code == p3ctl.EXIT_FAILED and capsys.readouterr().err.startswith("p3ctl: P3-E706 ")
    assert served.target.config.local.interface == "p3-9"  # the running configuration is as it was


# ------------------------------------------------------------------ enrollment (spec 2.1.1.1 1)

def test_enrollment_approve_writes_remote_and_credentials(served: ServedTarget,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # What the primary records when a secondary without credentials presents itself (docs/admin.md).
    entry = served.run(served.store.add_enrollment, "198.18.9.9", 4, ["10.99.0.0/24", "10.98.0.0/16"])
    assert [p["address"] for p in served.run(served.target.status)["peers"]].count("198.18.9.9") == 0
    _, listed = ctl(served, capsys, "enroll", "list")
    assert [(e["id"], e["address"], e["state"]) for e in listed["enrollments"]] == [(entry, "198.18.9.9", "pending")]
    code, result = ctl(served, capsys, "enroll", "approve", str(entry))
    assert code == 0 and result["remote_id"] == 6
    psk = Path(result["psk_file"])
    assert stat.S_IMODE(psk.stat().st_mode) == 0o600 and len(psk.read_text().strip()) == 64
    config = load_config(served.target.config_path or "", role="primary")
    remote = config.remote(6)
    assert str(remote.address) == "198.18.9.9" and [str(s) for s in remote.subnets] == ["10.99.0.0/24", "10.98.0.0/16"]
    assert served.target.reloads == 1
    assert any(p["id"] == 6 for p in served.run(served.target.status)["peers"])
    assert ctl(served, capsys, "enroll", "list")[1]["enrollments"] == []
    code, result = ctl(served, capsys, "enroll", "approve", str(entry))
    assert code == p3ctl.EXIT_NOT_FOUND


def test_enrollment_reject_removes_it_from_pending(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(served.target.config_path or "")
    before = path.read_bytes()
    entry = served.run(served.store.add_enrollment, "198.18.9.10", 4, ["10.97.0.0/24"])
    assert ctl(served, capsys, "enroll", "reject", str(entry))[0] == 0
    assert ctl(served, capsys, "enroll", "list")[1]["enrollments"] == []
    _, everything = ctl(served, capsys, "enroll", "list", "--all")
    assert everything["enrollments"][0]["state"] == "rejected" and everything["enrollments"][0]["decided_by"] == "root"
    assert path.read_bytes() == before and served.target.reloads == 0


def test_enrollment_with_a_bad_subnet_is_refused_without_side_effects(served: ServedTarget,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(served.target.config_path or "")
    before = path.read_bytes()
    # Its subnet is one that remote 2 already routes (P3-E111): the parser refuses, nothing is written.
    entry = served.run(served.store.add_enrollment, "198.18.9.11", 4, ["10.0.1.0/24"])
    code, result = ctl(served, capsys, "enroll", "approve", str(entry))
    assert code == p3ctl.EXIT_FAILED and result["error"]["code"] == "P3-E111"
    assert path.read_bytes() == before
    assert not any(p.name.startswith("enrolled-") for p in path.parent.iterdir())
    assert ctl(served, capsys, "enroll", "list")[1]["enrollments"][0]["state"] == "pending"


# ------------------------------------------------------------------ metrics

def test_metrics_over_the_socket_and_http(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    ctl(served, capsys, "rekey", "2")
    ctl(served, capsys, "shutdown", "3")
    code = p3ctl.main(["--socket", served.socket_path, "metrics"])
    text = capsys.readouterr().out
    assert code == 0
    assert 'p3hw_sessions{state="established"} 3' in text
    assert 'p3hw_session_rekeys_total{id="2",address="198.18.0.2"} 1' in text
    assert 'p3hw_session_losses_total{id="3",address="198.18.0.3",reason="P3-E504"} 1' in text

    async def start() -> Any:
        return await metrics.start_metrics_server(served.target.status, 0)

    http = asyncio.run_coroutine_threadsafe(start(), served.loop).result(10)
    try:
        port = http.sockets[0].getsockname()[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            scraped = reply.read().decode()
        assert 'p3hw_sessions{state="down"} 1' in scraped
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        assert missing.value.code == 404
    finally:
        # The server belongs to the served loop's thread: close it there (asyncio is not thread-safe).
        async def stop() -> None:
            http.close()
            await http.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), served.loop).result(10)


def test_metrics_text_is_well_formed() -> None:
    status = {"role": "primary", "peers": [{"id": 2, "address": 'we"ird\\', "state": "established", "since_s": 1.5,
                                            "sessions_started": 1, "rekeys_completed": 2, "losses": []}],
              "dataplane": {"sealed_packets": 5, "opened_packets": 4, "control_packets": 1,
                            "drops": {"DP_REPLAY": 3}}, "worker": {"io_errors": 0}, "termination": None}
    text = metrics.render(status)
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or line.rsplit(" ", 1)[1].replace(".", "").isdigit()
    assert 'address="we\\"ird\\\\"' in text
    assert 'p3hw_dataplane_drops_total{reason="DP_REPLAY"} 3' in text
    assert text.count("# TYPE p3hw_session_up gauge") == 1


def test_store_file_is_private(served: ServedTarget) -> None:
    assert stat.S_IMODE(os.stat(served.store_path).st_mode) == 0o600


def test_every_command_prints_a_human_answer(served: ServedTarget, capsys: pytest.CaptureFixture[str]) -> None:
    served.run(served.store.add_enrollment, "198.18.9.12", 4, ["10.96.0.0/24"])
    expectations = [
        (["whoami"], "root (uid 0) is admin on the primary"),
        (["status"], "198.18.0.2"),
        (["status", "2"], "1 session(s), session 2"),
        (["metrics"], "p3hw_up"),
        (["group", "create", "west", "--priority", "5"], "group west created"),
        (["group", "add", "west", "2", "3"], "2 secondary(ies) added to west"),
        (["group", "list"], "west"),
        (["group", "show", "west"], "members (2): 2,3"),
        (["config", "set", "--group", "west", "heartbeat_time", "25"], "group west: heartbeat_time = 25"),
        (["config", "get", "--group", "west"], "heartbeat_time = 25"),
        (["config", "get", "--session", "2"], "heartbeat_time = 25    # group west"),
        (["config", "get"], "rekey_wait = 3600    # local"),
        (["config", "set", "rekey_wait", "1200"], "rekey_wait = 1200 now (not written"),
        (["rekey", "--group", "west"], "rekey group west: 2 done, 0 refused"),
        (["keyarray", "generate", "3"], "keyarray generate session 3: 1 done"),
        (["shutdown", "3"], "shutdown session 3: 1 done"),
        (["group", "remove", "west", "3"], "1 secondary(ies) removed from west"),
        (["group", "delete", "west"], "group west deleted"),
        (["user", "add", "bo", "--uid", "2000", "--role", "viewer"], "user bo (uid 2000) is viewer"),
        (["user", "role", "bo", "operator"], "user bo is operator"),
        (["user", "list"], "bo"),
        (["user", "remove", "bo"], "user bo removed"),
        (["enroll", "list"], "198.18.9.12"),
        (["enroll", "reject", "1"], "enrollment 1 rejected"),
        (["audit", "--limit", "3"], "user.remove"),
    ]
    for argv, expected in expectations:
        code = p3ctl.main(["--socket", served.socket_path, *argv])
        out, err = capsys.readouterr()
        assert code == 0, (argv, err)
        assert expected in out, (argv, out)



def test_enrollment_does_not_overwrite_an_existing_key_file(served: ServedTarget,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(served.target.config_path or "")
    before = path.read_bytes()
    leftover = path.parent / "enrolled-6.psk"
    leftover.write_text("someone else's key\n")
    entry = served.run(served.store.add_enrollment, "198.18.9.13", 4, ["10.95.0.0/24"])
    code, result = ctl(served, capsys, "enroll", "approve", str(entry))
    assert code == p3ctl.EXIT_FAILED and result["error"]["code"] == "P3-E703"
    assert leftover.read_text() == "someone else's key\n" and path.read_bytes() == before
    code, result = ctl(served, capsys, "enroll", "approve", str(entry), "--remote-id", "40")
    assert code == 0 and result["remote_id"] == 40
