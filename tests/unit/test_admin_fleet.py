"""Scale: 1,000 simulated secondaries in 10 groups (simulators/fleet.py, a SIMULATION at the admin level).

`status --group` and `rekey --group` act on exactly the group's members, and
the audit log records each action.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from p3hw.admin import p3ctl
from p3hw.simulators.fleet import FleetTarget, ServedTarget, populate_groups, write_fleet_config

SECONDARIES = 1000
GROUPS = 10


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedTarget, dict[str, list[int]]]]:
    work: Path = tmp_path_factory.mktemp("fleet")
    target = FleetTarget(write_fleet_config(work, SECONDARIES))
    with ServedTarget(target, str(work / "admin.sock"), str(work / "admin.db")) as served:
        members = served.run(populate_groups, served.store, target, GROUPS)
        yield served, members


def ctl(served: ServedTarget, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = p3ctl.main(["--socket", served.socket_path, "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_fleet_has_a_thousand_sessions_in_ten_groups(fleet: tuple[ServedTarget, dict[str, list[int]]],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    served, members = fleet
    code, status = ctl(served, capsys, "status")
    assert code == 0 and len(status["peers"]) == SECONDARIES
    _, groups = ctl(served, capsys, "group", "list")
    assert [(g["name"], g["members"]) for g in groups["groups"]] == [(f"site-{g:02d}", 100) for g in range(GROUPS)]
    assert sorted(i for ids in members.values() for i in ids) == sorted(p["id"] for p in status["peers"])


def test_status_of_a_group_shows_exactly_its_members(fleet: tuple[ServedTarget, dict[str, list[int]]],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    served, members = fleet
    code, status = ctl(served, capsys, "status", "--group", "site-03")
    assert code == 0
    assert sorted(p["id"] for p in status["peers"]) == members["site-03"]
    assert all(p["groups"] == ["site-03"] for p in status["peers"])
    code = p3ctl.main(["--socket", served.socket_path, "status", "--group", "site-03"])
    table = capsys.readouterr().out.splitlines()
    assert code == 0 and len(table) == 2 + 100 + 1  # heading line, column line, 100 rows, dataplane line


def test_rekey_of_a_group_rekeys_its_members_only_and_is_audited(fleet: tuple[ServedTarget, dict[str, list[int]]],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    served, members = fleet
    before = {p["id"]: p for p in served.run(served.target.status)["peers"]}
    code, result = ctl(served, capsys, "rekey", "--group", "site-07")
    assert code == 0 and sorted(result["done"]) == members["site-07"] and result["refused"] == {}
    after = {p["id"]: p for p in served.run(served.target.status)["peers"]}
    rekeyed = {i for i in after if after[i]["rekeys_completed"] == before[i]["rekeys_completed"] + 1}
    assert rekeyed == set(members["site-07"])
    assert all(after[i]["outbound_p3_id"] != before[i]["outbound_p3_id"] for i in rekeyed)
    code, result = ctl(served, capsys, "shutdown", "--group", "site-08")
    assert code == 0 and len(result["done"]) == 100
    _, audit = ctl(served, capsys, "audit", "--limit", "2")
    entries = audit["audit"]  # newest first; the audit request itself is recorded after it answers
    assert [(e["command"], e["args"], e["result"]) for e in entries] == [
        ("shutdown", {"group": "site-08"}, "ok"), ("rekey", {"group": "site-07"}, "ok")]
    assert entries[1]["detail"] == "rekey group site-07: 100 done, 0 refused"
    assert entries[1]["user"] == "root" and entries[1]["role"] == "admin"
