"""The admin store when it cannot be written, and admin requests refused for the real reason (issue 16)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from p3hw.admin import protocol
from p3hw.admin.store import Store
from p3hw.reasons import P3Error


def read_only(store: Store, on: bool) -> None:
    """SQLite's own switch: every write fails as on a read-only file system."""
    store.db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


def test_audit_on_an_unwritable_store_is_logged_once_and_written_later(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(str(tmp_path / "admin.db"))
    store.audit(0, "root", "admin", "status", {}, "ok")
    read_only(store, True)
    with caplog.at_level(logging.INFO, logger="p3hw.admin"):
        for n in range(20):
            store.audit(0, "root", "admin", "status", {"n": n}, "ok")  # never raises
        read_only(store, False)
        store.audit(0, "root", "admin", "rekey", {}, "ok")
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if line.startswith("P3-E707 ")]) == 1, lines
    assert any("written again after 20 failed attempt(s)" in line for line in lines), lines
    commands = [(e["command"], e["args"].get("n")) for e in reversed(store.audit_log(limit=100))]
    assert commands == [("status", None)] + [("status", n) for n in range(20)] + [("rekey", None)]


def test_secondaries_sync_on_an_unwritable_store_does_not_raise(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(str(tmp_path / "admin.db"))
    read_only(store, True)
    peers = [{"id": 1, "address": "192.0.2.1", "subnets": ["10.1.0.0/16"]}]
    with caplog.at_level(logging.INFO, logger="p3hw.admin"):
        store.sync_secondaries(peers)
        store.sync_secondaries(peers)
    assert [r.getMessage()[:7] for r in caplog.records] == ["P3-E707"]
    read_only(store, False)
    store.sync_secondaries(peers)
    assert store.secondary_ids() == {1}


def test_a_string_argument_over_the_limit_is_refused_as_too_long() -> None:
    long_value = "9" * (protocol.MAX_STRING_CHARS + 1)
    with pytest.raises(P3Error) as caught:
        protocol.parse_request(protocol.request("config.set", {"key": "rekey_wait", "value": long_value}))
    assert caught.value.code == "P3-E700"
    assert f"{protocol.MAX_STRING_CHARS + 1} characters long" in caught.value.detail
    assert "got str" not in caught.value.detail


def test_an_argument_of_the_wrong_type_still_says_so() -> None:
    with pytest.raises(P3Error) as caught:
        protocol.parse_request(protocol.request("config.set", {"key": 5, "value": "1"}))
    assert "must be a string (got int)" in caught.value.detail
