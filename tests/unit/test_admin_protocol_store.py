"""The admin frame codec, request validation, the store's migrations and precedence, and config file edits."""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p3hw.admin import configfile, protocol
from p3hw.admin.store import MIGRATIONS, Store
from p3hw.config import ConfigErrors
from p3hw.reasons import P3Error

# ------------------------------------------------------------------ protocol


def test_frame_round_trip() -> None:
    message = protocol.request("status", {"group": "north"}, request_id=9)
    data = protocol.frame(message)
    length = protocol.frame_length(data[:4], protocol.MAX_REQUEST_BYTES)
    request = protocol.parse_request(protocol.decode_body(data[4:4 + length]))
    assert (request.id, request.cmd, request.args) == (9, "status", {"group": "north"})


def test_frame_larger_than_allowed_is_refused_before_reading_it() -> None:
    with pytest.raises(P3Error) as caught:
        protocol.frame_length(struct.pack(">I", protocol.MAX_REQUEST_BYTES + 1), protocol.MAX_REQUEST_BYTES)
    assert caught.value.code == "P3-E700"


def test_every_command_in_the_schema_has_a_known_role() -> None:
    assert all(c.role in protocol.ROLES for c in protocol.COMMANDS.values())
    assert protocol.COMMANDS["status"].role == "viewer"
    assert protocol.COMMANDS["rekey"].role == "operator"
    assert protocol.COMMANDS["user.add"].role == "admin"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(cmd=st.sampled_from(sorted(protocol.COMMANDS)) | st.text(max_size=10),
       args=st.dictionaries(st.sampled_from(["session", "group", "name", "uid", "role", "sessions", "key", "value",
                                             "permanent", "op", "id", "all", "limit"]) | st.text(max_size=6),
                            json_values, max_size=4),
       version=st.sampled_from([1, 1, 1, 2, None, "1"]))
def test_any_json_request_is_accepted_or_refused_with_p3_e700(cmd: str, args: dict, version: object) -> None:
    body = json.dumps({"v": version, "id": 3, "cmd": cmd, "args": args}).encode()
    try:
        request = protocol.parse_request(protocol.decode_body(body))
    except P3Error as error:
        assert error.code == "P3-E700"
        return
    command = protocol.COMMANDS[request.cmd]
    assert set(request.args) <= set(command.args)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_are_refused_with_p3_e700(data: bytes) -> None:
    try:
        protocol.decode_body(data)
    except P3Error as error:
        assert error.code == "P3-E700"


# ------------------------------------------------------------------ store


def test_new_store_is_at_the_latest_schema_and_reopens(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    store.create_group("g")
    store.close()
    again = Store(path)
    assert again.schema_version == len(MIGRATIONS)
    assert [g["name"] for g in again.list_groups()] == ["g"]


def test_store_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "b.db")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(P3Error) as caught:
        Store(path)
    assert caught.value.code == "P3-E707"


def test_store_in_an_unusable_place_gets_p3_e707(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(P3Error) as caught:
        Store(str(blocker / "admin.db"))
    assert caught.value.code == "P3-E707"


def test_settings_precedence_priority_then_name_then_override(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "c.db"))
    store.sync_secondaries([{"id": 2, "address": "192.0.2.2", "subnets": []}])
    for name, priority in (("b", 100), ("a", 100), ("low", 1)):
        store.create_group(name, priority)
        store.add_members(name, [2])
        store.set_group_setting(name, "rekey_wait", f"{priority}{name}")
    store.set_group_setting("low", "heartbeat_time", "30")
    assert store.groups_of(2) == ["low", "a", "b"]
    settings = store.stored_settings(2)
    assert settings["rekey_wait"] == ("100b", "group b")
    assert settings["heartbeat_time"] == ("30", "group low")
    store.set_override(2, "rekey_wait", "5")
    assert store.stored_settings(2)["rekey_wait"] == ("5", "override")


def test_pending_enrollment_from_the_same_address_is_refreshed_not_queued_twice(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "d.db"))
    first = store.add_enrollment("192.0.2.9", 4, ["10.9.0.0/24"])
    second = store.add_enrollment("192.0.2.9", 4, ["10.9.0.0/24", "10.10.0.0/24"])
    assert first == second
    assert store.list_enrollments()[0]["subnets"] == ["10.9.0.0/24", "10.10.0.0/24"]


# ------------------------------------------------------------------ configuration file edits

CONFIG = """# site A
localstart
role = primary   # the hub
ip 4
address = 192.0.2.1
rekey_wait=3600
localend

# branch office
2/ip = 4
2/address = 192.0.2.2
2/subnet1 = 10.2.0.0
2/mask1 = 255.255.0.0
"""


def test_set_value_keeps_style_and_trailing_comment() -> None:
    text = configfile.set_value(CONFIG, "role", "primary")
    assert text == CONFIG
    text = configfile.set_value(CONFIG, "ip", "6")
    assert "ip 6\n" in text and text.count("\n") == CONFIG.count("\n")
    text = configfile.set_value(CONFIG, "rekey_wait", "60")
    assert "rekey_wait=60\n" in text


def test_set_value_adds_missing_keywords_where_they_belong() -> None:
    lines = configfile.set_value(CONFIG, "heartbeat_time", "30").splitlines()
    assert lines[lines.index("localend") - 1] == "heartbeat_time = 30"
    lines = configfile.set_value(CONFIG, "2/rekey_wait", "90").splitlines()
    assert lines[-1] == "2/rekey_wait = 90"


def test_set_value_refuses_line_breaks_and_comments() -> None:
    for value in ("1\nrole = secondary", "5 # sneaky"):
        with pytest.raises(ValueError):
            configfile.set_value(CONFIG, "rekey_wait", value)


def test_edit_validates_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "p.conf"
    path.write_text(CONFIG)
    path.chmod(0o640)
    with pytest.raises(ConfigErrors):
        configfile.edit(str(path), "primary", "2/mask1", "255.0.255.0")
    assert path.read_text() == CONFIG
    config = configfile.edit(str(path), "primary", "2/mask1", "255.255.255.0")
    assert str(config.remote(2).subnets[0]) == "10.2.0.0/24"
    assert "2/mask1 = 255.255.255.0" in path.read_text() and path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["p.conf"]  # no temporary file left behind


def test_audit_log_is_pruned_to_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from p3hw.admin import store as store_module

    monkeypatch.setattr(store_module, "AUDIT_KEEP", 50)
    monkeypatch.setattr(store_module, "AUDIT_PRUNE_EVERY", 20)
    store = Store(str(tmp_path / "e.db"))
    for n in range(120):
        store.audit(0, "root", "admin", "status", {"n": n}, "ok")
    kept = store.audit_log(limit=1000)
    assert kept[0]["args"] == {"n": 119}
    assert 50 <= len(kept) < 70  # pruned at record 100: ids 1..50 gone
