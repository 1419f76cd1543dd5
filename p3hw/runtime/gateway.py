"""The gateway daemon: one asyncio loop wiring the peers' drivers to the native worker.

The native worker (native/src/worker.c) moves every data packet; this loop
only sees IKE messages and control-channel packets (through the worker's
queue, an eventfd on the loop), timers, signals and the admin socket. Each
configured remote has a `PeerDriver` (runtime/peer.py) that runs its
machines and executes their actions against the `GatewayPort`
(runtime/io.py); the primary's one `ResponderHandshake` hands finished
exchanges to the driver of the remote that authenticated.

Roles differ only in who starts the initial exchange (spec §2.1.2: the
secondary dials, the primary never does) and in recovery (the secondary
retries with the 5 s-step backoff of §2.1.7). docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import p3hw
from p3hw.admin.metrics import allow_users, start_metrics_server
from p3hw.admin.server import AdminServer, effective_config, start_admin_server
from p3hw.admin.store import Store
from p3hw.config import Config, RemoteHost, config_error_text, load_config, read_psk
from p3hw.crypto.keygen import key_source_status, make_key_source
from p3hw.crypto.keys import cipher_name
from p3hw.log import failure
from p3hw.protocol.handshake import (
    HandshakeEstablished,
    HandshakeFailed,
    IkeProposalConfig,
    InitiatorHandshake,
    MessageDropped,
    PeerDeletedSa,
    PeerPolicy,
    ResponderHandshake,
    secondary_selectors,
)
from p3hw.protocol.ids import P3IdAllocator
from p3hw.protocol.session import SessionConfig
from p3hw.reasons import P3Error
from p3hw.runtime.admin_target import GatewayAdmin
from p3hw.runtime.flowstate import FlowState, state_path
from p3hw.runtime.ike_cookies import IkeCookieSecret
from p3hw.runtime.ike_requests import ike_status, log_peer_deleted
from p3hw.runtime.io import TUN_MTU, WAN_MTU, GatewayIO, GatewayPort
from p3hw.runtime.peer import PeerDriver, PeerSettings
from p3hw.runtime.reconfig import plan_reload
from p3hw.runtime.status import STATUS_INTERVAL_S, DataplaneCounters, GatewayStatus, StatusFile
from p3hw.runtime.traffic_feed import TrafficFeed
from p3hw.wire.ike import Identity

__all__ = ["CONTROL_SETTLE_S", "STATUS_INTERVAL_S", "TUN_MTU", "WAN_MTU", "Gateway"]

#: The primary holds a new session's first control packets this long: its IKE_AUTH response
#: and its first control packet would otherwise reach the secondary back to back, and the
#: secondary's worker meets the control packet before its control plane has installed the
#: keys (DP_UNKNOWN_SESSION; the control channel would resend it 2 s later). docs/runtime.md.
CONTROL_SETTLE_S = 0.1
#: Longest the loop sleeps without a timer, so a stop request is seen soon.
MAX_SLEEP_S = 0.5


class Gateway:
    """A primary or secondary gateway running in the foreground."""

    def __init__(self, config: Config, logger: logging.Logger, *, config_path: str | None = None,
                 status_file: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.role = config.role
        self.log = logger
        # Spec §4.2 / Appendix A key_generation: software, or the token (hardware).
        self.key_source = make_key_source(config, logger)
        self.io = GatewayIO(config, logger)
        self.port = GatewayPort(self.io)
        # Inbound P3 IDs live in this gateway's dataplane: one table for every
        # session, so an ID must be unique across sessions (DESIGN.md §3).
        self.ids = P3IdAllocator()
        self.peers: dict[int, PeerDriver] = {}
        self.peer_by_address: dict[str, PeerDriver] = {}
        self.responder: ResponderHandshake | None = None
        #: primary: the IKE cookie secret shared by the responder and the worker (RFC 7296 §2.6)
        self.ike_cookies: IkeCookieSecret | None = None
        self.status_file = StatusFile(status_file, logger, group_from=config.local.admin_socket)
        # Login termination across restarts: the flows of the previous run (docs/flows.md).
        self.flow_state = FlowState(state_path(config.local.admin_socket), logger)
        self.traffic_feed = TrafficFeed()  # liveness notices a silent peer that is sent traffic
        self.admin: AdminServer | None = None
        self.metrics_server: Any = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reload_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def local_address(self) -> str:
        return str(self.config.local.address)

    # ------------------------------------------------------------ remotes

    def _peer_settings(self, remote: RemoteHost) -> PeerSettings:
        primary = self.role == "primary"
        common = dict(role=self.role, cipher=cipher_name(remote.key_type, remote.cipher),
                      local_address=self.local_address, peer_address=str(remote.address),
                      heartbeat_time_s=remote.heartbeat_time_s, heartbeat_fail_s=remote.heartbeat_fail_s)
        session = SessionConfig(
            **common, rekey_wait_s=remote.rekey_wait_s, pfs=bool(remote.pfs),  # type: ignore[arg-type]
            pfs_group="ecp256" if self.config.local.fips else "x25519",  # docs/fips.md
            use_key_arrays=remote.array_size > 0, array_size=max(remote.array_size, 1),
            data_array_time_s=remote.data_array_time_s, control_array_time_s=remote.control_array_time_s,
        ) if primary else SessionConfig(**common)  # type: ignore[arg-type]
        return PeerSettings(role=self.role, address=str(remote.address), remote_port=remote.port, session=session,
                            control_settle_s=CONTROL_SETTLE_S if primary else 0.0, announce_settings=primary)

    def _psk(self, remote: RemoteHost) -> bytes:
        if remote.psk_file is None:
            raise P3Error("CONFIG_MISSING_VALUE", f"remote {remote.id} ({remote.address}) has no psk_file",
                          hint=f"add '{remote.id}/psk_file = PATH' (a mode 0600 file)")
        return read_psk(remote.psk_file)

    def _initiator(self, remote_id: int, inbound_p3_id: int) -> InitiatorHandshake:
        remote = self.config.remote(remote_id)
        return InitiatorHandshake(
            Identity.ip(self.local_address), self._psk(remote),
            data_ciphers=(cipher_name(remote.key_type, remote.cipher),),
            remote_identity=Identity.ip(str(remote.address)), inbound_p3_id=inbound_p3_id,
            proposals=self._ike_proposals(),
        )

    def _ike_proposals(self) -> IkeProposalConfig:
        """Appendix A extension ike_groups / ike_prfs; with fips = 1 only approved ones (docs/fips.md)."""
        return IkeProposalConfig(dh_groups=self.config.local.ike_group_ids, prf_ids=self.config.local.ike_prf_ids)

    def _add_remote(self, remote: RemoteHost, now: float) -> None:
        driver = PeerDriver(remote.id, self._peer_settings(remote), self.port, self.ids, self.key_source, self.log,
                            make_handshake=(lambda p3_id: self._initiator(remote.id, p3_id))
                            if self.role == "secondary" else None)
        self.peers[remote.id] = driver
        self.peer_by_address[str(remote.address)] = driver
        self.io.add_routes(remote)
        driver.start(now)

    def _reset_flows_of_previous_run(self) -> None:
        """After a crash or restart: the LAN hosts' connections through the old sessions are reset (docs/flows.md)."""
        packets, done, flows = self.flow_state.restore(time.monotonic())
        if not flows:
            return
        self.port.write_lan(packets)
        self.log.warning("P3-E502 %d connection(s) of the previous run reset at start: tcp_flows_reset=%d "
                         "tcp_resets=%d icmp_unreachables=%d", flows, done.tcp_flows_reset, done.tcp_resets,
                         done.icmp_unreachables)

    def _remove_remote(self, driver: PeerDriver, remote: RemoteHost, now: float) -> None:
        driver.remove(now)
        self.io.remove_routes(remote)
        self.peers.pop(driver.peer_id, None)
        self.peer_by_address.pop(driver.settings.address, None)

    # ------------------------------------------------------------ the loop

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self.io.open()
        assert self.io.worker is not None
        self._loop.add_reader(self.io.worker.notify_fd, self._on_worker_packets)
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):
            self._loop.add_signal_handler(sig, handler)
        now = time.monotonic()
        for remote in self.config.remotes:
            self._add_remote(remote, now)
        if self.role == "primary":
            self.responder = self._make_responder()
            self.ike_cookies = IkeCookieSecret(self.responder, self.io.worker, now)
        self._reset_flows_of_previous_run()
        await self._start_admin()
        self.log.info("p3hw %s up: address %s port %d, %d remote(s), transport %s, %s",
                      self.role, self.local_address, self.io.udp_port, len(self.peers),
                      self.config.local.transport, self.io.lan_name())
        try:
            while not self._stop.is_set():
                self._handle_timers(time.monotonic())
                assert self.io.engine_watch is not None
                self.io.engine_watch.poll()  # logs P3-E609 when the engine fails over or comes back
                self._maybe_write_status(time.monotonic())
                self.flow_state.maybe_save(self.io.flow_tables(), time.monotonic())
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._next_deadline(time.monotonic()))
                except TimeoutError:
                    pass
                if self._reload_requested:
                    self._reload_requested = False
                    self.reload()
        finally:
            await self._stop_admin()
            self._shutdown()
        return 0

    async def _start_admin(self) -> None:
        """The admin socket (p3ctl, docs/admin.md) and the opt-in metrics endpoint; the gateway runs on without them."""
        try:
            store = Store(self.config.local.admin_store)
            self.apply_config(effective_config(self.config, store))  # group settings and overrides on top of the file
            self.admin = await start_admin_server(GatewayAdmin(self), self.config.local.admin_socket, store)
        except P3Error as exc:
            failure(self.log, exc.reason.name, f"admin socket {self.config.local.admin_socket} not served: {exc.detail}")
        except OSError as exc:  # a file or a read-only directory in the way: run on without it (docs/admin.md)
            failure(self.log, "OS_ERROR", f"admin socket {self.config.local.admin_socket} not served: "
                    f"{exc.filename or ''}: {exc.strerror or exc}; the gateway runs on without it")
        if self.config.local.metrics_port:
            try:
                self.metrics_server = await start_metrics_server(
                    self.status, self.config.local.metrics_port, allow=allow_users(self.admin and self.admin.store))
            except OSError as exc:
                failure(self.log, "OS_ERROR", f"metrics port {self.config.local.metrics_port} not served: {exc}")

    async def _stop_admin(self) -> None:
        if self.admin is not None:
            await self.admin.close()
            self.admin.store.close()
        if self.metrics_server is not None:
            self.metrics_server.close()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def wake(self) -> None:
        """Something changed the timers (an admin verb): recompute the loop's deadline."""
        self._wake.set()

    def _next_deadline(self, now: float) -> float:
        deadlines = [t for t in (d.get_timer() for d in self.peers.values()) if t is not None]
        if self.responder is not None and (timer := self.responder.get_timer()) is not None:
            deadlines.append(timer)
        return max(0.0, min(min(deadlines, default=now + MAX_SLEEP_S) - now, MAX_SLEEP_S))

    def _handle_timers(self, now: float) -> None:
        self.traffic_feed.poll(now, self.peers.values())
        for driver in list(self.peers.values()):
            driver.handle_timer(now)
        if self.responder is not None and (timer := self.responder.get_timer()) is not None and timer <= now:
            self.responder.handle_timer(now)
        if self.ike_cookies is not None:
            self.ike_cookies.handle_timer(now)

    # ------------------------------------------------------------ packets from the worker

    def _on_worker_packets(self) -> None:
        assert self.io.worker is not None
        now = time.monotonic()
        for msg in self.io.worker.receive():
            if msg.kind == "ike":
                self._on_ike(msg.data, msg.addr, msg.port, now)
            elif msg.kind == "control" and (driver := self.peers.get(msg.peer)) is not None:
                driver.receive_control(msg.data, now)
        self._wake.set()

    def _on_ike(self, data: bytes, addr: str, port: int, now: float) -> None:
        if self.responder is None:
            driver = self.peer_by_address.get(addr)
            if driver is not None:
                driver.receive_ike(data, addr, port, now)
            return
        for reply in self.responder.receive(data, now, peer_addr=(addr, port)):
            self.port.send_ike(addr, port, reply)
        for event in self.responder.events():
            addr, port = event.peer_addr if isinstance(event.peer_addr, tuple) else ("?", 0)
            if isinstance(event, HandshakeEstablished):
                if (driver := self.peer_by_address.get(str(event.peer_identity))) is not None:
                    driver.established(event, addr, port, now)
            elif isinstance(event, HandshakeFailed):
                failure(self.log, event.reason_code, f"initial exchange from {addr} port {port}: {event.detail}")
                for driver in self.peers.values():
                    if (driver.state.outer_addr, driver.state.outer_port) == (addr, port):
                        driver.refused(event.reason_code, event.detail, now)
                        break
            elif isinstance(event, MessageDropped):
                self.log.debug("%s dropped IKE message from %s: %s", event.reason_code, addr, event.detail)
            elif isinstance(event, PeerDeletedSa):
                log_peer_deleted(event, self.log, addr)

    def _make_responder(self) -> ResponderHandshake:
        def peer_for(identity: Identity) -> PeerPolicy | None:
            driver = self.peer_by_address.get(str(identity))
            if driver is None:
                return None
            remote = self.config.remote(driver.peer_id)
            try:
                psk = self._psk(remote)
            except P3Error as exc:  # refuse this attempt, keep serving the others
                failure(self.log, exc.reason.name, f"remote {remote.id} ({remote.address}): {config_error_text(exc)}")
                return None
            return PeerPolicy(psk=psk, data_ciphers=(cipher_name(remote.key_type, remote.cipher),),
                              remote_selectors=secondary_selectors(remote.address, remote.subnets))

        return ResponderHandshake(Identity.ip(self.local_address), peer_for, allocate_p3_id=self.ids.allocate,
                                  proposals=self._ike_proposals())

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, object]:
        """What an operator asks for (spec §2.1.1.1 2): sessions, keys, counters."""
        now = time.monotonic()
        peers = []
        for driver in self.peers.values():
            entry = driver.status(now)
            entry.subnets = [str(s) for s in self.config.remote(driver.peer_id).subnets]
            entry.key_source = key_source_status(self.key_source)  # what is in use, fallback included
            peers.append(entry)
        dp, worker = self.io.dp, self.io.worker
        counters = dp.counters() if dp is not None else None
        engine = dp.engine_status() if dp is not None else None
        termination = self.port.last_termination
        return GatewayStatus(
            role=self.role, address=self.local_address, pid=os.getpid(), peers=peers,
            dataplane=None if counters is None else DataplaneCounters(
                counters.sealed_packets, counters.opened_packets, counters.control_packets, counters.drops),
            worker=None if worker is None else worker.stats().__dict__, io=self.io.status(),
            engine=None if engine is None else {**engine.__dict__, "active": engine.active},
            termination=None if termination is None else termination.__dict__,
            stale_resets=sum(t.stale_resets() for t in self.io.flow_tables()), version=p3hw.__version__,
            ike=ike_status(self.responder, [d.ike_sa for d in self.peers.values()]),
        ).to_dict()

    def _maybe_write_status(self, now: float) -> None:
        if self.status_file.due(now):
            self.status_file.write(now, self.status())

    # ------------------------------------------------------------ configuration

    def apply_config(self, config: Config) -> None:
        """Make *config* the one in force: timers change live, the rest with the next session."""
        self.config = config
        self.io.config = config
        now = time.monotonic()
        for remote in config.remotes:
            if (driver := self.peers.get(remote.id)) is not None:
                driver.change_settings(self._peer_settings(remote), now)
        self._wake.set()

    def reload(self) -> None:
        """SIGHUP: added and removed remotes and subnets take effect; other sessions stay up."""
        if self.config_path is None:
            return
        try:
            new = load_config(self.config_path, role=self.role)
        except P3Error as exc:  # ConfigErrors: keep running on the old configuration; each error with its own code
            for error in getattr(exc, "errors", [exc]):
                failure(self.log, error.reason.name, "reload refused, keeping the running configuration: "
                        f"{config_error_text(error)}")
            return
        if self.admin is not None:  # group settings and overrides stay on top (docs/admin.md)
            new = effective_config(new, self.admin.store)
        now = time.monotonic()
        old_by_id = {remote_id: self.config.remote(remote_id) for remote_id in self.peers}
        new_by_id = {r.id: r for r in new.remotes}
        plan = plan_reload(old_by_id, new_by_id)
        for remote_id in plan.removed:
            self._remove_remote(self.peers[remote_id], old_by_id[remote_id], now)
        self.config = self.io.config = new
        for remote_id in plan.retimed:  # the same input as `p3ctl config set`: the session goes on
            self.peers[remote_id].change_settings(self._peer_settings(new_by_id[remote_id]), now)
        for remote_id in plan.added:
            self._add_remote(new_by_id[remote_id], now)
        gone = {s for r in old_by_id.values() for s in r.subnets} - {s for r in new.remotes for s in r.subnets}
        self.io.subnets_gone(list(gone), "removed by the reload")
        self.log.info("configuration reloaded: %d remote(s)", len(self.peers))

    def _shutdown(self) -> None:
        now = time.monotonic()
        for driver in list(self.peers.values()):
            driver.stop(now, f"{self.role} is stopping")
        self.status_file.written_at = 0.0
        if self.status_file.path is not None:
            self._maybe_write_status(time.monotonic() + STATUS_INTERVAL_S)
        if self._loop is not None and self.io.worker is not None:
            self._loop.remove_reader(self.io.worker.notify_fd)
        self.io.stop_worker()
        self.flow_state.save(self.io.flow_tables(), time.monotonic())
        self.io.close()
        close = getattr(self.key_source, "close", None)
        if close is not None:
            close()  # token sessions
        self.log.info("p3hw %s stopped", self.role)
