"""The gateway daemon: wires the sans-I/O machines to the native worker.

One asyncio loop per gateway. The native worker (native/src/worker.c) moves
every data packet; this loop only sees IKE messages and control-channel
packets (through the worker's queue, an eventfd on the loop) and timers.
It executes what the machines return: install and remove SAs (with the
worker paused between two bursts), seal and send control packets, terminate
enterprise connections, log with reason codes.

Roles differ only in who starts the initial exchange (spec §2.1.2: the
secondary dials, the primary never does) and in recovery (the secondary
retries with the 5 s-step backoff of §2.1.7).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from p3hw.admin.metrics import start_metrics_server
from p3hw.admin.server import effective_config, start_admin_server
from p3hw.admin.store import Store
from p3hw.backends import tun as tun_backend
from p3hw.backends.esp import open_esp
from p3hw.backends.pkcs11.token import read_pin
from p3hw.backends.udp import open_udp
from p3hw.config import Config, RemoteHost, load_config, read_psk
from p3hw.constants import NON_ESP_MARKER
from p3hw.crypto.keyarray import ArrayKind
from p3hw.crypto.keygen import make_key_source
from p3hw.crypto.keys import SessionKeys, cipher_name
from p3hw.dataplane import (
    Dataplane,
    DpdkPorts,
    EngineParams,
    EngineWatch,
    FlowTable,
    PeerConfig,
    Routes,
    Terminated,
    Worker,
)
from p3hw.log import failure
from p3hw.protocol.control import SendControlPacket
from p3hw.protocol.handshake import (
    HandshakeEstablished,
    HandshakeFailed,
    InitiatorHandshake,
    MessageDropped,
    PeerPolicy,
    ResponderHandshake,
)
from p3hw.protocol.recovery import (
    Reconnect,
    Recovery,
    ScheduleReconnect,
    SyslogMessage,
    TerminateEnterpriseConnections,
)
from p3hw.protocol.rekey import InstallInboundSa, InstallOutboundSa, RekeyCompleted, RemoveInboundSa
from p3hw.protocol.session import ConfigReceived, Session, SessionConfig, SessionLost
from p3hw.reasons import P3Error
from p3hw.runtime.ike_cookies import IkeCookieSecret
from p3hw.runtime.shards import ShardedDataplane, ShardedFlows
from p3hw.wire.ike import Identity

#: Outer path MTU assumed for the WAN (bytes); the TUN MTU leaves room for
#: the largest P3 overhead (IPv6 40 + UDP 8 + P3 16 + ICV 16 + trailer 3).
WAN_MTU = 1500
TUN_MTU = 1400
#: Flow table size and idle timeouts for login termination (docs/flows.md).
#: The primary holds a new session's first control packets this long: its IKE_AUTH response
#: and its first control packet would otherwise reach the secondary back to back, and the
#: secondary's worker meets the control packet before its control plane has installed the
#: keys (DP_UNKNOWN_SESSION; the control channel would resend it 2 s later). docs/runtime.md.
CONTROL_SETTLE_S = 0.1
FLOW_CAPACITY = 65536
FLOW_TCP_IDLE_MS = 3 * 3600 * 1000
FLOW_OTHER_IDLE_MS = 180 * 1000
#: Longest the loop sleeps without a timer, so a stop request is seen soon.
MAX_SLEEP_S = 0.5
#: A failed crypto engine is probed this often, and taken back when it answers right.
ENGINE_RECOVER_MS = 30_000
#: How often --status-file is rewritten.
STATUS_INTERVAL_S = 0.5


@dataclass
class PeerState:
    """Everything the daemon knows about one remote host."""

    remote: RemoteHost
    peer_id: int
    session: Session | None = None
    handshake: InitiatorHandshake | None = None
    recovery: Recovery | None = None
    outer_addr: str = ""
    outer_port: int = 0
    established_at: float | None = None
    rekeys_earlier_sessions: int = 0
    last_rekey_at: float | None = None
    sessions_started: int = 0
    in_dataplane: bool = False
    #: packets and bytes of SAs already gone (the live SAs' are added in status)
    done_in: list[int] = field(default_factory=lambda: [0, 0])
    done_out: list[int] = field(default_factory=lambda: [0, 0])
    losses: list[str] = field(default_factory=list)
    live_inbound: set[int] = field(default_factory=set)
    used_p3_ids: set[int] = field(default_factory=set)
    #: primary: control packets of a new session wait until then (CONTROL_SETTLE_S)
    hold_control_until: float = 0.0
    held_control: list[bytes] = field(default_factory=list)

    @property
    def rekeys_completed(self) -> int:
        """Rekeys completed with this remote, over every session since start."""
        current = 0
        if self.session is not None:
            current = int(self.session.status()["rekeys_completed"])  # type: ignore[call-overload]
        return self.rekeys_earlier_sessions + current

    @property
    def state(self) -> str:
        if self.session is not None and self.session.lost is None:
            return "established"
        if self.handshake is not None:
            return "connecting"
        if self.recovery is not None and self.recovery.reconnect_at_s is not None:
            return "waiting"
        return "down"


class _PeerIds:
    """The session's inbound P3 ID allocator: random, unique in the gateway, never reused in the session."""

    def __init__(self, gateway: Gateway, peer: PeerState) -> None:
        self.gateway, self.peer = gateway, peer

    def allocate(self) -> int:
        return self.gateway._allocate_p3_id(self.peer.used_p3_ids)


class Gateway:
    """A primary or secondary gateway running in the foreground."""

    def __init__(self, config: Config, logger: logging.Logger, *, config_path: str | None = None,
                 status_file: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.status_file = status_file
        self._status_written_at = 0.0
        self.role = config.role
        self.log = logger
        # Spec §4.2 / Appendix A key_generation: software, or the token (hardware).
        self.key_source = make_key_source(config, logger)
        self.peers: dict[int, PeerState] = {}
        self.peer_by_address: dict[str, PeerState] = {}
        self.responder: ResponderHandshake | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dp: Dataplane | ShardedDataplane | None = None
        self.routes: Routes | None = None
        self.flows: FlowTable | ShardedFlows | None = None
        self.worker: Worker | None = None
        self.tun_fd = -1
        self.tun_offloads = True
        self.udp = None
        self.udp_port = 0
        self.esp = None
        self._kernel_routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        # Inbound P3 IDs live in this gateway's dataplane: one table for every
        # session, so an ID must be unique across sessions (DESIGN.md §3).
        self._live_p3_ids: set[int] = set()

    # ------------------------------------------------------------ set-up

    @property
    def local_address(self) -> str:
        return str(self.config.local.address)

    def _open_io(self) -> None:
        local = self.config.local
        workers = local.dpdk_workers if local.io == "dpdk" else 1
        if workers > 1:
            # One context and flow table per worker; peer p lives in shard p % n (docs/dpdk.md).
            self.dp = ShardedDataplane([Dataplane() for _ in range(workers)])
            self.flows = ShardedFlows([FlowTable(FLOW_CAPACITY, FLOW_TCP_IDLE_MS, FLOW_OTHER_IDLE_MS)
                                       for _ in range(workers)])
        else:
            self.dp = Dataplane()
            self.flows = FlowTable(FLOW_CAPACITY, FLOW_TCP_IDLE_MS, FLOW_OTHER_IDLE_MS)
        self.dp.set_local_address(self.local_address)
        self._set_crypto_engine()
        self.routes = Routes()
        if local.io == "dpdk":
            self._open_dpdk_ports()
            return
        self.tun_fd = tun_backend.open_tun(local.interface, offloads=self.tun_offloads)
        port = local.port if self.role == "primary" else self._secondary_port()
        self.udp = open_udp(local.address, port)
        self.udp_port = self.udp.getsockname()[1]
        esp_fd, esp_family = -1, local.address.version
        if local.transport == "esp":
            self.esp = open_esp(local.address)
            esp_fd = self.esp.fileno()
        tun_backend.configure(local.interface, [], TUN_MTU)
        self.worker = Worker(self.dp, self.routes, self.flows, lan_fd=self.tun_fd, wan_fd=self.udp.fileno(),
                             esp_fd=esp_fd, esp_family=esp_family)
        self.worker.start()

    def _open_dpdk_ports(self) -> None:
        """io = dpdk: the worker polls two ethdev ports; no TUN, no socket, no kernel routes (docs/dpdk.md)."""
        local = self.config.local
        assert local.dpdk_lan_port and local.dpdk_wan_port and local.dpdk_lan_address is not None
        # A secondary with no single remote port still needs a fixed one: nothing picks an ephemeral port here.
        self.udp_port = local.port if self.role == "primary" else (self._secondary_port() or local.port)
        full = local.address.max_prefixlen
        # Without a WAN gateway every peer is on the WAN link; with one, only the gateway is.
        wan = ipaddress.ip_interface(f"{local.address}/{full if local.dpdk_wan_gateway else 0}")
        planes = self.dp.shards if isinstance(self.dp, ShardedDataplane) else self.dp
        tables = self.flows.shards if isinstance(self.flows, ShardedFlows) else self.flows
        self.worker = Worker(planes, self.routes, tables, dpdk=DpdkPorts(
            lan_port=local.dpdk_lan_port, wan_port=local.dpdk_wan_port, lan_address=local.dpdk_lan_address,
            wan_address=wan, udp_port=self.udp_port, lan_gateway=local.dpdk_lan_gateway,
            wan_gateway=local.dpdk_wan_gateway, eal_args=local.dpdk_eal_args, workers=local.dpdk_workers,
            cpus=local.dpdk_cpus))
        self.worker.start()

    def _set_crypto_engine(self) -> None:
        """Appendix A extension crypto_engine: AES-NI, the accelerator, or the HSM (docs/engines.md)."""
        local = self.config.local
        assert self.dp is not None
        self.engine_watch = EngineWatch(self.dp, self.log)
        if local.crypto_engine == "aesni":
            return
        pin = read_pin(local.pkcs11_pin_file) if local.crypto_engine == "pkcs11" else ""
        hsm = local.crypto_engine == "pkcs11"
        self.dp.set_engine(local.crypto_engine, EngineParams(
            recover_ms=ENGINE_RECOVER_MS, module_path=(local.pkcs11_module or "") if hsm else "",
            token_label=local.pkcs11_token or "", pin=pin, eal_args=local.dpdk_eal_args), local.crypto_fallback)

    def _lan_name(self) -> str:
        local = self.config.local
        return f"DPDK port {local.dpdk_lan_port}" if local.io == "dpdk" else f"interface {local.interface}"

    def _secondary_port(self) -> int:
        ports = {r.port for r in self.config.remotes}
        return ports.pop() if len(ports) == 1 else 0

    def _add_remote(self, remote: RemoteHost) -> PeerState:
        peer = PeerState(remote=remote, peer_id=remote.id)
        self.peers[remote.id] = peer
        self.peer_by_address[str(remote.address)] = peer
        assert self.routes is not None
        for subnet in remote.subnets:
            self.routes.add(str(subnet), remote.id)
            if self.tun_fd >= 0:
                tun_backend.add_route(self.config.local.interface, subnet)
                self._kernel_routes.append(subnet)
        if self.role == "secondary":
            peer.recovery = Recovery("secondary", str(remote.address))
        return peer

    def _remove_remote(self, peer: PeerState, now: float) -> None:
        peer.hold_control_until, peer.held_control = 0.0, []
        if peer.session is not None and peer.session.lost is None:
            peer.session.shutdown(now, "P3-E504", "remote removed from the configuration")
            self._run_session_actions(peer, now)
        self._teardown_peer_dataplane(peer)
        assert self.routes is not None
        for subnet in peer.remote.subnets:
            try:
                self.routes.delete(str(subnet))
            except P3Error:
                pass
            if subnet in self._kernel_routes:
                tun_backend.remove_route(self.config.local.interface, subnet)
                self._kernel_routes.remove(subnet)
        if self.flows is not None:
            self.flows.forget(peer.peer_id)
        self.peers.pop(peer.peer_id, None)
        self.peer_by_address.pop(str(peer.remote.address), None)

    # ------------------------------------------------------------ the loop

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._open_io()
        assert self.worker is not None
        self._loop.add_reader(self.worker.notify_fd, self._on_worker_packets)
        for sig, handler in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                             (signal.SIGHUP, self.request_reload)):
            self._loop.add_signal_handler(sig, handler)
        now = time.monotonic()
        for remote in self.config.remotes:
            peer = self._add_remote(remote)
            if self.role == "secondary":
                self._start_handshake(peer, now)
        if self.role == "primary":
            self.responder = self._make_responder()
            assert self.worker is not None
            self.ike_cookies = IkeCookieSecret(self.responder, self.worker, now)
        await self._start_admin()
        self.log.info("p3hw %s up: address %s port %d, %d remote(s), transport %s, %s",
                      self.role, self.local_address, self.udp_port, len(self.peers),
                      self.config.local.transport, self._lan_name())
        try:
            while not self._stop.is_set():
                self._handle_timers(time.monotonic())
                self.engine_watch.poll()  # logs P3-E609 when the engine fails over or comes back
                self._maybe_write_status(time.monotonic())
                delay = self._next_deadline(time.monotonic())
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                except TimeoutError:
                    pass
                if self._reload_requested:
                    self._reload_requested = False
                    self._reload()
        finally:
            await self._stop_admin()
            self._shutdown()
        return 0

    async def _start_admin(self) -> None:
        """The admin socket (p3ctl, docs/admin.md) and the opt-in metrics endpoint; the gateway runs on without them."""
        self.admin = None
        self.metrics_server = None
        try:
            store = Store(self.config.local.admin_store)
            self.config = effective_config(self.config, store)  # group settings and overrides on top of the file
            for peer in self.peers.values():
                peer.remote = self.config.remote(peer.peer_id)
            self.admin = await start_admin_server(self, self.config.local.admin_socket, store)
        except P3Error as exc:
            failure(self.log, exc.reason.name, f"admin socket {self.config.local.admin_socket} not served: {exc.detail}")
        if self.config.local.metrics_port:
            try:
                self.metrics_server = await start_metrics_server(self.status, self.config.local.metrics_port)
            except OSError as exc:
                failure(self.log, "OS_ERROR", f"metrics port {self.config.local.metrics_port} not served: {exc}")

    async def _stop_admin(self) -> None:
        if self.admin is not None:
            await self.admin.close()
            self.admin.store.close()
        if self.metrics_server is not None:
            self.metrics_server.close()

    _reload_requested = False

    # ------------------------------------------------------------ status

    def status(self) -> dict[str, object]:
        """What an operator asks for (spec §2.1.1.1 2): sessions, keys, counters."""
        now = time.monotonic()
        peers = []
        for peer in self.peers.values():
            entry: dict[str, object] = {
                "id": peer.peer_id, "address": str(peer.remote.address), "state": peer.state,
                "subnets": [str(s) for s in peer.remote.subnets],
                "outer": f"{peer.outer_addr}:{peer.outer_port}" if peer.outer_addr else "",
                "since_s": round(now - peer.established_at, 3) if peer.established_at is not None else None,
                "sessions_started": peer.sessions_started, "rekeys_completed": peer.rekeys_completed,
                "losses": list(peer.losses),
            }
            if peer.in_dataplane and self.dp is not None:
                entry["outbound_p3_id"] = self.dp.outbound_id(peer.peer_id)
            session = peer.session
            if session is not None and session.lost is None:
                session_status = session.status()
                entry["inbound_p3_id"] = session_status["inbound_p3_id"]
                entry["control_retransmissions"] = session_status["control_retransmissions"]
                entry["heartbeat_rtt_ms"] = session_status["heartbeat_rtt_ms"]
                entry["key_type"] = session.config.cipher
                if session.primary is not None:
                    entry["next_rekey_s"] = round(max(0.0, session.primary.next_rekey_s - now), 3)
            entry["key_source"] = "hardware" if self.config.local.key_generation == 2 else "software"
            if peer.last_rekey_at is not None:
                entry["last_rekey_s"] = round(now - peer.last_rekey_at, 3)
            (entry["packets_in"], entry["packets_out"],
             entry["bytes_in"], entry["bytes_out"]) = self._live_counts(peer)
            peers.append(entry)
        counters = self.dp.counters() if self.dp is not None else None
        worker = self.worker.stats() if self.worker is not None else None
        return {
            "role": self.role, "address": self.local_address, "pid": os.getpid(), "peers": peers,
            "dataplane": None if counters is None else {
                "sealed_packets": counters.sealed_packets, "opened_packets": counters.opened_packets,
                "control_packets": counters.control_packets, "drops": counters.drops,
            },
            "worker": None if worker is None else worker.__dict__,
            "io": self._io_status(),
            "engine": None if self.dp is None else {**self.dp.engine_status().__dict__,
                                                    "active": self.dp.engine_status().active},
            "termination": None if self.last_termination is None else self.last_termination.__dict__,
        }

    def _io_status(self) -> dict[str, object]:
        """Where the packets come from and go to: the kernel's TUN and socket, or the DPDK ports."""
        local = self.config.local
        if local.io == "dpdk":
            return {"backend": "dpdk", "lan_port": local.dpdk_lan_port, "wan_port": local.dpdk_wan_port,
                    "lan_address": str(local.dpdk_lan_address), "udp_port": self.udp_port,
                    "workers": local.dpdk_workers}
        return {"backend": "kernel", "interface": local.interface, "transport": local.transport,
                "udp_port": self.udp_port}

    def _maybe_write_status(self, now: float) -> None:
        if self.status_file is None or now - self._status_written_at < STATUS_INTERVAL_S:
            return
        self._status_written_at = now
        tmp = f"{self.status_file}.tmp"
        with open(tmp, "w") as out:
            json.dump(self.status(), out)
        os.replace(tmp, self.status_file)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def _next_deadline(self, now: float) -> float:
        deadlines = []
        for peer in self.peers.values():
            for machine in (peer.session, peer.handshake):
                if machine is None:
                    continue
                timer = machine.get_timer() if isinstance(machine, Session) else machine.next_timer()
                if timer is not None:
                    deadlines.append(timer)
            if peer.recovery is not None and peer.recovery.get_timer() is not None:
                deadlines.append(peer.recovery.get_timer())
            if peer.held_control:
                deadlines.append(peer.hold_control_until)
        if self.responder is not None and self.responder.next_timer() is not None:
            deadlines.append(self.responder.next_timer())
        if not deadlines:
            return MAX_SLEEP_S
        return max(0.0, min(min(deadlines) - now, MAX_SLEEP_S))

    def _handle_timers(self, now: float) -> None:
        for peer in list(self.peers.values()):
            if peer.held_control and now >= peer.hold_control_until:
                held, peer.held_control = peer.held_control, []
                for packet in held:
                    self._send_control(peer, packet)
            if peer.handshake is not None:
                timer = peer.handshake.next_timer()
                if timer is not None and timer <= now:
                    self._send_ike(peer.outer_addr or str(peer.remote.address), peer.remote.port,
                                   peer.handshake.handle_timer(now))
                    self._drain_handshake(peer, now)
            if peer.session is not None and peer.session.lost is None:
                timer = peer.session.get_timer()
                if timer is not None and timer <= now:
                    peer.session.handle_timer(now)
                    self._run_session_actions(peer, now)
            if peer.recovery is not None:
                timer = peer.recovery.get_timer()
                if timer is not None and timer <= now:
                    self._run_recovery(peer, peer.recovery.handle_timer(now), now)
        if self.responder is not None:
            timer = self.responder.next_timer()
            if timer is not None and timer <= now:
                self.responder.handle_timer(now)
        if self.ike_cookies is not None:
            self.ike_cookies.handle_timer(now)

    # ------------------------------------------------------------ packets from the worker

    def _on_worker_packets(self) -> None:
        assert self.worker is not None
        now = time.monotonic()
        for msg in self.worker.receive():
            if msg.kind == "ike":
                self._on_ike(msg.data, msg.addr, msg.port, now)
            elif msg.kind == "control":
                peer = self.peers.get(msg.peer)
                if peer is not None and peer.session is not None:
                    peer.session.receive_control_packet(msg.data, now)
                    self._run_session_actions(peer, now)
        self._wake.set()

    def _on_ike(self, data: bytes, addr: str, port: int, now: float) -> None:
        if self.role == "primary":
            assert self.responder is not None
            replies = self.responder.receive(data, now, peer_addr=(addr, port))
            self._send_ike(addr, port, replies)
            self._drain_responder(now)
            return
        peer = self.peer_by_address.get(addr)
        if peer is None or peer.handshake is None:
            return
        self._send_ike(addr, port, peer.handshake.receive(data, now))
        self._drain_handshake(peer, now)

    def _send_ike(self, addr: str, port: int, messages: list[bytes]) -> None:
        assert self.worker is not None
        for message in messages:
            try:
                self.worker.send(addr, port, NON_ESP_MARKER + message)
            except P3Error as exc:
                # No route yet, address still tentative, ...: the exchange's own
                # retransmission tries again.
                self.log.warning("%s cannot send IKE to %s port %d: %s", exc.code, addr, port, exc.detail)

    # ------------------------------------------------------------ initial exchange

    def _psk(self, remote: RemoteHost) -> bytes:
        if remote.psk_file is None:
            raise P3Error("CONFIG_MISSING_VALUE", f"remote {remote.id} ({remote.address}) has no psk_file",
                          hint=f"add '{remote.id}/psk_file = PATH' (a mode 0600 file)")
        return read_psk(remote.psk_file)

    def _allocate_p3_id(self, used_in_session: set[int] | None = None) -> int:
        """A random inbound P3 ID no live session holds and (given its set) this session never had."""
        while True:
            candidate = int.from_bytes(os.urandom(4), "big")
            if candidate and candidate not in self._live_p3_ids and (
                    used_in_session is None or candidate not in used_in_session):
                self._live_p3_ids.add(candidate)
                if used_in_session is not None:
                    used_in_session.add(candidate)
                return candidate

    def _start_handshake(self, peer: PeerState, now: float) -> None:
        remote = peer.remote
        peer.handshake = InitiatorHandshake(
            Identity.ip(self.local_address), self._psk(remote),
            data_ciphers=(cipher_name(remote.key_type, remote.cipher),),
            remote_identity=Identity.ip(str(remote.address)),
            inbound_p3_id=self._allocate_p3_id(),
        )
        self._send_ike(str(remote.address), remote.port, peer.handshake.start(now))

    def _drain_handshake(self, peer: PeerState, now: float) -> None:
        assert peer.handshake is not None
        while (event := peer.handshake.next_event()) is not None:
            if isinstance(event, HandshakeEstablished):
                peer.handshake = None
                self._establish(peer, event, str(peer.remote.address), peer.remote.port, now)
                if peer.recovery is not None:
                    self._run_recovery(peer, peer.recovery.connected(now), now)
                return
            if isinstance(event, HandshakeFailed):
                peer.handshake = None
                failure(self.log, event.reason_code, f"initial exchange with {peer.remote.address}: {event.detail}")
                if peer.recovery is not None:
                    self._run_recovery(peer, peer.recovery.connect_failed(now, f"{event.reason_code} {event.detail}"), now)
                return
            if isinstance(event, MessageDropped):
                self.log.debug("%s dropped IKE message: %s", event.reason_code, event.detail)

    def _make_responder(self) -> ResponderHandshake:
        def peer_for(identity: Identity) -> PeerPolicy | None:
            peer = self.peer_by_address.get(str(identity))
            if peer is None:
                return None
            remote = peer.remote
            return PeerPolicy(psk=self._psk(remote), data_ciphers=(cipher_name(remote.key_type, remote.cipher),))

        return ResponderHandshake(Identity.ip(self.local_address), peer_for, allocate_p3_id=self._allocate_p3_id)

    def _drain_responder(self, now: float) -> None:
        assert self.responder is not None
        while (event := self.responder.next_event()) is not None:
            addr, port = event.peer_addr if isinstance(event.peer_addr, tuple) else ("?", 0)
            if isinstance(event, HandshakeEstablished):
                peer = self.peer_by_address.get(str(event.peer_identity))
                if peer is None:
                    continue
                if peer.session is not None and peer.session.lost is None:
                    # The secondary started over (it lost us): the old session is gone.
                    self._session_lost(peer, SessionLost("P3-E502", "the secondary re-established the session"), now)
                self._establish(peer, event, addr, port, now)
            elif isinstance(event, HandshakeFailed):
                failure(self.log, event.reason_code, f"initial exchange from {addr} port {port}: {event.detail}")
                peer = self._peer_by_outer(addr, port)
                if peer is not None and peer.session is not None and peer.established_at == now:
                    # Established, then refused by the secondary: withdraw what was installed.
                    self._session_lost(peer, SessionLost(event.reason_code, event.detail), now)
            elif isinstance(event, MessageDropped):
                self.log.debug("%s dropped IKE message from %s: %s", event.reason_code, addr, event.detail)

    def _peer_by_outer(self, addr: str, port: int) -> PeerState | None:
        for peer in self.peers.values():
            if peer.outer_addr == addr and peer.outer_port == port:
                return peer
        return None

    # ------------------------------------------------------------ sessions

    def _establish(self, peer: PeerState, event: HandshakeEstablished, addr: str, port: int, now: float) -> None:
        assert self.dp is not None and self.worker is not None
        keys: SessionKeys = event.keys
        remote = peer.remote
        peer.outer_addr, peer.outer_port = addr, port
        encap = self.config.local.transport
        with self.worker.paused():
            if peer.in_dataplane:
                self.dp.remove_peer(peer.peer_id)
            self.dp.add_peer(PeerConfig(
                peer_id=peer.peer_id, local_addr=self.local_address, remote_addr=addr, encap=encap,
                local_port=self.udp_port, remote_port=port if encap == "udp" else 0, mtu=WAN_MTU,
            ))
            self.dp.install_session(peer.peer_id, keys)
        peer.in_dataplane = True
        peer.live_inbound = {keys.inbound.p3_id}
        peer.used_p3_ids = {keys.inbound.p3_id}
        self._live_p3_ids.add(keys.inbound.p3_id)
        peer.session = Session(
            SessionConfig(
                role=self.role, cipher=event.data_cipher, local_address=self.local_address,
                peer_address=str(remote.address), rekey_wait_s=remote.rekey_wait_s, pfs=bool(remote.pfs),
                heartbeat_time_s=remote.heartbeat_time_s, heartbeat_fail_s=remote.heartbeat_fail_s,
                use_key_arrays=self.role == "primary" and remote.array_size > 0,
                array_size=max(remote.array_size, 1),
                data_array_time_s=remote.data_array_time_s, control_array_time_s=remote.control_array_time_s,
            ) if self.role == "primary" else SessionConfig(
                role=self.role, cipher=event.data_cipher, local_address=self.local_address,
                peer_address=str(remote.address), heartbeat_time_s=remote.heartbeat_time_s,
                heartbeat_fail_s=remote.heartbeat_fail_s,
            ),
            keys, self.key_source, now, id_allocator=_PeerIds(self, peer),
        )
        peer.established_at = now
        peer.sessions_started += 1
        self.log.info("session with %s (%s port %d) established: %s, P3 IDs in %#010x out %#010x",
                      remote.address, addr, port, event.data_cipher, keys.inbound.p3_id, keys.outbound.p3_id)
        if self.role == "primary":
            peer.hold_control_until, peer.held_control = now + CONTROL_SETTLE_S, []
            # The liveness timers are primary-side keywords (Appendix A 1); the
            # secondary learns them through the control channel.
            peer.session.send_config(json.dumps({"heartbeat_time_s": remote.heartbeat_time_s,
                                                 "heartbeat_fail_s": remote.heartbeat_fail_s}), now)
        self._run_session_actions(peer, now)

    def _apply_peer_settings(self, peer: PeerState, settings: str) -> None:
        """Secondary: take the primary's heartbeat timers (sent as CONFIG after the handshake)."""
        if self.role != "secondary" or peer.session is None:
            return
        try:
            values = json.loads(settings)
            heartbeat_time_s = float(values["heartbeat_time_s"])
            heartbeat_fail_s = float(values["heartbeat_fail_s"])
        except (ValueError, KeyError, TypeError):
            failure(self.log, "CTL_MALFORMED", f"unusable settings from {peer.remote.address}: {settings[:80]!r}",
                    logging.WARNING)
            return
        if 0 < heartbeat_time_s <= 86400 and 0 < heartbeat_fail_s <= 86400:
            peer.session.liveness.heartbeat_time_s = heartbeat_time_s
            peer.session.liveness.heartbeat_fail_s = heartbeat_fail_s

    def _run_session_actions(self, peer: PeerState, now: float) -> None:
        session = peer.session
        if session is None or self.dp is None or self.worker is None:
            return
        # Actions can beget actions (outbound_installed answers with SWITCH): loop until quiet.
        for _ in range(16):
            actions = session.actions()
            if not actions and session.lost is None:
                return
            for action in actions:
                if isinstance(action, SendControlPacket):
                    self._send_control(peer, action.packet)
                elif isinstance(action, InstallInboundSa):
                    with self.worker.paused():
                        self.dp.add_inbound_sa(peer.peer_id, action.sa)
                    peer.live_inbound.add(action.sa.p3_id)
                elif isinstance(action, InstallOutboundSa):
                    with self.worker.paused():
                        self._retire_sa_counters(peer, "out", self.dp.outbound_id(peer.peer_id))
                        self.dp.add_outbound_sa(peer.peer_id, action.sa, 0)
                    # A new outbound SA seals from seq 1 (DESIGN.md §3); it takes over with
                    # the next packet, so next_seq() would still name the old SA's counter.
                    first_seq = 1
                    session.outbound_installed(action.sa.p3_id, first_seq, now)
                elif isinstance(action, RemoveInboundSa):
                    peer.live_inbound.discard(action.p3_id)
                    self._live_p3_ids.discard(action.p3_id)
                    with self.worker.paused():
                        self._retire_sa_counters(peer, "in", action.p3_id)
                        try:
                            self.dp.remove_sa("in", peer.peer_id, action.p3_id)
                        except P3Error:
                            pass
                elif isinstance(action, RekeyCompleted):
                    peer.last_rekey_at = now
                    self.log.info("rekey %d with %s completed", action.rekey_id, peer.remote.address)
                elif isinstance(action, ConfigReceived):
                    self._apply_peer_settings(peer, action.settings)
                elif isinstance(action, SessionLost):
                    pass
            if session.lost is not None:
                self._session_lost(peer, session.lost, now)
                return

    def _retire_sa_counters(self, peer: PeerState, direction: str, p3_id: int) -> None:
        """Keep an SA's counts in the peer's totals before it goes (call with the worker paused)."""
        assert self.dp is not None
        try:
            counters = self.dp.sa_counters(direction, peer.peer_id, p3_id)
        except P3Error:
            return
        totals = peer.done_in if direction == "in" else peer.done_out
        if direction == "in":
            totals[0] += counters.opened_packets
            totals[1] += counters.opened_bytes
        else:
            totals[0] += counters.sealed_packets
            totals[1] += counters.sealed_bytes

    def _live_counts(self, peer: PeerState) -> tuple[int, int, int, int]:
        """Packets and bytes in and out of *peer* since the gateway started."""
        packets_in, bytes_in = peer.done_in
        packets_out, bytes_out = peer.done_out
        if self.dp is not None and peer.in_dataplane and peer.session is not None:
            for p3_id in peer.live_inbound:
                try:
                    c = self.dp.sa_counters("in", peer.peer_id, p3_id)
                except P3Error:
                    continue
                packets_in += c.opened_packets
                bytes_in += c.opened_bytes
            try:
                c = self.dp.sa_counters("out", peer.peer_id, self.dp.outbound_id(peer.peer_id))
                packets_out += c.sealed_packets
                bytes_out += c.sealed_bytes
            except P3Error:
                pass
        return packets_in, packets_out, bytes_in, bytes_out

    def _send_control(self, peer: PeerState, inner_packet: bytes) -> None:
        assert self.dp is not None and self.worker is not None
        if time.monotonic() < peer.hold_control_until:
            peer.held_control.append(inner_packet)    # sealed and sent when the settle time is over
            return
        try:    # sealed with the data SA and sent by the worker that owns the peer: no pause
            self.worker.send_control(peer.peer_id, inner_packet)
        except P3Error as exc:  # the control channel retransmits
            self.log.warning("%s cannot send a control packet to %s: %s", exc.code, peer.outer_addr, exc.detail)

    def _session_lost(self, peer: PeerState, lost: SessionLost, now: float) -> None:
        peer.hold_control_until, peer.held_control = 0.0, []   # the lost session's, never to be sent
        peer.losses.append(lost.reason_code)
        recovery = peer.recovery or Recovery("primary", str(peer.remote.address))
        facts = dict(lost.facts)
        facts["rekeys_completed"] = peer.rekeys_completed
        # Spec §2.1.7: connections are terminated at once, and the one failure
        # line carries what was done with the other facts.
        done = self._terminate_flows(peer)
        facts["tcp_flows_reset"] = done.tcp_flows_reset
        facts["tcp_resets"] = done.tcp_resets
        facts["icmp_unreachables"] = done.icmp_unreachables
        actions = recovery.session_lost(now, lost.reason_code, lost.detail, facts)
        self._run_recovery(peer, [a for a in actions if not isinstance(a, TerminateEnterpriseConnections)], now)
        self._teardown_peer_dataplane(peer)
        peer.rekeys_earlier_sessions = peer.rekeys_completed
        peer.session = None

    def _teardown_peer_dataplane(self, peer: PeerState) -> None:
        if self.dp is None or self.worker is None:
            return
        if not peer.in_dataplane:
            return
        with self.worker.paused():
            for p3_id in peer.live_inbound:
                self._retire_sa_counters(peer, "in", p3_id)
            self._retire_sa_counters(peer, "out", self.dp.outbound_id(peer.peer_id))
            self.dp.remove_peer(peer.peer_id)
        self._live_p3_ids.difference_update(peer.live_inbound)
        peer.live_inbound = set()
        peer.in_dataplane = False

    def _run_recovery(self, peer: PeerState, actions: list, now: float) -> None:
        for action in actions:
            if isinstance(action, TerminateEnterpriseConnections):
                self._terminate_flows(peer)
            elif isinstance(action, SyslogMessage):
                level = {"err": logging.ERROR, "warning": logging.WARNING}.get(action.severity, logging.INFO)
                self.log.log(level, "%s", action.message)
            elif isinstance(action, ScheduleReconnect):
                self.log.info("reconnecting to %s in %g s (attempt %d)", peer.remote.address, action.wait_s,
                              action.attempt)
            elif isinstance(action, Reconnect):
                self._start_handshake(peer, now)

    def _terminate_flows(self, peer: PeerState) -> Terminated:
        """Spec §2.1.7 1): reset every enterprise connection through the lost session."""
        if self.flows is None:
            return Terminated()
        packets, done = self.flows.terminate(peer.peer_id, int(time.monotonic() * 1000))
        assert self.worker is not None
        for packet in packets:    # into the TUN or out of the LAN port, from the worker's thread
            try:
                self.worker.send_lan(packet, wait_s=1.0)
            except P3Error:
                break
        self.last_termination = done
        return done

    last_termination = None
    ike_cookies: IkeCookieSecret | None = None

    # ------------------------------------------------------------ administration (p3hw/admin AdminTarget)

    def _act(self, peer_ids: list[int], action: str) -> dict[str, object]:
        """Run *action* on each established session named; say which were done and why not."""
        now = time.monotonic()
        done: list[int] = []
        refused: dict[str, str] = {}
        for peer_id in peer_ids:
            peer = self.peers.get(peer_id)
            if peer is None:
                refused[str(peer_id)] = f"P3-E702 no remote {peer_id} in the configuration"
                continue
            session = peer.session
            if session is None or session.lost is not None:
                refused[str(peer_id)] = f"P3-E702 remote {peer_id} ({peer.remote.address}) has no session"
                continue
            try:
                if action == "rekey":
                    if not session.request_rekey(now):
                        refused[str(peer_id)] = "P3-E406 a rekey is already under way"
                        continue
                elif action == "shutdown":
                    session.shutdown(now, "P3-E504", "an administrator shut the session down")
                elif action in ("generate", "flush", "flush+regenerate"):
                    for kind in (ArrayKind.DATA, ArrayKind.CONTROL):
                        if action == "generate":
                            session.generate_key_array(kind, now)
                        else:
                            session.flush_key_array(kind, now, regenerate=action == "flush+regenerate")
            except P3Error as exc:
                refused[str(peer_id)] = exc.message()
                continue
            self._run_session_actions(peer, now)
            done.append(peer_id)
        self._wake.set()
        return {"done": done, "refused": refused}

    def rekey(self, peer_ids: list[int]) -> dict[str, object]:
        """Forced rekeying (spec §2.1.1.1 Keys 2); only the primary rekeys (§2.1.6)."""
        if self.role != "primary":
            return {"done": [], "refused": {str(i): "P3-E406 only the primary initiates a rekey" for i in peer_ids}}
        return self._act(peer_ids, "rekey")

    def shutdown(self, peer_ids: list[int]) -> dict[str, object]:
        """Session shutdown (spec §2.1.1.1 4): SHUTDOWN to the peer, connections terminated."""
        return self._act(peer_ids, "shutdown")

    def keyarray(self, op: str, peer_ids: list[int], regenerate: bool) -> dict[str, object]:
        """Key arrays (spec §2.1.1.1 Keys 1 and 3): generate, or flush and optionally regenerate."""
        if self.role != "primary":
            return {"done": [], "refused": {str(i): "P3-E406 key arrays are the primary's" for i in peer_ids}}
        if op not in ("generate", "flush"):
            return {"done": [], "refused": {str(i): f"P3-E700 unknown key-array operation {op!r}" for i in peer_ids}}
        return self._act(peer_ids, "flush+regenerate" if op == "flush" and regenerate else op)

    def apply_config(self, config: Config, changed: list[str]) -> dict[str, object]:
        """Make *config* the one in force; timers change live, the rest with the next session."""
        live: list[str] = []
        later: list[str] = []
        by_id = {r.id: r for r in config.remotes}
        now = time.monotonic()
        for key in changed:
            keyword = key.split("/", 1)[-1]
            if keyword in ("rekey_wait", "heartbeat_time", "heartbeat_fail"):
                live.append(key)
            else:
                later.append(key)
        self.config = config
        for peer in self.peers.values():
            remote = by_id.get(peer.peer_id)
            if remote is None:
                continue
            peer.remote = remote
            session = peer.session
            if session is None or session.lost is not None:
                continue
            if session.primary is not None and session.primary.rekey_wait_s != remote.rekey_wait_s:
                session.primary.rekey_wait_s = remote.rekey_wait_s
                session.primary.next_rekey_s = min(session.primary.next_rekey_s, now + remote.rekey_wait_s)
            if self.role == "primary" and (session.liveness.heartbeat_time_s, session.liveness.heartbeat_fail_s) != (
                    remote.heartbeat_time_s, remote.heartbeat_fail_s):
                session.liveness.heartbeat_time_s = remote.heartbeat_time_s
                session.liveness.heartbeat_fail_s = remote.heartbeat_fail_s
                session.send_config(json.dumps({"heartbeat_time_s": remote.heartbeat_time_s,
                                                "heartbeat_fail_s": remote.heartbeat_fail_s}), now)
                self._run_session_actions(peer, now)
        self._wake.set()
        return {"live": live, "on_reload": later}

    def reload(self) -> dict[str, object]:
        """Re-read the configuration file, as SIGHUP does."""
        before = len(self.peers)
        self._reload()
        return {"reloaded": True, "remotes_before": before, "remotes": len(self.peers)}

    # ------------------------------------------------------------ reload and stop

    def _reload(self) -> None:
        """SIGHUP: added and removed remotes and subnets take effect; other sessions stay up."""
        if self.config_path is None:
            return
        try:
            new = load_config(self.config_path, role=self.role)
        except Exception as exc:  # ConfigErrors: keep running on the old configuration
            failure(self.log, "CONFIG_SYNTAX", f"reload refused, keeping the running configuration: {exc}")
            return
        if getattr(self, "admin", None) is not None:  # group settings and overrides stay on top (docs/admin.md)
            new = effective_config(new, self.admin.store)
        now = time.monotonic()
        old_by_id = {p.peer_id: p for p in self.peers.values()}
        new_by_id = {r.id: r for r in new.remotes}
        for peer_id, peer in old_by_id.items():
            if peer_id not in new_by_id or new_by_id[peer_id] != peer.remote:
                self._remove_remote(peer, now)
        self.config = new
        for peer_id, remote in new_by_id.items():
            if peer_id not in self.peers:
                peer = self._add_remote(remote)
                if self.role == "secondary":
                    self._start_handshake(peer, now)
        self.log.info("configuration reloaded: %d remote(s)", len(self.peers))

    def _shutdown(self) -> None:
        now = time.monotonic()
        for peer in list(self.peers.values()):
            # Leaving: what a new session held back goes now, ahead of the SHUTDOWN.
            peer.hold_control_until = 0.0
            held, peer.held_control = peer.held_control, []
            for packet in held:
                self._send_control(peer, packet)
            if peer.session is not None and peer.session.lost is None:
                peer.session.shutdown(now, "P3-E504", f"{self.role} is stopping")
                try:
                    self._run_session_actions_no_loss(peer)
                except P3Error:
                    pass
        self._status_written_at = 0.0
        if self.status_file is not None:
            self._maybe_write_status(time.monotonic() + STATUS_INTERVAL_S)
        if self._loop is not None and self.worker is not None:
            self._loop.remove_reader(self.worker.notify_fd)
        if self.worker is not None:
            self.worker.stop()
        for subnet in self._kernel_routes:
            try:
                tun_backend.remove_route(self.config.local.interface, subnet)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if self.tun_fd >= 0:
            os.close(self.tun_fd)
            self.tun_fd = -1
        for sock in (self.udp, self.esp):
            if sock is not None:
                sock.close()
        if self.worker is not None:
            self.worker.close()
        close = getattr(self.key_source, "close", None)
        if close is not None:
            close()  # token sessions
        self.log.info("p3hw %s stopped", self.role)

    def _run_session_actions_no_loss(self, peer: PeerState) -> None:
        session = peer.session
        if session is None:
            return
        for action in session.actions():
            if isinstance(action, SendControlPacket):
                self._send_control(peer, action.packet)
