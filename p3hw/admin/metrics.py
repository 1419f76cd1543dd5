"""Status counters in the Prometheus text exposition format (version 0.0.4), and an opt-in local HTTP endpoint.

The endpoint is off unless the daemon is told a port; it binds to loopback
(127.0.0.1) only, answers ``GET /metrics`` only, one request per connection,
and reads at most a few kilobytes of request. Loopback is open to every local
user, so the endpoint asks the kernel who is calling, as the admin socket
does: the uid that owns the client's TCP socket (``/proc/net/tcp`` of the
daemon's network namespace). Root, the daemon's uid and p3hw users with any
role (``p3ctl user add prometheus --uid UID --role viewer``) are served; any
other uid gets 403 with P3-E701. The same text is available over the admin
socket (``p3ctl metrics``, role viewer).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections.abc import Callable
from typing import Any, Protocol

from p3hw.reasons import reason

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_METRICS_HOST = "127.0.0.1"
#: An HTTP request head larger than this is not a scrape.
MAX_REQUEST_HEAD_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0

_STATES = ("established", "connecting", "waiting", "down")


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(self, name: str, kind: str, help_text: str, value: object, **labels: object) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            if isinstance(value, bool):
                value = int(value)
            else:
                return
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")
        self.lines.append(f"{name}{_labels(**labels)} {value}")


def render(status: dict[str, Any]) -> str:
    """The daemon status (the --status-file JSON) as Prometheus metrics."""
    out = _Writer()
    role = status.get("role", "")
    out.metric("p3hw_up", "gauge", "1 while the daemon answers", 1, role=role)
    peers = status.get("peers") or []
    counts = dict.fromkeys(_STATES, 0)
    for peer in peers:
        counts[str(peer.get("state"))] = counts.get(str(peer.get("state")), 0) + 1
    for state, n in counts.items():
        out.metric("p3hw_sessions", "gauge", "sessions by state", n, state=state)
    for peer in peers:
        ident = {"id": peer.get("id"), "address": peer.get("address")}
        out.metric("p3hw_session_up", "gauge", "1 when the session is established",
                   int(peer.get("state") == "established"), **ident)
        out.metric("p3hw_session_established_seconds", "gauge", "seconds since the session was established",
                   peer.get("since_s"), **ident)
        out.metric("p3hw_session_starts_total", "counter", "sessions started with this remote",
                   peer.get("sessions_started"), **ident)
        out.metric("p3hw_session_rekeys_total", "counter", "rekeys completed with this remote",
                   peer.get("rekeys_completed"), **ident)
        losses: dict[str, int] = {}
        for code in peer.get("losses") or []:
            losses[str(code)] = losses.get(str(code), 0) + 1
        for code, n in sorted(losses.items()):
            out.metric("p3hw_session_losses_total", "counter", "sessions lost, by reason code", n, **ident,
                       reason=code)
        for field in ("packets_in", "packets_out", "bytes_in", "bytes_out"):
            out.metric(f"p3hw_session_{field}_total", "counter", f"{field.replace('_', ' ')} of this session",
                       peer.get(field), **ident)
    dataplane = status.get("dataplane") or {}
    for field in ("sealed_packets", "opened_packets", "control_packets"):
        out.metric(f"p3hw_dataplane_{field}_total", "counter", f"dataplane {field.replace('_', ' ')}",
                   dataplane.get(field))
    for reason_name, n in sorted((dataplane.get("drops") or {}).items()):
        out.metric("p3hw_dataplane_drops_total", "counter", "packets dropped by the dataplane, by reason", n,
                   reason=reason_name)
    for field, n in sorted((status.get("worker") or {}).items()):
        out.metric(f"p3hw_worker_{field}_total", "counter", f"packet worker {field.replace('_', ' ')}", n)
    for field, n in sorted((status.get("termination") or {}).items()):
        out.metric(f"p3hw_termination_{field}", "gauge", f"last session loss: {field.replace('_', ' ')}", n)
    return "\n".join(out.lines) + "\n"


class _Users(Protocol):
    def user_by_uid(self, uid: int) -> Any: ...


def allow_users(store: _Users | None) -> Callable[[int | None], bool]:
    """Who may scrape: root, the daemon's uid, and any user of *store* (every role may read the status)."""
    def allow(uid: int | None) -> bool:
        if uid is None:
            return False
        if uid == 0 or uid == os.geteuid():
            return True
        return store is not None and store.user_by_uid(uid) is not None
    return allow


def _proc_net_address(host: str, port: int) -> str:
    """An address:port as /proc/net/tcp{,6} writes it: each 32-bit word of the address in host (little) order."""
    packed = ipaddress.ip_address(host).packed
    words = [packed[i:i + 4][::-1] for i in range(0, len(packed), 4)]
    return (b"".join(words).hex() + f":{port:04x}").upper()


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid owning the client end of this loopback TCP connection, from the kernel's socket table; None if
    it cannot be told (the connection is not local, or gone)."""
    peer = writer.get_extra_info("peername")
    local = writer.get_extra_info("sockname")
    if not peer or not local:
        return None
    try:
        family6 = ipaddress.ip_address(peer[0]).version == 6
        client, server = _proc_net_address(peer[0], peer[1]), _proc_net_address(local[0], local[1])
        with open("/proc/net/tcp6" if family6 else "/proc/net/tcp") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                if len(fields) > 7 and fields[1] == client and fields[2] == server:
                    return int(fields[7])
    except (OSError, ValueError):
        return None
    return None


def _refusal(uid: int | None) -> bytes:
    who = f"uid {uid}" if uid is not None else "a caller whose uid cannot be told"
    return (f"{reason('ADMIN_DENIED').code} {who} is not a p3hw user: the metrics are served to root, the daemon's "
            "uid and p3hw users (hint: an admin adds the scraper: p3ctl user add NAME --uid UID --role viewer)\n"
            ).encode()


async def _serve_scrape(status: Callable[[], dict[str, Any]], allow: Callable[[int | None], bool],
                        reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            head = b""
        parts = head.split(b"\r\n", 1)[0].split()
        uid = peer_uid(writer)
        if len(parts) == 3 and not allow(uid):
            code, body, ctype = "403 Forbidden", _refusal(uid), "text/plain"
        elif len(parts) == 3 and parts[0] == b"GET" and parts[1].split(b"?")[0] == b"/metrics":
            code, body, ctype = "200 OK", render(status()).encode(), CONTENT_TYPE
        elif len(parts) == 3:
            code, body, ctype = "404 Not Found", b"only /metrics is served here\n", "text/plain"
        else:
            code, body, ctype = "400 Bad Request", b"bad request\n", "text/plain"
        writer.write(f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def start_metrics_server(status: Callable[[], dict[str, Any]], port: int,
                               host: str = DEFAULT_METRICS_HOST,
                               allow: Callable[[int | None], bool] | None = None) -> asyncio.AbstractServer:
    """Serve ``GET /metrics`` on host:port (port 0: any free port; see ``server.sockets``) to the uids *allow*
    accepts (default: root and the daemon's uid; the gateway passes :func:`allow_users` of its store)."""
    allowed = allow or allow_users(None)
    return await asyncio.start_server(lambda r, w: _serve_scrape(status, allowed, r, w), host, port,
                                      limit=MAX_REQUEST_HEAD_BYTES)
