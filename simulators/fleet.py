"""A simulated fleet of secondaries for the admin layer (a SIMULATION, not tunnels).

Spec §2.1.1: one primary administers thousands of secondaries. A thousand
real tunnels do not fit the 2-core test machines, so :class:`FleetTarget`
stands in for the primary's Gateway at the admin level only: it implements
:class:`p3hw.admin.server.AdminTarget` over a real configuration file (one
remote per simulated secondary, parsed by the real parser), presents one
session per remote in the ``--status-file`` format, and answers rekey,
shutdown, key-array and configuration requests by changing those sessions'
state and counters the way the daemon reports them. No packet is sent.

Used by the admin unit tests (small fleets) and the 1,000-secondary scale
test; ``python -m p3hw.simulators.fleet --secondaries 1000 --groups 10
--socket PATH`` serves one on an admin socket for trying p3ctl by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p3hw.admin.store import Store
from p3hw.config import Config, load_config

#: Keys a running primary can apply without restarting a session (docs/admin.md).
LIVE_KEYWORDS = ("rekey_wait", "key_array", "data_array_time", "control_array_time", "heartbeat_time",
                 "heartbeat_fail", "log_facility")
#: The simulated fleet's WAN addresses come from the benchmarking range (RFC 2544 §C.2.2, 198.18.0.0/15);
#: nothing is ever sent to them.
FLEET_WAN = ipaddress.ip_network("198.18.0.0/15")
PRIMARY_ADDRESS = "198.18.0.1"


@dataclass
class SimulatedSession:
    remote_id: int
    address: str
    subnets: list[str]
    state: str = "established"
    established_at: float = field(default_factory=time.monotonic)
    sessions_started: int = 1
    rekeys_completed: int = 0
    outbound_p3_id: int = 0
    inbound_p3_id: int = 0
    last_rekey_at: float | None = None
    key_arrays_generated: int = 0
    key_array_installed: bool = False
    packets_in: int = 0
    packets_out: int = 0
    losses: list[str] = field(default_factory=list)


def write_fleet_config(workdir: Path, secondaries: int, rekey_wait_s: int = 3600) -> Path:
    """A primary configuration with one remote per simulated secondary (one shared psk file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    psk = workdir / "fleet.psk"
    psk.write_text(secrets.token_hex(32) + "\n")
    os.chmod(psk, 0o600)
    lines = ["# simulated fleet (p3hw.simulators.fleet): no packet is ever sent to these addresses",
             "localstart", "role = primary", "ip = 4", f"address = {PRIMARY_ADDRESS}",
             f"rekey_wait = {rekey_wait_s}", "heartbeat_time = 15", "heartbeat_fail = 120", "localend"]
    for i in range(1, secondaries + 1):
        address = FLEET_WAN.network_address + 1 + i
        lan = ipaddress.ip_network((int(ipaddress.ip_address("10.0.0.0")) + (i << 8), 24))
        lines += [f"{i + 1}/ip = 4", f"{i + 1}/address = {address}", f"{i + 1}/subnet1 = {lan.network_address}",
                  f"{i + 1}/mask1 = 255.255.255.0", f"{i + 1}/psk_file = {psk.name}"]
    path = workdir / "fleet-primary.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


class FleetTarget:
    """The admin face of a primary with a simulated session per configured remote."""

    def __init__(self, config_path: Path) -> None:
        self.config_path: str | None = str(config_path)
        self.config: Config = load_config(config_path, role="primary")
        self.role = self.config.role
        self.reloads = 0
        self.applied: list[list[str]] = []
        self._next_p3_id = 0x1000
        self.sessions: dict[int, SimulatedSession] = {}
        self._sync_sessions()

    def _new_p3_id(self) -> int:
        self._next_p3_id += 1
        return self._next_p3_id

    def _sync_sessions(self) -> None:
        for remote in self.config.remotes:
            if remote.id not in self.sessions:
                self.sessions[remote.id] = SimulatedSession(
                    remote.id, str(remote.address), [str(s) for s in remote.subnets],
                    outbound_p3_id=self._new_p3_id(), inbound_p3_id=self._new_p3_id())
        for gone in set(self.sessions) - {r.id for r in self.config.remotes}:
            del self.sessions[gone]

    # ---------------------------------------------------------------- AdminTarget

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        peers = []
        for s in self.sessions.values():
            remote = self.config.remote(s.remote_id)
            up = s.state == "established"
            peers.append({
                "id": s.remote_id, "address": s.address, "state": s.state, "subnets": s.subnets,
                "outer": f"{s.address}:{remote.port}" if up else "",
                "since_s": round(now - s.established_at, 3) if up else None,
                "sessions_started": s.sessions_started, "rekeys_completed": s.rekeys_completed,
                "losses": list(s.losses), "outbound_p3_id": s.outbound_p3_id if up else None,
                "inbound_p3_id": s.inbound_p3_id if up else None, "key_type": remote.key_type,
                "key_source": "software", "packets_in": s.packets_in, "packets_out": s.packets_out,
                "last_rekey_s": None if s.last_rekey_at is None else round(now - s.last_rekey_at, 3),
                "next_rekey_s": remote.rekey_wait_s if up else None, "rekey_wait_s": remote.rekey_wait_s,
                "heartbeat_time_s": remote.heartbeat_time_s, "simulated": True,
            })
        return {"role": self.role, "address": str(self.config.local.address), "pid": os.getpid(), "peers": peers,
                "dataplane": {"sealed_packets": sum(s.packets_out for s in self.sessions.values()),
                              "opened_packets": sum(s.packets_in for s in self.sessions.values()),
                              "control_packets": 0, "drops": {}},
                "worker": None, "termination": None, "simulated": True}

    def _each(self, peer_ids: list[int], action: Any) -> dict[str, Any]:
        done: list[int] = []
        refused: dict[str, str] = {}
        for peer_id in peer_ids:
            session = self.sessions.get(peer_id)
            if session is None or session.state != "established":
                refused[str(peer_id)] = "P3-E406 the session is not established"
                continue
            action(session)
            done.append(peer_id)
        return {"done": done, "refused": refused}

    def rekey(self, peer_ids: list[int]) -> dict[str, Any]:
        def rekey_one(s: SimulatedSession) -> None:
            # What a completed rekey shows (DESIGN §4.3): new P3 IDs both ways, the counter advanced.
            s.outbound_p3_id, s.inbound_p3_id = self._new_p3_id(), self._new_p3_id()
            s.rekeys_completed += 1
            s.last_rekey_at = time.monotonic()
        return self._each(peer_ids, rekey_one)

    def shutdown(self, peer_ids: list[int]) -> dict[str, Any]:
        def shut(s: SimulatedSession) -> None:
            s.state = "down"
            s.losses.append("P3-E504")
        return self._each(peer_ids, shut)

    def keyarray(self, op: str, peer_ids: list[int], regenerate: bool) -> dict[str, Any]:
        def act(s: SimulatedSession) -> None:
            if op == "generate" or regenerate:
                s.key_arrays_generated += 1
                s.key_array_installed = True
            else:
                s.key_array_installed = False
        return self._each(peer_ids, act)

    def apply_config(self, config: Config, changed: list[str]) -> dict[str, Any]:
        self.applied.append(list(changed))
        self.config = config
        self._sync_sessions()
        live = [k for k in changed if k.split("/", 1)[-1] in LIVE_KEYWORDS]
        return {"live": live, "on_reload": [k for k in changed if k not in live]}

    def reload(self) -> dict[str, Any]:
        assert self.config_path is not None
        self.config = load_config(self.config_path, role=self.role)
        self._sync_sessions()
        self.reloads += 1
        return {"remotes": len(self.config.remotes)}

    # ---------------------------------------------------------------- fleet helpers

    def bring_up(self, peer_ids: list[int]) -> None:
        """Sessions that a simulated secondary re-established after a shutdown."""
        for peer_id in peer_ids:
            s = self.sessions[peer_id]
            if s.state != "established":
                s.state, s.established_at = "established", time.monotonic()
                s.sessions_started += 1
                s.outbound_p3_id, s.inbound_p3_id = self._new_p3_id(), self._new_p3_id()


def populate_groups(store: Store, target: FleetTarget, groups: int) -> dict[str, list[int]]:
    """``groups`` groups (site-00 ...) splitting the fleet evenly, in the store."""
    store.sync_secondaries(target.status()["peers"])
    ids = sorted(target.sessions)
    members: dict[str, list[int]] = {}
    for g in range(groups):
        name = f"site-{g:02d}"
        store.create_group(name)
        members[name] = ids[g::groups]
        store.add_members(name, members[name])
    return members


class ServedTarget:
    """An admin server for ``target`` on an event loop in a background thread (tests and the fleet demo).

    ``with ServedTarget(target, socket_path, store_path) as served:`` then talk
    to ``socket_path`` with p3ctl from the calling thread.
    """

    def __init__(self, target: Any, socket_path: str, store_path: str) -> None:
        self.target = target
        self.socket_path = socket_path
        self.store_path = store_path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="admin-server", daemon=True)
        self.server: Any = None
        self.store: Store | None = None

    def __enter__(self) -> ServedTarget:
        from p3hw.admin.server import start_admin_server

        self.thread.start()

        async def start() -> Any:
            self.store = Store(self.store_path)
            return await start_admin_server(self.target, self.socket_path, self.store)

        try:
            self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=30)
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (the store and target are not thread-safe)."""
        async def call() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)

    def __exit__(self, *_exc: object) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(timeout=30)
        if self.store is not None:
            self.loop.call_soon_threadsafe(self.store.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


def call_as(uid: int, gid: int, socket_path: str, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """One admin request from a child process running as uid/gid (root only): the peer credentials are real."""
    from p3hw.admin.p3ctl import call
    from p3hw.reasons import P3Error

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to uid/gid, ask, report through the pipe, never return into the caller
        status = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                response = call(socket_path, cmd, args)
            except P3Error as error:
                response = {"ok": False, "error": {"code": error.code, "detail": error.detail}}
            with os.fdopen(write_fd, "w") as out:
                out.write(json.dumps(response))
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return dict(json.loads(text)) if text else {"ok": False, "error": {"code": "P3-E999", "detail": "child failed"}}


async def _serve(args: argparse.Namespace) -> None:
    from p3hw.admin.server import start_admin_server

    workdir = Path(args.workdir)
    target = FleetTarget(write_fleet_config(workdir, args.secondaries))
    store = Store(str(workdir / "fleet.db"))
    if not store.list_groups():
        populate_groups(store, target, args.groups)
    server = await start_admin_server(target, args.socket, store)
    print(f"simulated fleet of {args.secondaries} secondaries in {args.groups} groups on {args.socket}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a simulated fleet on an admin socket (no tunnels).")
    parser.add_argument("--secondaries", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
