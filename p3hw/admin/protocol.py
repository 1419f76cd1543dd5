"""The admin protocol: versioned request/response frames on a Unix socket.

A frame is a 4-octet big-endian length followed by that many octets of UTF-8
JSON holding one object. A request is ``{"v": 1, "id": N, "cmd": NAME,
"args": {...}}``; its response is ``{"v": 1, "id": N, "ok": true, "result":
{...}}`` or ``{"v": 1, "id": N, "ok": false, "error": {"code", "name",
"detail", "hint"}}``. docs/admin-api.md lists every command and field.

Everything here is pure: the server and p3ctl do the I/O. Every way a request
can be wrong (truncated, too large, not JSON, another version, an unknown
command, a missing or wrongly typed argument) is a ``P3Error`` with reason
``ADMIN_MALFORMED`` (P3-E700), so the server answers it and goes on.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from p3hw.reasons import P3Error

#: The protocol version this code speaks. A request of any other version is refused.
VERSION = 1
#: A request is a command and a few names; 64 KiB is far above any real one.
MAX_REQUEST_BYTES = 64 * 1024
#: A response may hold the status of thousands of sessions.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Strings inside requests (names, addresses, values) stay short.
MAX_STRING_CHARS = 4096
#: Lists inside requests (sessions to add to a group).
MAX_LIST_ITEMS = 10000

_LENGTH = struct.Struct(">I")
HEADER_BYTES = _LENGTH.size

ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {name: rank for rank, name in enumerate(ROLES)}

# Argument types: how the schema below names them.
STR, INT, BOOL, STRLIST = "string", "integer", "boolean", "list of strings"


@dataclass(frozen=True)
class Command:
    """One command: the least role that may run it and its arguments (name -> (type, required))."""

    name: str
    role: str
    args: dict[str, tuple[str, bool]]
    summary: str


_TARGETS = {"session": (STR, False), "group": (STR, False)}

COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("whoami", "viewer", {}, "the caller's user name, uid and role, and the daemon's role"),
    Command("status", "viewer", dict(_TARGETS), "sessions: all, one (session) or a group's members"),
    Command("metrics", "viewer", {}, "the status counters in the Prometheus text format"),
    Command("rekey", "operator", {**_TARGETS, "all": (BOOL, False)}, "force a rekey (spec 2.1.1.1 3)"),
    Command("shutdown", "operator", {**_TARGETS, "all": (BOOL, False)}, "shut sessions down (spec 2.1.1.1 4)"),
    Command("keyarray", "operator", {"op": (STR, True), "regenerate": (BOOL, False), **_TARGETS, "all": (BOOL, False)},
            "generate or flush key arrays (spec 2.1.1.1 3)"),
    Command("group.list", "viewer", {}, "every group with its priority, member count and settings"),
    Command("group.show", "viewer", {"name": (STR, True)}, "one group: settings and members"),
    Command("group.create", "admin", {"name": (STR, True), "priority": (INT, False)}, "create a group"),
    Command("group.delete", "admin", {"name": (STR, True)}, "delete a group (members stay secondaries)"),
    Command("group.add", "admin", {"name": (STR, True), "sessions": (STRLIST, True)}, "add secondaries to a group"),
    Command("group.remove", "admin", {"name": (STR, True), "sessions": (STRLIST, True)},
            "remove secondaries from a group"),
    Command("config.get", "operator", {"key": (STR, False), **_TARGETS},
            "configuration values: the daemon's, a group's settings, or a secondary's effective values"),
    Command("config.set", "admin", {"key": (STR, True), "value": (STR, False), "permanent": (BOOL, False),
                                    **_TARGETS},
            "change a value now; with permanent also in the configuration file; for a group or a secondary "
            "a stored setting (value absent: remove it)"),
    Command("user.list", "admin", {}, "users and their roles"),
    Command("user.add", "admin", {"name": (STR, True), "uid": (INT, True), "role": (STR, True)}, "add a user"),
    Command("user.remove", "admin", {"name": (STR, True)}, "remove a user"),
    Command("user.role", "admin", {"name": (STR, True), "role": (STR, True)}, "change a user's role"),
    Command("enroll.list", "admin", {"all": (BOOL, False)}, "pending enrollments (all: decided ones too)"),
    Command("enroll.approve", "admin", {"id": (INT, True), "remote_id": (INT, False)},
            "approve a pending secondary: remote definition and psk file written, configuration reloaded"),
    Command("enroll.reject", "admin", {"id": (INT, True)}, "reject a pending secondary"),
    Command("audit.list", "admin", {"limit": (INT, False), "command": (STR, False)}, "the audit log, newest first"),
)}


@dataclass(frozen=True)
class Request:
    id: int
    cmd: str
    args: dict[str, Any]


def malformed(detail: str, hint: str = "") -> P3Error:
    return P3Error("ADMIN_MALFORMED", detail, hint or "see docs/admin-api.md")


def frame(message: dict[str, Any]) -> bytes:
    """One frame: length prefix and compact JSON."""
    body = json.dumps(message, separators=(",", ":"), sort_keys=False).encode("utf-8")
    return _LENGTH.pack(len(body)) + body


def frame_length(header: bytes, max_bytes: int) -> int:
    """The body length a header announces; too large is ADMIN_MALFORMED (the stream cannot be resynchronised)."""
    (length,) = _LENGTH.unpack(header)
    if length > max_bytes:
        raise malformed(f"a frame of {length} bytes is larger than the {max_bytes} allowed",
                        "a frame is a 4-octet big-endian length and a JSON object")
    return length


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a frame body."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise malformed(f"the frame is not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise malformed(f"the frame holds a JSON {type(message).__name__}, not an object")
    return message


def _check_type(name: str, value: Any, kind: str) -> None:
    ok: bool
    if kind == STR:
        ok = isinstance(value, str) and len(value) <= MAX_STRING_CHARS
    elif kind == INT:
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2 ** 63) <= value < 2 ** 63
    elif kind == BOOL:
        ok = isinstance(value, bool)
    else:
        ok = (isinstance(value, list) and len(value) <= MAX_LIST_ITEMS
              and all(isinstance(v, str) and len(v) <= MAX_STRING_CHARS for v in value))
    if not ok:
        raise malformed(f"argument {name!r} {_type_problem(value, kind)}")


def _type_problem(value: Any, kind: str) -> str:
    """Why a value is not of its kind: the wrong type, or too long (issue 16: say the real reason)."""
    if kind == STR and isinstance(value, str):
        return f"is {len(value)} characters long; at most {MAX_STRING_CHARS} are accepted"
    if kind == STRLIST and isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            return f"has {len(value)} items; at most {MAX_LIST_ITEMS} are accepted"
        for item in value:
            if isinstance(item, str) and len(item) > MAX_STRING_CHARS:
                return f"holds a string of {len(item)} characters; at most {MAX_STRING_CHARS} are accepted"
    return f"must be a {kind} (got {type(value).__name__})"


def parse_request(message: dict[str, Any]) -> Request:
    """Validate a decoded request against its version and the command's argument schema."""
    request_id = message.get("id", 0)
    if not isinstance(request_id, int) or isinstance(request_id, bool) or not 0 <= request_id < 2 ** 53:
        raise malformed("'id' must be a non-negative integer")
    version = message.get("v")
    if version != VERSION:
        raise malformed(f"protocol version {version!r} is not spoken here (this daemon speaks {VERSION})",
                        "use a p3ctl of the same release as the daemon")
    cmd = message.get("cmd")
    if not isinstance(cmd, str):
        raise malformed("'cmd' must be a string")
    command = COMMANDS.get(cmd)
    if command is None:
        raise malformed(f"unknown command {cmd[:64]!r}", "see docs/admin-api.md for the commands")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise malformed("'args' must be an object")
    for name, value in args.items():
        if name not in command.args:
            raise malformed(f"command {cmd!r} takes no argument {name[:64]!r}")
        if value is not None:
            _check_type(name, value, command.args[name][0])
    for name, (_kind, required) in command.args.items():
        if required and args.get(name) is None:
            raise malformed(f"command {cmd!r} needs argument {name!r}")
    return Request(request_id, cmd, {k: v for k, v in args.items() if v is not None})


def request(cmd: str, args: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {"v": VERSION, "id": request_id, "cmd": cmd, "args": args or {}}


def ok_response(request_id: int, result: dict[str, Any]) -> dict[str, Any]:
    return {"v": VERSION, "id": request_id, "ok": True, "result": result}


def error_response(request_id: int, error: P3Error) -> dict[str, Any]:
    return {"v": VERSION, "id": request_id, "ok": False,
            "error": {"code": error.code, "name": error.reason.name, "detail": error.detail, "hint": error.hint}}
