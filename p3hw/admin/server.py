"""The admin server: a Unix socket in each daemon, serving p3ctl (spec §2.1.1: IPC to the running system).

The daemon hands :func:`start_admin_server` an object that implements
:class:`AdminTarget` (the Gateway) and a :class:`~p3hw.admin.store.Store`.
Every connection is identified by the kernel (``SO_PEERCRED``): uid 0 and the
daemon's own uid are ``admin``; any other uid must be a user in the store,
whose role decides what it may do (viewer: status; operator: sessions and
keys; admin: everything). Every request, refused or not, is written to the
audit log with who, what, when and the result -- refusals at most
``limits.REFUSALS_AUDITED_PER_MINUTE`` per uid and minute, the rest counted in
one summary row. A malformed request is answered with P3-E700 and never
stops the server. Root and the daemon's uid are always served; other uids are
held to connection limits (p3hw/admin/limits.py, P3-E708).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import os
import secrets
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from p3hw.admin import configfile, limits, metrics, protocol
from p3hw.admin.store import APPROVED, DEFAULT_GROUP_PRIORITY, REJECTED, Store
from p3hw.config import LOCAL_KEYWORDS, OVERRIDES, REMOTE_KEYWORDS, Config, ConfigErrors
from p3hw.reasons import P3Error

#: Socket mode (issue 7): owner and group read/write; membership of the socket's group is the first gate.
SOCKET_MODE = 0o660
#: Group that owns the socket when it exists on the host (docs/admin.md).
SOCKET_GROUP = "p3hw"
#: A client that starts a frame must finish it within this time.
FRAME_TIMEOUT_S = 10.0
#: A connection that sends nothing for this long is closed (it holds one of MAX_CONNECTIONS).
IDLE_TIMEOUT_S = 300.0
#: Connections of uids other than root and the daemon's served at once (limits.py; root is always served).
MAX_CONNECTIONS = limits.MAX_CONNECTIONS
#: The integer arguments' allowed ranges (command, argument) -> (lowest, highest): P3-E709 outside.
INT_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("group.create", "priority"): (0, 1_000_000),
    ("audit.list", "limit"): (1, 100_000),
    ("user.add", "uid"): (0, 2 ** 32 - 1),
    ("enroll.approve", "id"): (1, 2 ** 53),
    ("enroll.approve", "remote_id"): (1, 65535),
    ("enroll.reject", "id"): (1, 2 ** 53),
}

#: Keywords that groups and per-secondary overrides may set: the per-remote
#: overrides of Appendix A 1 plus the remote's key type, cipher and PFS.
GROUP_KEYWORDS = tuple(OVERRIDES) + ("key_type", "cipher", "pfs")

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

log = logging.getLogger("p3hw.admin")


class AdminTarget(Protocol):
    """What a daemon offers the admin server. Methods may return a dict or an awaitable of one.

    * ``role`` -- "primary" or "secondary"; ``config`` -- the configuration in
      force; ``config_path`` -- the file it was read from (None: none).
    * ``status()`` -- the JSON of ``--status-file`` (docs/admin-api.md).
    * ``rekey(ids)`` / ``shutdown(ids)`` / ``keyarray(op, ids, regenerate)`` --
      act on the sessions with these remote ids now; return
      ``{"done": [ids], "refused": {"id": "P3-Exxx why"}}``.
    * ``apply_config(config, changed)`` -- make ``config`` the configuration in
      force; ``changed`` names the keys that differ (``rekey_wait``,
      ``3/heartbeat_time``). Return ``{"live": [keys applied now],
      "on_reload": [keys that take effect only with a new session or restart]}``.
    * ``reload()`` -- re-read the configuration file, as SIGHUP does.
    """

    role: str
    config: Config
    config_path: str | None

    def status(self) -> dict[str, Any]: ...
    def rekey(self, peer_ids: list[int]) -> dict[str, Any] | Awaitable[dict[str, Any]]: ...
    def shutdown(self, peer_ids: list[int]) -> dict[str, Any] | Awaitable[dict[str, Any]]: ...
    def keyarray(self, op: str, peer_ids: list[int], regenerate: bool) -> dict[str, Any] | Awaitable[dict[str, Any]]: ...
    def apply_config(self, config: Config, changed: list[str]) -> dict[str, Any] | Awaitable[dict[str, Any]]: ...
    def reload(self) -> dict[str, Any] | Awaitable[dict[str, Any]]: ...


def _socket_is_served(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def _call(value: Any) -> dict[str, Any]:
    if inspect.isawaitable(value):
        value = await value
    return dict(value) if isinstance(value, dict) else {"result": value}


# ------------------------------------------------------------------ settings precedence

def parse_setting(keyword: str, value: str) -> Any:
    """A group or override value, checked by the configuration's own value parser."""
    if keyword not in GROUP_KEYWORDS:
        raise P3Error("CONFIG_UNKNOWN_KEYWORD", f"{keyword!r} cannot be set for a group or a secondary",
                      f"one of: {', '.join(GROUP_KEYWORDS)}")
    try:
        return REMOTE_KEYWORDS[keyword].parse(value)
    except Exception as exc:  # config._BadValue carries the reason
        raise P3Error(getattr(exc, "reason_name", "CONFIG_VALUE_OUT_OF_RANGE"), f"{keyword} = {value!r}: {exc}",
                      getattr(exc, "hint", "")) from None


def effective_config(config: Config, store: Store) -> Config:
    """``config`` with the store's group settings and overrides applied to each remote (docs/admin.md)."""
    remotes = []
    for remote in config.remotes:
        changes = {}
        for keyword, (value, _origin) in store.stored_settings(remote.id).items():
            with contextlib.suppress(P3Error):  # a value stored by an older release that no longer parses
                changes[REMOTE_KEYWORDS[keyword].attr] = parse_setting(keyword, value)
        remotes.append(replace(remote, **changes) if changes else remote)
    return replace(config, remotes=remotes)


# ------------------------------------------------------------------ the server

def check_ranges(request: protocol.Request) -> None:
    """P3-E709 for an integer argument outside its range (INT_RANGES), naming the argument and the range."""
    for name, value in request.args.items():
        bounds = INT_RANGES.get((request.cmd, name))
        if bounds is not None and isinstance(value, int) and not bounds[0] <= value <= bounds[1]:
            raise P3Error("ADMIN_OUT_OF_RANGE", f"{request.cmd}: {name} = {value} is outside "
                          f"{bounds[0]}..{bounds[1]}", f"give {name} a value from {bounds[0]} to {bounds[1]}")


class Caller:
    def __init__(self, uid: int | None, pid: int | None, name: str, role: str | None) -> None:
        self.uid, self.pid, self.name, self.role = uid, pid, name, role


class AdminServer:
    def __init__(self, target: AdminTarget, store: Store, socket_path: str) -> None:
        self.target = target
        self.store = store
        self.socket_path = socket_path
        self.server: asyncio.AbstractServer | None = None
        self.limits = limits.ConnectionLimits()
        self.refusals = limits.RefusalAudit(store)
        self.requests_served = 0
        self._handlers: dict[str, Callable[[Caller, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "whoami": self._whoami, "status": self._status, "metrics": self._metrics,
            "rekey": self._rekey, "shutdown": self._shutdown, "keyarray": self._keyarray,
            "group.list": self._group_list, "group.show": self._group_show, "group.create": self._group_create,
            "group.delete": self._group_delete, "group.add": self._group_add, "group.remove": self._group_remove,
            "config.get": self._config_get, "config.set": self._config_set,
            "user.list": self._user_list, "user.add": self._user_add, "user.remove": self._user_remove,
            "user.role": self._user_role, "enroll.list": self._enroll_list, "enroll.approve": self._enroll_approve,
            "enroll.reject": self._enroll_reject, "audit.list": self._audit_list,
        }

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        path = self.socket_path
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", mode=0o750, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                if _socket_is_served(path):
                    raise P3Error("OS_ERROR", f"admin socket {path} is served by another running daemon",
                                  "give each daemon its own admin_socket")
                os.unlink(path)  # a stale socket of an earlier run
        # umask so the socket is never wider than 0660, not even between bind and chmod.
        old_umask = os.umask(0o117)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=path, backlog=128)
        finally:
            os.umask(old_umask)
        os.chmod(path, SOCKET_MODE)
        try:
            import grp

            os.chown(path, -1, grp.getgrnam(SOCKET_GROUP).gr_gid)
        except (KeyError, PermissionError):
            pass
        self.store.sync_secondaries(self._peers())
        log.info("admin socket %s (mode %o)", path, SOCKET_MODE)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        with contextlib.suppress(P3Error):
            self.refusals.flush()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    # -------------------------------------------------------------- connections

    def _identify(self, writer: asyncio.StreamWriter) -> Caller:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        except (OSError, AttributeError, struct.error):
            return Caller(None, None, "?", None)
        if uid == 0 or uid == os.geteuid():
            user = self.store.user_by_uid(uid)
            return Caller(uid, pid, user.name if user else ("root" if uid == 0 else f"uid{uid}"), "admin")
        user = self.store.user_by_uid(uid)
        if user is None:
            return Caller(uid, pid, f"uid{uid}", None)
        return Caller(uid, pid, user.name, user.role)

    @staticmethod
    def _always_served(caller: Caller) -> bool:
        return caller.uid is not None and (caller.uid == 0 or caller.uid == os.geteuid())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counted = False
        caller = Caller(None, None, "?", None)
        try:
            caller = self._identify(writer)
            if not self._always_served(caller):
                try:
                    self.limits.admit(caller.uid, caller.role is not None)
                except P3Error as error:
                    await self._refuse(caller, writer, error)
                    return
                counted = True
            while await self._serve_one(caller, reader, writer):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # never let one connection take the server down
            log.exception("P3-E999 admin connection failed")
        finally:
            if counted:
                self.limits.release(caller.uid)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, caller: Caller, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read, run and answer one request; False when the connection should close."""
        idle_s = IDLE_TIMEOUT_S if caller.role is not None else limits.NO_ROLE_IDLE_TIMEOUT_S
        try:
            header = await asyncio.wait_for(reader.readexactly(protocol.HEADER_BYTES), idle_s)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                await self._refuse(caller, writer, protocol.malformed("truncated frame header"))
            return False
        except TimeoutError:
            if caller.role is None:
                await self._refuse(caller, writer, P3Error(
                    "ADMIN_LIMIT", f"uid {caller.uid} has no role and sent no request within {idle_s:g} s; "
                    "connection closed", "an admin adds it: p3ctl user add NAME --uid UID --role viewer"))
            return False
        try:
            length = protocol.frame_length(header, protocol.MAX_REQUEST_BYTES)
        except P3Error as error:
            await self._refuse(caller, writer, error)
            return False  # the rest of the stream cannot be framed
        try:
            body = await asyncio.wait_for(reader.readexactly(length), FRAME_TIMEOUT_S)
        except asyncio.IncompleteReadError as exc:
            await self._refuse(caller, writer, protocol.malformed(
                f"truncated frame: {len(exc.partial)} of {length} bytes before the end of the stream"))
            return False
        except TimeoutError:
            await self._refuse(caller, writer, protocol.malformed(f"no complete frame within {FRAME_TIMEOUT_S:g} s"))
            return False
        request_id = 0
        try:
            message = protocol.decode_body(body)
            if isinstance(message.get("id"), int):
                request_id = message["id"]
            request = protocol.parse_request(message)
        except P3Error as error:
            await self._refuse(caller, writer, error, request_id)
            return True
        response = await self.handle(caller, request)
        writer.write(protocol.frame(response))
        await writer.drain()
        return True

    async def _refuse(self, caller: Caller, writer: asyncio.StreamWriter, error: P3Error, request_id: int = 0) -> None:
        command = "(connection)" if error.reason.name == "ADMIN_LIMIT" else "(malformed)"
        self._audit_record(caller, command, {}, error.code, error.detail)
        writer.write(protocol.frame(protocol.error_response(request_id, error)))
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def handle(self, caller: Caller, request: protocol.Request) -> dict[str, Any]:
        """Authorise, run and audit one well-formed request; the response object."""
        self.requests_served += 1
        command = protocol.COMMANDS[request.cmd]
        try:
            if caller.role is None:
                raise P3Error("ADMIN_DENIED", f"uid {caller.uid} is not a p3hw user",
                              "an admin adds it: p3ctl user add NAME --uid UID --role viewer|operator|admin")
            if protocol.ROLE_RANK[caller.role] < protocol.ROLE_RANK[command.role]:
                raise P3Error("ADMIN_DENIED", f"{request.cmd} needs role {command.role}; "
                              f"{caller.name} is {caller.role}", "ask an admin")
            check_ranges(request)
            result = await self._handlers[request.cmd](caller, request.args)
        except P3Error as error:
            self._audit(caller, request, error.code, error.detail)
            return protocol.error_response(request.id, error)
        except OSError as exc:  # the configuration directory is read-only, the disk is full, ...
            error = P3Error("OS_ERROR", f"{request.cmd}: {exc.strerror or exc} ({exc.filename or 'no file'})",
                            "see the daemon's log and the file's directory")
            self._audit(caller, request, error.code, error.detail)
            return protocol.error_response(request.id, error)
        except Exception as exc:
            log.exception("P3-E999 admin command %s failed", request.cmd)
            error = P3Error("INTERNAL", f"{request.cmd} failed: {type(exc).__name__}: {exc}", "see the daemon's log")
            self._audit(caller, request, error.code, error.detail)
            return protocol.error_response(request.id, error)
        self._audit(caller, request, "ok", str(result.get("summary", "")))
        return protocol.ok_response(request.id, result)

    def _audit(self, caller: Caller, request: protocol.Request, result: str, detail: str) -> None:
        self._audit_record(caller, request.cmd, request.args, result, detail)

    def _audit_record(self, caller: Caller, command: str, args: dict[str, Any], result: str, detail: str) -> None:
        """One audit record; refusals through the per-uid rate limit (limits.RefusalAudit)."""
        try:
            if result in limits.REFUSAL_CODES:
                self.refusals.record(caller.uid, caller.name, caller.role, command, args, result, detail)
            else:
                self.store.audit(caller.uid, caller.name, caller.role, command, args, result, detail)
        except P3Error as error:
            log.error("%s audit record lost for %s", error.message(), command)

    # -------------------------------------------------------------- sessions

    def _peers(self) -> list[dict[str, Any]]:
        return list(self.target.status().get("peers", []))

    def _resolve_one(self, peers: list[dict[str, Any]], name: str) -> dict[str, Any]:
        """A session named by its remote id or its peer address."""
        for peer in peers:
            if name == str(peer.get("id")) or name == str(peer.get("address")):
                return peer
        with contextlib.suppress(ValueError):
            wanted = ipaddress.ip_address(name)
            for peer in peers:
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(str(peer.get("address"))) == wanted:
                        return peer
        raise P3Error("ADMIN_NOT_FOUND", f"no session {name!r}", "p3ctl status lists the sessions")

    def _select(self, args: dict[str, Any], default_all: bool,
                peers: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], str]:
        if peers is None:
            peers = self._peers()
        chosen = [k for k in ("session", "group") if k in args] + (["all"] if args.get("all") else [])
        if len(chosen) > 1:
            raise protocol.malformed("name one of session, group or all")
        if "session" in args:
            return [self._resolve_one(peers, args["session"])], f"session {args['session']}"
        if "group" in args:
            members = set(self.store.members(args["group"]))
            return [p for p in peers if p.get("id") in members], f"group {args['group']}"
        if not args.get("all") and not default_all:
            raise protocol.malformed("name a session, a group, or all")
        return peers, "all sessions"

    async def _whoami(self, caller: Caller, _args: dict[str, Any]) -> dict[str, Any]:
        return {"user": caller.name, "uid": caller.uid, "role": caller.role, "daemon_role": self.target.role,
                "protocol": protocol.VERSION, "store_schema": self.store.schema_version}

    async def _status(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        status = dict(self.target.status())
        peers, scope = self._select(args, default_all=True, peers=list(status.get("peers", [])))
        groups = self.store.groups_by_secondary()
        status["peers"] = [{**p, "groups": groups.get(int(p.get("id", -1)), [])} for p in peers]
        status["scope"] = scope
        status["summary"] = f"{len(peers)} session(s), {scope}"
        return status

    async def _metrics(self, _caller: Caller, _args: dict[str, Any]) -> dict[str, Any]:
        return {"text": metrics.render(self.target.status()), "content_type": metrics.CONTENT_TYPE}

    async def _act(self, args: dict[str, Any], what: str,
                   act: Callable[[list[int]], Any]) -> dict[str, Any]:
        peers, scope = self._select(args, default_all=False)
        ids = [int(p["id"]) for p in peers]
        result = await _call(act(ids)) if ids else {"done": [], "refused": {}}
        done = result.get("done", [])
        refused = result.get("refused", {})
        return {"sessions": ids, "scope": scope, **result,
                "summary": f"{what} {scope}: {len(done)} done, {len(refused)} refused"}

    async def _rekey(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        return await self._act(args, "rekey", self.target.rekey)

    async def _shutdown(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        return await self._act(args, "shutdown", self.target.shutdown)

    async def _keyarray(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        op = args["op"]
        if op not in ("generate", "flush"):
            raise protocol.malformed(f"keyarray op must be generate or flush, not {op[:32]!r}")
        if self.target.role != "primary":
            raise P3Error("ADMIN_DENIED", "key arrays are generated by the primary (spec 2.1.1.1 3)",
                          "run this against the primary's admin socket")
        regenerate = bool(args.get("regenerate", False))
        return await self._act(args, f"keyarray {op}", lambda ids: self.target.keyarray(op, ids, regenerate))

    # -------------------------------------------------------------- groups

    def _session_ids(self, names: list[str]) -> list[int]:
        peers = self._peers()
        self.store.sync_secondaries(peers)
        return [int(self._resolve_one(peers, n)["id"]) for n in names]

    async def _group_list(self, _caller: Caller, _args: dict[str, Any]) -> dict[str, Any]:
        groups = self.store.list_groups()
        return {"groups": groups, "summary": f"{len(groups)} group(s)"}

    async def _group_show(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        return {"group": self.store.show_group(args["name"])}

    async def _group_create(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        name = args["name"]
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise protocol.malformed(f"group name {name[:80]!r}: letters, digits, '-', '_' and '.', 1 to 64")
        self.store.create_group(name, int(args.get("priority", DEFAULT_GROUP_PRIORITY)))
        return {"group": self.store.show_group(name), "summary": f"group {name} created"}

    async def _group_delete(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        members = self.store.members(args["name"])
        self.store.delete_group(args["name"])
        applied = await self._apply_settings(members)
        return {"deleted": args["name"], "members": members, **applied, "summary": f"group {args['name']} deleted"}

    async def _group_add(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        ids = self._session_ids(args["sessions"])
        added = self.store.add_members(args["name"], ids)
        applied = await self._apply_settings(ids)
        return {"group": args["name"], "added": added, **applied,
                "summary": f"{added} secondary(ies) added to {args['name']}"}

    async def _group_remove(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        ids = self._session_ids(args["sessions"])
        removed = self.store.remove_members(args["name"], ids)
        applied = await self._apply_settings(ids)
        return {"group": args["name"], "removed": removed, **applied,
                "summary": f"{removed} secondary(ies) removed from {args['name']}"}

    # -------------------------------------------------------------- configuration

    def _file_config(self) -> Config:
        """The configuration as the file says it, without the store's settings."""
        path = self.target.config_path
        if path is None:
            return self.target.config
        return configfile.validate(configfile.read_config_text(path), path, self.target.role)

    async def _apply_settings(self, secondary_ids: list[int]) -> dict[str, Any]:
        """Give the daemon the effective configuration after a change of group settings or overrides."""
        if not secondary_ids:
            return {"live": [], "on_reload": []}
        try:
            base = self._file_config()
        except ConfigErrors:
            base = self.target.config  # the file is being edited by hand; keep what runs as the base
        new = effective_config(base, self.store)
        old_by_id = {r.id: r for r in self.target.config.remotes}
        changed = []
        for remote in new.remotes:
            old = old_by_id.get(remote.id)
            if old is None or remote.id not in secondary_ids:
                continue
            for keyword in GROUP_KEYWORDS:
                attr = REMOTE_KEYWORDS[keyword].attr
                if getattr(old, attr) != getattr(remote, attr):
                    changed.append(f"{remote.id}/{keyword}")
        if not changed:
            return {"live": [], "on_reload": []}
        result = await _call(self.target.apply_config(new, changed))
        return {"live": list(result.get("live", [])), "on_reload": list(result.get("on_reload", []))}

    async def _config_get(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        key = args.get("key")
        if "group" in args:
            settings = self.store.show_group(args["group"])["settings"]
            if key is not None:
                if key not in settings:
                    raise P3Error("ADMIN_NOT_FOUND", f"group {args['group']} sets no {key!r}")
                settings = {key: settings[key]}
            return {"group": args["group"], "settings": settings}
        config = self.target.config.to_dict()
        if "session" in args:
            peer = self._resolve_one(self._peers(), args["session"])
            remote = next((r for r in config["remotes"] if r["id"] == peer["id"]), None)
            if remote is None:
                raise P3Error("ADMIN_NOT_FOUND", f"session {args['session']} has no remote definition")
            values = {k: v for k, v in remote.items() if k != "id"}
            for keyword, (value, origin) in self.store.stored_settings(int(peer["id"])).items():
                values[keyword] = {**values.get(keyword, {}), "stored": value, "stored_origin": origin}
            if key is not None:
                if key not in values:
                    raise P3Error("ADMIN_NOT_FOUND", f"no remote keyword {key!r}")
                values = {key: values[key]}
            return {"session": peer["id"], "values": values}
        if key is None:
            return {"file": config["file"], "role": config["role"], "local": config["local"],
                    "remotes": config["remotes"]}
        if "/" in key:
            rid_text, keyword = key.split("/", 1)
            remote = next((r for r in config["remotes"] if str(r["id"]) == rid_text), None)
            if remote is None or keyword not in remote:
                raise P3Error("ADMIN_NOT_FOUND", f"no configuration value {key!r}")
            return {"key": key, **remote[keyword]}
        if key not in config["local"]:
            raise P3Error("ADMIN_NOT_FOUND", f"no configuration value {key!r}",
                          f"local keywords: {', '.join(sorted(config['local']))}")
        return {"key": key, **config["local"][key]}

    async def _config_set(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        key = args["key"].lower()
        value = args.get("value")
        if "group" in args or "session" in args:
            if args.get("permanent"):
                raise protocol.malformed("group and secondary settings are always kept (in the store); "
                                         "--permanent is for the configuration file")
            if value is not None:
                parse_setting(key, value)
            if "group" in args:
                self.store.set_group_setting(args["group"], key, value)
                ids = self.store.members(args["group"])
                scope = f"group {args['group']}"
            else:
                ids = self._session_ids([args["session"]])
                self.store.set_override(ids[0], key, value)
                scope = f"secondary {ids[0]}"
            applied = await self._apply_settings(ids)
            verb = "removed" if value is None else f"= {value}"
            return {"key": key, "value": value, "scope": scope, **applied, "summary": f"{scope}: {key} {verb}"}
        if value is None:
            raise protocol.malformed("config set needs a value")
        return await self._config_set_daemon(key, value, bool(args.get("permanent")))

    async def _config_set_daemon(self, key: str, value: str, permanent: bool) -> dict[str, Any]:
        path = self.target.config_path
        if path is None:
            raise P3Error("CONFIG_MISSING_VALUE", "the daemon runs without a configuration file",
                          "start it with -c FILE")
        keyword = key.split("/", 1)[1] if "/" in key else key
        known = REMOTE_KEYWORDS if "/" in key else LOCAL_KEYWORDS
        if keyword.rstrip("0123456789") not in known:
            raise P3Error("CONFIG_UNKNOWN_KEYWORD", f"no configuration keyword {key!r}", "p3ctl config get")
        try:
            new_text = configfile.set_value(configfile.read_config_text(path), key, value)
        except ValueError as exc:
            raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", str(exc)) from None
        # The daemon's own parser decides; a refusal leaves the file and the running daemon as they are.
        new_file_config = configfile.validate(new_text, path, self.target.role)
        if permanent:
            configfile.write_atomically(path, new_text)
        running = self.target.config
        result = await _call(self.target.apply_config(effective_config(new_file_config, self.store), [key]))
        live = list(result.get("live", []))
        on_reload = list(result.get("on_reload", []))
        if not permanent and key not in live:
            # Neither in force now nor written anywhere: the change would silently vanish at the next reload.
            await _call(self.target.apply_config(running, [key]))
            raise P3Error("ADMIN_NOT_LIVE", f"{key} cannot change while the daemon runs",
                          f"p3ctl config set {key} {value} --permanent, then reload (SIGHUP)")
        where = "and in " + path if permanent else "(not written: add --permanent to keep it)"
        when = "now" if key in live else "on reload or a new session"
        return {"key": key, "value": value, "permanent": permanent, "file": path if permanent else None,
                "live": live, "on_reload": on_reload, "summary": f"{key} = {value} {when} {where}"}

    # -------------------------------------------------------------- users

    async def _user_list(self, _caller: Caller, _args: dict[str, Any]) -> dict[str, Any]:
        users = self.store.list_users()
        return {"users": users, "builtin": "uid 0 and the daemon's own uid are always admin"}

    @staticmethod
    def _check_role(role: str) -> None:
        if role not in protocol.ROLES:
            raise protocol.malformed(f"role {role[:32]!r} is not one of {', '.join(protocol.ROLES)}")

    async def _user_add(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        self._check_role(args["role"])
        if not 0 <= args["uid"] < 2 ** 32:
            raise protocol.malformed("uid must be between 0 and 4294967295")
        self.store.add_user(args["name"], args["uid"], args["role"])
        return {"user": args["name"], "summary": f"user {args['name']} (uid {args['uid']}) is {args['role']}"}

    async def _user_remove(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        self.store.remove_user(args["name"])
        return {"user": args["name"], "summary": f"user {args['name']} removed"}

    async def _user_role(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        self._check_role(args["role"])
        self.store.set_role(args["name"], args["role"])
        return {"user": args["name"], "role": args["role"], "summary": f"user {args['name']} is {args['role']}"}

    # -------------------------------------------------------------- enrollment (spec 2.1.1.1 1)

    async def _enroll_list(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        entries = self.store.list_enrollments(include_decided=bool(args.get("all")))
        return {"enrollments": entries, "summary": f"{len(entries)} enrollment(s)"}

    async def _enroll_approve(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        if self.target.role != "primary" or self.target.config_path is None:
            raise P3Error("ADMIN_DENIED", "enrollments are approved on the primary, which needs its configuration file")
        entry = self.store.enrollment(args["id"])
        if entry["state"] != "pending":
            raise P3Error("ADMIN_NOT_FOUND", f"enrollment {args['id']} is {entry['state']}, not pending")
        path = self.target.config_path
        text = configfile.read_config_text(path)
        current = configfile.validate(text, path, self.target.role)
        used = {r.id for r in current.remotes}
        remote_id = args.get("remote_id") or max(used | {1}) + 1
        if remote_id in used or not 1 <= remote_id <= 65535:
            raise P3Error("ADMIN_EXISTS", f"remote id {remote_id} is in use or out of range", "choose another")
        psk_path = Path(path).resolve().parent / f"enrolled-{remote_id}.psk"
        lines = [f"# enrolled by p3ctl: enrollment {entry['id']}, approved by {caller.name}",
                 f"{remote_id}/ip = {entry['ip']}", f"{remote_id}/address = {entry['address']}"]
        for k, subnet in enumerate(entry["subnets"], start=1):
            net = ipaddress.ip_network(subnet, strict=False)
            lines += [f"{remote_id}/subnet{k} = {net.network_address}", f"{remote_id}/mask{k} = {net.netmask}"]
        lines.append(f"{remote_id}/psk_file = {psk_path.name}")
        # The credential (spec 2.1.1.1 1: "on approval gets its credentials"): a fresh pre-shared key, mode 0600.
        try:
            fd = os.open(psk_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise P3Error("ADMIN_EXISTS", f"{psk_path} exists already", "remove it, or choose --remote-id") from None
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            new_text = configfile.append_lines(text, lines)
            configfile.validate(new_text, path, self.target.role)
            configfile.write_atomically(path, new_text)
        except BaseException:
            psk_path.unlink()
            raise
        self.store.decide_enrollment(entry["id"], APPROVED, caller.name, remote_id)
        await _call(self.target.reload())
        return {"enrollment": entry["id"], "remote_id": remote_id, "address": entry["address"],
                "psk_file": str(psk_path), "summary": f"enrollment {entry['id']} ({entry['address']}) approved as "
                                                      f"remote {remote_id}"}

    async def _enroll_reject(self, caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        self.store.decide_enrollment(args["id"], REJECTED, caller.name)
        return {"enrollment": args["id"], "summary": f"enrollment {args['id']} rejected"}

    async def _audit_list(self, _caller: Caller, args: dict[str, Any]) -> dict[str, Any]:
        entries = self.store.audit_log(int(args.get("limit", 100)), args.get("command"))
        return {"audit": entries}


async def start_admin_server(target: AdminTarget, socket_path: str, store: Store) -> AdminServer:
    """Serve ``target`` on ``socket_path`` (mode 0660) until ``await server.close()``."""
    server = AdminServer(target, store, socket_path)
    await server.start()
    return server
