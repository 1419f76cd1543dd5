"""``p3ctl``: the administration console of a running p3hw daemon (spec §2.1.1).

Talks to the daemon's admin socket (docs/admin-api.md). Human tables by
default, ``--json`` for scripts (the response's ``result`` object, or
``{"error": {...}}``). Exit codes scripts can rely on:

  0  done
  1  the daemon refused or failed the command (the message has the reason code)
  2  wrong arguments (also a number out of its range, P3-E709)
  3  the daemon cannot be reached (P3-E704)
  4  the caller's role does not allow the command (P3-E701)
  5  the session, group, user or enrollment does not exist (P3-E702)
  6  done for some sessions, refused for others
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

from p3hw.admin import protocol
from p3hw.config import DEFAULT_ADMIN_SOCKET
from p3hw.reasons import P3Error

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_DENIED, EXIT_NOT_FOUND, EXIT_PARTIAL = range(7)
_EXIT_BY_CODE = {"P3-E704": EXIT_UNREACHABLE, "P3-E701": EXIT_DENIED, "P3-E702": EXIT_NOT_FOUND,
                 "P3-E122": EXIT_USAGE, "P3-E709": EXIT_USAGE}
#: How long p3ctl waits for an answer (a group rekey of a large fleet answers at once; the rekeys run after).
TIMEOUT_S = 60.0
SOCKET_ENV = "P3CTL_SOCKET"


# ------------------------------------------------------------------ client

def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise P3Error("ADMIN_UNREACHABLE", "the daemon closed the connection before answering",
                          "see the daemon's log")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def call(socket_path: str, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Send one request; the response object (ok or not). P3Error ADMIN_UNREACHABLE when there is no daemon."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(socket_path)
        except OSError as exc:
            raise P3Error("ADMIN_UNREACHABLE", f"cannot connect to {socket_path}: {exc.strerror or exc}",
                          "is the daemon running? is admin_socket the same? (p3ctl --socket PATH)") from None
        try:
            sock.sendall(protocol.frame(protocol.request(cmd, {k: v for k, v in (args or {}).items()
                                                               if v is not None})))
            length = protocol.frame_length(_recv_exactly(sock, protocol.HEADER_BYTES), protocol.MAX_RESPONSE_BYTES)
            return protocol.decode_body(_recv_exactly(sock, length))
        except OSError as exc:
            raise P3Error("ADMIN_UNREACHABLE", f"{socket_path}: {exc.strerror or exc}", "see the daemon's log") from None
    finally:
        sock.close()


# ------------------------------------------------------------------ human output

def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Rows as an aligned text table; columns are (heading, key)."""
    cells = [[heading for heading, _ in columns]] + [[_cell(row.get(key)) for _, key in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


#: Status columns: always these, then the optional ones the daemon reports (docs/admin-api.md).
_STATUS_COLUMNS = [("ID", "id"), ("ADDRESS", "address"), ("STATE", "state"), ("SINCE_S", "since_s"),
                   ("SUBNETS", "subnets"), ("OUTER", "outer"), ("P3_ID_OUT", "outbound_p3_id"),
                   ("REKEYS", "rekeys_completed"), ("GROUPS", "groups")]
_OPTIONAL_STATUS_COLUMNS = [("KEY", "key_type"), ("KEY_SOURCE", "key_source"), ("P3_ID_IN", "inbound_p3_id"),
                            ("PKTS_IN", "packets_in"), ("PKTS_OUT", "packets_out"), ("BYTES_IN", "bytes_in"),
                            ("BYTES_OUT", "bytes_out"), ("LAST_REKEY_S", "last_rekey_s"),
                            ("NEXT_REKEY_S", "next_rekey_s"), ("RTT_MS", "heartbeat_rtt_ms"), ("LOSSES", "losses")]


def _show_status(result: dict[str, Any]) -> str:
    peers = result.get("peers", [])
    columns = list(_STATUS_COLUMNS) + [c for c in _OPTIONAL_STATUS_COLUMNS if any(c[1] in p for p in peers)]
    version = f", p3hw {result['version']}" if result.get("version") else ""
    lines = [f"{result.get('role')} {result.get('address')} (pid {result.get('pid')}{version}): {result.get('summary')}"]
    lines.append(table(peers, columns))
    dataplane = result.get("dataplane")
    if dataplane:
        drops = ", ".join(f"{k} {v}" for k, v in sorted((dataplane.get("drops") or {}).items()) if v) or "none"
        lines.append(f"dataplane: sealed {dataplane.get('sealed_packets')}, opened {dataplane.get('opened_packets')}, "
                     f"control {dataplane.get('control_packets')}; drops: {drops}")
    io, worker = result.get("io"), result.get("worker") or {}
    if io and io.get("backend") == "dpdk":
        # DPDK ports have no kernel counters to look at: the link layer's are here (docs/dpdk.md).
        lines.append(f"io: DPDK ports {io.get('lan_port')} (LAN {io.get('lan_address')}) and {io.get('wan_port')} "
                     f"(WAN), {io.get('workers')} worker(s); link replies {worker.get('link_replies', 0)}, "
                     f"link drops {worker.get('link_drops', 0)}, neighbour drops {worker.get('neighbour_drops', 0)}, "
                     f"tx full {worker.get('tx_full_drops', 0)}, hand-offs {worker.get('handoffs', 0)} "
                     f"(dropped {worker.get('handoff_drops', 0)})")
    elif io:
        lines.append(f"io: kernel, interface {io.get('interface')}, transport {io.get('transport')}, "
                     f"UDP port {io.get('udp_port')}")
    return "\n".join(lines)


def _show_action(result: dict[str, Any]) -> str:
    lines = [result.get("summary", "done")]
    for peer_id, why in sorted((result.get("refused") or {}).items()):
        lines.append(f"  session {peer_id}: {why}")
    return "\n".join(lines)


def _show(cmd: str, result: dict[str, Any]) -> str:
    if cmd == "status":
        return _show_status(result)
    if cmd == "metrics":
        return str(result.get("text", "")).rstrip("\n")
    if cmd in ("rekey", "shutdown", "keyarray"):
        return _show_action(result)
    if cmd == "whoami":
        return (f"{result['user']} (uid {result['uid']}) is {result['role']} on the {result['daemon_role']}; "
                f"protocol {result['protocol']}, store schema {result['store_schema']}")
    if cmd == "group.list":
        rows = [{**g, "settings": [f"{k}={v}" for k, v in g["settings"].items()]} for g in result["groups"]]
        return table(rows, [("GROUP", "name"), ("PRIORITY", "priority"), ("MEMBERS", "members"),
                            ("SETTINGS", "settings"), ("CREATED", "created")])
    if cmd == "group.show":
        g = result["group"]
        settings = ", ".join(f"{k} = {v}" for k, v in g["settings"].items()) or "none"
        return (f"group {g['name']} (priority {g['priority']}, created {g['created']})\n"
                f"settings: {settings}\nmembers ({len(g['members'])}): {_cell(g['members'])}")
    if cmd == "user.list":
        return table(result["users"], [("USER", "name"), ("UID", "uid"), ("ROLE", "role"), ("CREATED", "created")]) \
            + f"\n({result['builtin']})"
    if cmd == "enroll.list":
        return table(result["enrollments"], [("ID", "id"), ("ADDRESS", "address"), ("IP", "ip"),
                                             ("SUBNETS", "subnets"), ("REQUESTED", "requested"), ("STATE", "state"),
                                             ("REMOTE", "remote_id"), ("BY", "decided_by")])
    if cmd == "enroll.approve":
        return f"{result['summary']}\npsk file: {result['psk_file']} (copy it to the secondary over a trusted channel)"
    if cmd == "audit.list":
        rows = [{**e, "args": json.dumps(e["args"], sort_keys=True)} for e in result["audit"]]
        return table(rows, [("ID", "id"), ("AT", "at"), ("USER", "user"), ("UID", "uid"), ("ROLE", "role"),
                            ("COMMAND", "command"), ("ARGS", "args"), ("RESULT", "result"), ("DETAIL", "detail")])
    if cmd == "config.get":
        if "key" in result:
            line = f" (line {result['line']})" if result.get("line") else ""
            return f"{result['key']} = {_cell(result.get('value'))}    # {result.get('source')}{line}"
        if "group" in result:
            return "\n".join(f"{k} = {v}" for k, v in result["settings"].items()) or "(no settings)"
        if "session" in result:
            lines = []
            for k, v in result["values"].items():
                if isinstance(v, list):
                    lines.append(f"{k} = {_cell([s['value'] for s in v])}")
                    continue
                shown = v.get("stored", v.get("value"))
                origin = v.get("stored_origin") or v.get("source")
                lines.append(f"{k} = {_cell(shown)}    # {origin}")
            return "\n".join(lines)
        return "\n".join(f"{k} = {_cell(v['value'])}    # {v['source']}" for k, v in result["local"].items())
    return str(result.get("summary", "done"))


# ------------------------------------------------------------------ arguments

def _targets(p: argparse.ArgumentParser, need: bool) -> None:
    p.add_argument("session", nargs="?", help="remote id or peer address")
    p.add_argument("--group", "-g", help="every member of this group")
    if need:
        p.add_argument("--all", action="store_true", help="every session")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p3ctl", description="Administer a running p3hw daemon.")
    parser.add_argument("--socket", "-s", default=os.environ.get(SOCKET_ENV, DEFAULT_ADMIN_SOCKET),
                        help=f"the daemon's admin socket (default ${SOCKET_ENV} or {DEFAULT_ADMIN_SOCKET})")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("whoami", help="who the daemon thinks you are")
    _targets(sub.add_parser("status", help="sessions: all, one, or a group"), need=False)
    sub.add_parser("metrics", help="the counters in the Prometheus text format")
    _targets(sub.add_parser("rekey", help="force a rekey now"), need=True)
    _targets(sub.add_parser("shutdown", help="shut sessions down"), need=True)
    ka = sub.add_parser("keyarray", help="generate or flush key arrays")
    ka.add_argument("op", choices=("generate", "flush"))
    ka.add_argument("--regenerate", action="store_true", help="flush: generate a new array at once")
    _targets(ka, need=True)

    group = sub.add_parser("group", help="groups of secondaries").add_subparsers(dest="action", required=True)
    g = group.add_parser("create")
    g.add_argument("name")
    g.add_argument("--priority", type=int, help="higher wins when a secondary's groups disagree (default 100)")
    group.add_parser("delete").add_argument("name")
    for action in ("add", "remove"):
        g = group.add_parser(action)
        g.add_argument("name")
        g.add_argument("sessions", nargs="+", metavar="SESSION")
    group.add_parser("list")
    group.add_parser("show").add_argument("name")

    config = sub.add_parser("config", help="configuration values").add_subparsers(dest="action", required=True)
    c = config.add_parser("get")
    c.add_argument("key", nargs="?")
    c_scope = c.add_mutually_exclusive_group()
    c_scope.add_argument("--group", "-g")
    c_scope.add_argument("--session")
    c = config.add_parser("set")
    c.add_argument("key")
    c.add_argument("value", nargs="?")
    c.add_argument("--permanent", action="store_true", help="also write it to the configuration file")
    c.add_argument("--unset", action="store_true", help="remove a group or secondary setting")
    c_scope = c.add_mutually_exclusive_group()
    c_scope.add_argument("--group", "-g")
    c_scope.add_argument("--session")

    user = sub.add_parser("user", help="users and roles").add_subparsers(dest="action", required=True)
    u = user.add_parser("add")
    u.add_argument("name")
    u.add_argument("--uid", type=int, required=True)
    u.add_argument("--role", choices=protocol.ROLES, required=True)
    user.add_parser("remove").add_argument("name")
    user.add_parser("list")
    u = user.add_parser("role")
    u.add_argument("name")
    u.add_argument("role", choices=protocol.ROLES)

    enroll = sub.add_parser("enroll", help="secondaries awaiting approval").add_subparsers(dest="action",
                                                                                         required=True)
    enroll.add_parser("list").add_argument("--all", action="store_true", help="decided ones too")
    e = enroll.add_parser("approve")
    e.add_argument("id", type=int)
    e.add_argument("--remote-id", type=int)
    enroll.add_parser("reject").add_argument("id", type=int)

    a = sub.add_parser("audit", help="the audit log, newest first")
    a.add_argument("--limit", type=int, default=50)
    a.add_argument("--command", dest="audit_command")
    _json_after_command(parser)
    return parser


def _json_after_command(parser: argparse.ArgumentParser) -> None:
    """``p3ctl status --json`` as well as ``p3ctl --json status``: every command parser takes --json too."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                child.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                   help="print the result as JSON")
                _json_after_command(child)


def request_for(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The protocol command and arguments for parsed p3ctl arguments."""
    command = args.command
    if command in ("whoami", "metrics"):
        return command, {}
    if command in ("status", "rekey", "shutdown", "keyarray"):
        targets = {"session": args.session, "group": args.group, "all": getattr(args, "all", False) or None}
        if command == "keyarray":
            return command, {"op": args.op, "regenerate": args.regenerate or None, **targets}
        return command, targets
    if command == "audit":
        return "audit.list", {"limit": args.limit, "command": args.audit_command}
    name = f"{command}.{args.action}"
    fields = {k: v for k, v in vars(args).items() if k not in ("socket", "json", "command", "action", "unset")}
    if name == "config.set":
        if args.unset == (args.value is not None):
            raise P3Error("USAGE", "config set needs a VALUE, or --unset (for a group or secondary setting)")
    if name == "enroll.approve":
        fields["remote_id"] = fields.pop("remote_id", None)
    return name, fields


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take a positional after an option that follows another positional
    # ("keyarray flush --regenerate 3"); the one leftover word is then the session.
    if extra:
        if len(extra) == 1 and not extra[0].startswith("-") and getattr(args, "session", "") is None:
            args.session = extra[0]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        cmd, fields = request_for(args)
        response = call(args.socket, cmd, fields)
    except P3Error as error:
        response = protocol.error_response(0, error)
        cmd = args.command
    if not response.get("ok"):
        error = response.get("error") or {}
        if args.json:
            print(json.dumps({"error": error}, indent=2))
        else:
            hint = f" (hint: {error['hint']})" if error.get("hint") else ""
            print(f"p3ctl: {error.get('code', 'P3-E999')} {error.get('detail', 'no detail')}{hint}", file=sys.stderr)
        return _EXIT_BY_CODE.get(str(error.get("code")), EXIT_FAILED)
    result = response.get("result") or {}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(_show(cmd, result))
    return EXIT_PARTIAL if result.get("refused") else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
