"""The admin store: SQLite holding secondaries, groups, settings, users, enrollments and the audit log.

The schema is versioned with ``PRAGMA user_version``: :data:`MIGRATIONS` is
an append-only list, and opening a store applies every step the file has not
seen yet, in one transaction each. A store written by a newer p3hw (a higher
version than this code knows) is refused rather than guessed at.

Settings precedence for one secondary (docs/admin.md):
configuration file (local value, then the ``N/keyword`` remote line) <
groups, lowest priority first (equal priorities: group name order) <
the secondary's own override. The last one wins.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from p3hw.fsutil import FailureLog
from p3hw.reasons import P3Error

log = logging.getLogger("p3hw.admin")

#: Where the primary keeps its store when the configuration names none.
DEFAULT_STORE_PATH = "/var/lib/p3hw/admin.db"
DEFAULT_GROUP_PRIORITY = 100
#: Audit records kept: older ones are dropped (rotation), so the table stays bounded whatever is sent to the
#: socket. A record is at most about 5 KB (arguments 4096 characters, detail 1024), typically 200 bytes.
AUDIT_KEEP = 100_000
#: Pruning runs once per this many records written.
AUDIT_PRUNE_EVERY = 1000
#: Audit records kept in memory while the store cannot be written; written when it can again.
AUDIT_PENDING_MAX = 1000
#: Characters of a request's arguments (JSON) and of the detail kept in its audit record.
AUDIT_ARGS_CHARS = 4096
AUDIT_DETAIL_CHARS = 1024
#: The most records one audit.list returns.
AUDIT_LIST_MAX = 100_000
#: Enrollment states.
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE secondaries (
        id INTEGER PRIMARY KEY,            -- the remote id of the configuration (N/...)
        address TEXT NOT NULL,
        subnets TEXT NOT NULL DEFAULT '[]',
        first_seen TEXT NOT NULL
    );
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
        priority INTEGER NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE group_settings (
        group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
        keyword TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (group_name, keyword)
    );
    CREATE TABLE memberships (
        group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
        secondary_id INTEGER NOT NULL REFERENCES secondaries(id) ON DELETE CASCADE,
        PRIMARY KEY (group_name, secondary_id)
    );
    CREATE TABLE overrides (
        secondary_id INTEGER NOT NULL REFERENCES secondaries(id) ON DELETE CASCADE,
        keyword TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (secondary_id, keyword)
    );
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        uid INTEGER NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        created TEXT NOT NULL
    );
    CREATE TABLE enrollments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address TEXT NOT NULL,
        ip INTEGER NOT NULL,
        subnets TEXT NOT NULL,
        requested TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
        decided TEXT,
        decided_by TEXT,
        remote_id INTEGER
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        uid INTEGER,
        user TEXT NOT NULL,
        role TEXT,
        command TEXT NOT NULL,
        args TEXT NOT NULL,
        result TEXT NOT NULL,              -- 'ok' or a reason code
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_command ON audit(command);
    """,
)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _store_error(detail: str, path: str) -> P3Error:
    return P3Error("ADMIN_STORE", f"{path}: {detail}", "check the store path, its directory and free space")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    role: str


class Store:
    """One SQLite file; every method is one short transaction."""

    def __init__(self, path: str) -> None:
        self.path = path
        #: a full or read-only store: logged once, not once per request (issue 16)
        self.write_failures = FailureLog(log, f"admin store {path}")
        self._pending_audit: list[tuple[Any, ...]] = []
        try:
            if path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:":
                os.chmod(path, 0o600)  # holds the user list and the audit log
                self.db.execute("PRAGMA journal_mode = WAL")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise _store_error(str(exc), path) from None

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise _store_error(f"schema version {current} is newer than this p3hw knows ({len(MIGRATIONS)})", self.path)
        for version in range(current + 1, len(MIGRATIONS) + 1):
            # executescript commits first; the version bump is inside the script, so a crash leaves the old version.
            self.db.executescript(f"BEGIN; {MIGRATIONS[version - 1]}; PRAGMA user_version = {version}; COMMIT;")

    def close(self) -> None:
        self.db.close()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise _store_error(str(exc), self.path) from None

    # ---------------------------------------------------------------- secondaries

    def sync_secondaries(self, peers: list[dict[str, Any]]) -> None:
        """Record every remote the daemon knows (status peers: id, address, subnets)."""
        now = utc_now()
        try:
            self._run("BEGIN")
            try:
                for peer in peers:
                    self.db.execute(
                        "INSERT INTO secondaries (id, address, subnets, first_seen) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET address = excluded.address, subnets = excluded.subnets",
                        (int(peer["id"]), str(peer["address"]), json.dumps(list(peer.get("subnets", []))), now))
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:  # full or read-only: the daemon serves on, the next sync writes them
            self.write_failures.failed(_store_error(str(exc), self.path))
        except P3Error as error:
            self.write_failures.failed(error)

    def secondary_ids(self) -> set[int]:
        return {int(r[0]) for r in self._run("SELECT id FROM secondaries")}

    # ---------------------------------------------------------------- groups

    def create_group(self, name: str, priority: int = DEFAULT_GROUP_PRIORITY) -> None:
        try:
            self._run("INSERT INTO groups (name, priority, created) VALUES (?, ?, ?)", (name, priority, utc_now()))
        except sqlite3.IntegrityError:
            raise P3Error("ADMIN_EXISTS", f"group {name!r} exists already") from None

    def _require_group(self, name: str) -> sqlite3.Row:
        row = self._run("SELECT name, priority, created FROM groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise P3Error("ADMIN_NOT_FOUND", f"no group {name!r}", "p3ctl group list")
        return row

    def delete_group(self, name: str) -> None:
        self._require_group(name)
        self._run("DELETE FROM groups WHERE name = ?", (name,))

    def add_members(self, name: str, secondary_ids: list[int]) -> int:
        """Add members; returns how many were not members yet."""
        self._require_group(name)
        before = len(self.members(name))
        self._run("BEGIN")
        try:
            self.db.executemany("INSERT OR IGNORE INTO memberships (group_name, secondary_id) VALUES (?, ?)",
                                [(name, i) for i in secondary_ids])
            self.db.execute("COMMIT")
        except sqlite3.IntegrityError:
            self.db.execute("ROLLBACK")
            raise P3Error("ADMIN_NOT_FOUND", "a secondary named is not known to the daemon") from None
        return len(self.members(name)) - before

    def remove_members(self, name: str, secondary_ids: list[int]) -> int:
        self._require_group(name)
        before = len(self.members(name))
        self.db.executemany("DELETE FROM memberships WHERE group_name = ? AND secondary_id = ?",
                            [(name, i) for i in secondary_ids])
        return before - len(self.members(name))

    def members(self, name: str) -> list[int]:
        self._require_group(name)
        return [int(r[0]) for r in self._run(
            "SELECT secondary_id FROM memberships WHERE group_name = ? ORDER BY secondary_id", (name,))]

    def groups_of(self, secondary_id: int) -> list[str]:
        """The secondary's groups in precedence order: the last one wins."""
        return [r[0] for r in self._run(
            "SELECT g.name FROM groups g JOIN memberships m ON m.group_name = g.name WHERE m.secondary_id = ? "
            "ORDER BY g.priority, g.name", (secondary_id,))]

    def groups_by_secondary(self) -> dict[int, list[str]]:
        """Every member's groups, in precedence order, in one query (status of a whole fleet)."""
        result: dict[int, list[str]] = {}
        for secondary_id, name in self._run(
                "SELECT m.secondary_id, g.name FROM memberships m JOIN groups g ON m.group_name = g.name "
                "ORDER BY g.priority, g.name"):
            result.setdefault(int(secondary_id), []).append(name)
        return result

    def list_groups(self) -> list[dict[str, Any]]:
        rows = self._run(
            "SELECT g.name, g.priority, g.created, (SELECT COUNT(*) FROM memberships m WHERE m.group_name = g.name) "
            "FROM groups g ORDER BY g.priority, g.name").fetchall()
        return [{"name": r[0], "priority": r[1], "created": r[2], "members": r[3],
                 "settings": self.group_settings(r[0])} for r in rows]

    def show_group(self, name: str) -> dict[str, Any]:
        row = self._require_group(name)
        return {"name": row["name"], "priority": row["priority"], "created": row["created"],
                "settings": self.group_settings(name), "members": self.members(name)}

    def group_settings(self, name: str) -> dict[str, str]:
        return {r[0]: r[1] for r in self._run(
            "SELECT keyword, value FROM group_settings WHERE group_name = ? ORDER BY keyword", (name,))}

    def set_group_setting(self, name: str, keyword: str, value: str | None) -> None:
        self._require_group(name)
        if value is None:
            self._run("DELETE FROM group_settings WHERE group_name = ? AND keyword = ?", (name, keyword))
        else:
            self._run("INSERT INTO group_settings (group_name, keyword, value) VALUES (?, ?, ?) "
                      "ON CONFLICT DO UPDATE SET value = excluded.value", (name, keyword, value))

    # ---------------------------------------------------------------- per-secondary overrides

    def overrides(self, secondary_id: int) -> dict[str, str]:
        return {r[0]: r[1] for r in self._run(
            "SELECT keyword, value FROM overrides WHERE secondary_id = ? ORDER BY keyword", (secondary_id,))}

    def set_override(self, secondary_id: int, keyword: str, value: str | None) -> None:
        if value is None:
            self._run("DELETE FROM overrides WHERE secondary_id = ? AND keyword = ?", (secondary_id, keyword))
            return
        try:
            self._run("INSERT INTO overrides (secondary_id, keyword, value) VALUES (?, ?, ?) "
                      "ON CONFLICT DO UPDATE SET value = excluded.value", (secondary_id, keyword, value))
        except sqlite3.IntegrityError:
            raise P3Error("ADMIN_NOT_FOUND", f"secondary {secondary_id} is not known to the daemon") from None

    def stored_settings(self, secondary_id: int) -> dict[str, tuple[str, str]]:
        """keyword -> (value, origin) from the store alone: groups in precedence order, then the override."""
        settings: dict[str, tuple[str, str]] = {}
        for group in self.groups_of(secondary_id):
            for keyword, value in self.group_settings(group).items():
                settings[keyword] = (value, f"group {group}")
        for keyword, value in self.overrides(secondary_id).items():
            settings[keyword] = (value, "override")
        return settings

    # ---------------------------------------------------------------- users

    def add_user(self, name: str, uid: int, role: str) -> None:
        try:
            self._run("INSERT INTO users (name, uid, role, created) VALUES (?, ?, ?, ?)", (name, uid, role, utc_now()))
        except sqlite3.IntegrityError:
            raise P3Error("ADMIN_EXISTS", f"a user named {name!r} or with uid {uid} exists already",
                          "p3ctl user list") from None

    def remove_user(self, name: str) -> None:
        if self._run("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
            raise P3Error("ADMIN_NOT_FOUND", f"no user {name!r}", "p3ctl user list")

    def set_role(self, name: str, role: str) -> None:
        if self._run("UPDATE users SET role = ? WHERE name = ?", (role, name)).rowcount == 0:
            raise P3Error("ADMIN_NOT_FOUND", f"no user {name!r}", "p3ctl user list")

    def user_by_uid(self, uid: int) -> User | None:
        row = self._run("SELECT name, uid, role FROM users WHERE uid = ?", (uid,)).fetchone()
        return None if row is None else User(row[0], int(row[1]), row[2])

    def list_users(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._run("SELECT name, uid, role, created FROM users ORDER BY name")]

    # ---------------------------------------------------------------- enrollments

    def add_enrollment(self, address: str, ip: int, subnets: list[str]) -> int:
        """A secondary without credentials presented itself (spec 2.1.1.1 1); held as pending.

        A second request from the same address while one is pending refreshes it instead of queueing twice.
        """
        row = self._run("SELECT id FROM enrollments WHERE address = ? AND state = ?", (address, PENDING)).fetchone()
        if row is not None:
            self._run("UPDATE enrollments SET ip = ?, subnets = ?, requested = ? WHERE id = ?",
                      (ip, json.dumps(subnets), utc_now(), row[0]))
            return int(row[0])
        cursor = self._run("INSERT INTO enrollments (address, ip, subnets, requested, state) VALUES (?, ?, ?, ?, ?)",
                           (address, ip, json.dumps(subnets), utc_now(), PENDING))
        return int(cursor.lastrowid or 0)

    def enrollment(self, enrollment_id: int) -> dict[str, Any]:
        row = self._run("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,)).fetchone()
        if row is None:
            raise P3Error("ADMIN_NOT_FOUND", f"no enrollment {enrollment_id}", "p3ctl enroll list")
        entry = dict(row)
        entry["subnets"] = json.loads(entry["subnets"])
        return entry

    def pending_enrollment(self, address: str) -> dict[str, Any] | None:
        row = self._run("SELECT id FROM enrollments WHERE address = ? AND state = ?", (address, PENDING)).fetchone()
        return None if row is None else self.enrollment(int(row[0]))

    def list_enrollments(self, include_decided: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT id FROM enrollments" + ("" if include_decided else " WHERE state = 'pending'") + " ORDER BY id"
        return [self.enrollment(int(r[0])) for r in self._run(sql)]

    def decide_enrollment(self, enrollment_id: int, state: str, by: str, remote_id: int | None = None) -> None:
        entry = self.enrollment(enrollment_id)
        if entry["state"] != PENDING:
            raise P3Error("ADMIN_NOT_FOUND", f"enrollment {enrollment_id} is {entry['state']}, not pending",
                          "p3ctl enroll list")
        self._run("UPDATE enrollments SET state = ?, decided = ?, decided_by = ?, remote_id = ? WHERE id = ?",
                  (state, utc_now(), by, remote_id, enrollment_id))

    # ---------------------------------------------------------------- audit

    def audit(self, uid: int | None, user: str, role: str | None, command: str, args: dict[str, Any],
              result: str, detail: str = "", args_chars: int = AUDIT_ARGS_CHARS) -> int | None:
        """Write one audit record; its id, or None while the store cannot be written (the record waits).

        Arguments that do not fit *args_chars* are cut (and still JSON)."""
        text = json.dumps(args, sort_keys=True)
        if len(text) > args_chars:
            text = json.dumps({"truncated": text[:max(0, args_chars - 32)]})
        newest = self._write_audit((utc_now(), uid, user, role, command, text, result, detail[:AUDIT_DETAIL_CHARS]))
        if newest is None:
            return None
        if newest % AUDIT_PRUNE_EVERY == 0:
            try:
                self._run("DELETE FROM audit WHERE id <= ?", (newest - AUDIT_KEEP,))
            except P3Error as error:  # pruned with a later record
                self.write_failures.failed(error)
        return newest

    def _write_audit(self, record: tuple[Any, ...]) -> int | None:
        """Write the record (and any held back); its id, or None when the store cannot be written now.

        A full or read-only store is logged once, not per request; records wait in memory (the
        newest AUDIT_PENDING_MAX) and are written with the first record that gets through.
        """
        self._pending_audit.append(record)
        del self._pending_audit[:-AUDIT_PENDING_MAX]
        newest = None
        try:
            while self._pending_audit:
                newest = int(self._run("INSERT INTO audit (at, uid, user, role, command, args, result, detail) "
                                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._pending_audit[0]).lastrowid or 0)
                self._pending_audit.pop(0)
        except P3Error as error:
            self.write_failures.failed(error)
            return None
        self.write_failures.succeeded()
        return newest

    def audit_set_detail(self, record_id: int, detail: str) -> None:
        """Rewrite one record's detail (the running count of a refusal summary)."""
        try:
            self._run("UPDATE audit SET detail = ? WHERE id = ?", (detail[:AUDIT_DETAIL_CHARS], record_id))
        except P3Error as error:  # a full store: the summary catches up with a later update
            self.write_failures.failed(error)

    def audit_log(self, limit: int = 100, command: str | None = None) -> list[dict[str, Any]]:
        if not 1 <= limit <= AUDIT_LIST_MAX:
            raise P3Error("ADMIN_OUT_OF_RANGE", f"audit limit {limit} is outside 1..{AUDIT_LIST_MAX}",
                          f"p3ctl audit --limit N with N from 1 to {AUDIT_LIST_MAX}")
        if command is None:
            rows = self._run("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._run("SELECT * FROM audit WHERE command = ? ORDER BY id DESC LIMIT ?", (command, limit))
        out = []
        for row in rows:
            entry = dict(row)
            entry["args"] = json.loads(entry["args"])
            out.append(entry)
        return out
