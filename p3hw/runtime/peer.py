"""`PeerDriver`: one remote host's machines and the one executor of their actions.

A driver owns, for one configured remote, the secondary's initial exchange
(`InitiatorHandshake`), the `Session` once established, and the `Recovery`
schedule that outlives sessions. It carries out everything those machines
ask for against a `DataplanePort` (p3hw/runtime/ports.py) and nothing else:
no sockets, no worker, no asyncio. The daemon (`Gateway`), the two-sided
simulation (`simulators.harness`) and load generators create as many drivers
as they have peers and call, in the vocabulary of the machines:

* inputs: `start(now)` (the secondary dials), `receive_ike(data, addr, port, now)`,
  `established(event, addr, port, now)` (the primary's responder finished an
  exchange for this peer), `start_session(keys, cipher, outer, now)` (keys
  from elsewhere), `receive_control(inner_packet, now)`, `change_settings(...)`,
  the administrator's requests (`rekey`, `shutdown`, `key_arrays`), `stop(now)`
  and `remove(now)`;
* time: `handle_timer(now)` at `get_timer()`.

Its state (`PeerState`) is plain typed data. docs/architecture.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from p3hw.config import config_error_text
from p3hw.crypto.keyarray import ArrayKind
from p3hw.crypto.keys import SessionKeys
from p3hw.crypto.keysource import KeySource
from p3hw.dataplane import Terminated
from p3hw.log import failure
from p3hw.peer_version import primary_settings, secondary_answer, version_in
from p3hw.protocol.control import SendControlPacket
from p3hw.protocol.handshake import HandshakeEstablished, HandshakeFailed, InitiatorHandshake, MessageDropped
from p3hw.protocol.ids import P3IdAllocator
from p3hw.protocol.recovery import (
    Reconnect,
    Recovery,
    RecoveryAction,
    ScheduleReconnect,
    SyslogMessage,
    TerminateEnterpriseConnections,
)
from p3hw.protocol.rekey import InstallInboundSa, InstallOutboundSa, RekeyCompleted, RemoveInboundSa
from p3hw.protocol.session import ConfigReceived, Session, SessionAction, SessionConfig, SessionLost
from p3hw.reasons import P3Error
from p3hw.runtime.ike_requests import holds_ike_sa, log_ike_sa_events
from p3hw.runtime.ports import DataplanePort, Traffic
from p3hw.runtime.status import PeerStatus

#: The first sequence number of every new outbound SA (DESIGN.md §3, docs/dataplane.md "SAs"):
#: the SA takes over with the next packet sealed, which carries this number.
NEW_SA_FIRST_SEQ = 1
#: Actions can beget actions (outbound_installed answers with SWITCH); a burst ends after this many rounds.
MAX_ACTION_ROUNDS = 16

#: Makes the secondary's initial exchange for a new attempt, given its inbound P3 ID.
HandshakeFactory = Callable[[int], InitiatorHandshake]
#: Sees every action a driver executes, before it is executed (the harness's tap and tests).
ActionObserver = Callable[[SessionAction | RecoveryAction], None]


@dataclass(frozen=True)
class PeerSettings:
    """What a driver needs to know about its remote, fixed for the driver's life."""

    role: str  # this side's: "primary" | "secondary"
    address: str  # the remote's P3 address (its IKE identity)
    remote_port: int  # the secondary dials it there
    #: the session's settings; its cipher is replaced by the one each exchange negotiates
    session: SessionConfig
    #: primary: a new session's first control packets wait this long (gateway.CONTROL_SETTLE_S)
    control_settle_s: float = 0.0
    #: primary: tell the secondary the heartbeat timers at the start of each session
    announce_settings: bool = False


@dataclass
class PeerState:
    """Everything a driver knows about its remote, besides its machines (plain data)."""

    peer_id: int
    outer_addr: str = ""
    outer_port: int = 0
    established_at: float | None = None
    rekeys_earlier_sessions: int = 0
    last_rekey_at: float | None = None
    sessions_started: int = 0
    in_dataplane: bool = False
    #: what SAs already gone carried (the live SAs' counts are added in status)
    retired: Traffic = field(default_factory=Traffic)
    losses: list[str] = field(default_factory=list)
    live_inbound: set[int] = field(default_factory=set)
    used_p3_ids: set[int] = field(default_factory=set)
    #: primary: control packets of a new session wait until then (PeerSettings.control_settle_s)
    hold_control_until: float = 0.0
    held_control: list[bytes] = field(default_factory=list)
    last_termination: Terminated | None = None
    #: the peer's p3hw version, from its CONFIG (p3hw/peer_version.py)
    peer_version: str | None = None


class PeerDriver:
    """One remote host: its initial exchange, session and recovery, executed against a `DataplanePort`."""

    def __init__(self, peer_id: int, settings: PeerSettings, port: DataplanePort, ids: P3IdAllocator,
                 key_source: KeySource, log: logging.Logger, *, make_handshake: HandshakeFactory | None = None,
                 observer: ActionObserver | None = None) -> None:
        self.settings = settings
        self.port = port
        self.ids = ids
        self.key_source = key_source
        self.log = log
        self.make_handshake = make_handshake
        self.observer = observer
        self.state = PeerState(peer_id)
        self.session: Session | None = None
        self.handshake: InitiatorHandshake | None = None
        #: secondary: the exchange that set up the session; answers the primary's IKE requests (RFC 7296 §1.4)
        self.ike_sa: InitiatorHandshake | None = None
        self.recovery = Recovery(settings.role, settings.address)

    @property
    def peer_id(self) -> int:
        return self.state.peer_id

    @property
    def phase(self) -> str:
        """established, connecting (an exchange under way), waiting (to reconnect) or down."""
        if self.session is not None and self.session.lost is None:
            return "established"
        if self.handshake is not None:
            return "connecting"
        if self.recovery.reconnect_at_s is not None:
            return "waiting"
        return "down"

    @property
    def rekeys_completed(self) -> int:
        """Rekeys completed with this remote, over every session since the driver started."""
        current = self.session.status().rekeys_completed if self.session is not None else 0
        return self.state.rekeys_earlier_sessions + current

    # ------------------------------------------------------------ the initial exchange

    def start(self, now: float) -> None:
        """The secondary dials the primary (spec §2.1.2); a driver without a handshake factory waits."""
        if self.make_handshake is None:
            return
        if self.ike_sa is not None:  # a new IKE SA replaces the old one: tell the primary
            self._send_ike(self.state.outer_addr or self.settings.address, self.settings.remote_port,
                           self.ike_sa.close())
            self.ike_sa = None
        p3_id = self.ids.allocate()
        try:
            self.handshake = self.make_handshake(p3_id)
        except P3Error as exc:  # the key file changed under us (mode 0644, removed): log, retry with §2.1.7 backoff
            self.ids.release(p3_id)
            failure(self.log, exc.reason.name, f"remote {self.peer_id} ({self.settings.address}): "
                    f"{config_error_text(exc)}")
            self.recovery.connect_failed(now, f"{exc.code} psk_file unusable")
            self._run_recovery(now)
            return
        except BaseException:
            self.ids.release(p3_id)
            raise
        self._send_ike(self.settings.address, self.settings.remote_port, self.handshake.start(now))

    def receive_ike(self, data: bytes, addr: str, port: int, now: float) -> None:
        """An IKE message from the primary (from *addr* port *port*), for this driver's exchange."""
        if holds_ike_sa(self.ike_sa, data):
            assert self.ike_sa is not None
            self._send_ike(addr, port, self.ike_sa.receive(data, now))
            log_ike_sa_events(self.ike_sa, self.log, addr)
            return
        if self.handshake is None:
            return
        self._send_ike(addr, port, self.handshake.receive(data, now))
        self._handshake_events(now)

    def _handshake_events(self, now: float) -> None:
        assert self.handshake is not None
        for event in self.handshake.events():
            if isinstance(event, HandshakeEstablished):
                self.ike_sa, self.handshake = self.handshake, None
                self.established(event, self.settings.address, self.settings.remote_port, now)
                self.recovery.connected(now)
                self._run_recovery(now)
                return
            if isinstance(event, HandshakeFailed):
                self.ids.release(self.handshake.inbound_p3_id)
                self.handshake = None
                failure(self.log, event.reason_code, f"initial exchange with {self.settings.address}: {event.detail}")
                self.recovery.connect_failed(now, f"{event.reason_code} {event.detail}")
                self._run_recovery(now)
                return
            if isinstance(event, MessageDropped):
                self.log.debug("%s dropped IKE message: %s", event.reason_code, event.detail)

    def _send_ike(self, addr: str, port: int, messages: list[bytes]) -> None:
        for message in messages:
            self.port.send_ike(addr, port, message)

    def established(self, event: HandshakeEstablished, addr: str, port: int, now: float) -> None:
        """An initial exchange with this remote (reached at *addr* port *port*) produced *event*'s keys."""
        if self.session is not None and self.session.lost is None:
            # The secondary started over (it lost us): the old session is gone.
            self._session_lost(SessionLost("P3-E502", "the secondary re-established the session"), now)
        self.start_session(event.keys, event.data_cipher, (addr, port), now)

    def refused(self, reason_code: str, detail: str, now: float) -> None:
        """The primary's exchange established a session that the secondary then refused: withdraw it."""
        if self.session is not None and self.state.established_at == now:
            self._session_lost(SessionLost(reason_code, detail), now)

    # ------------------------------------------------------------ the session

    def start_session(self, keys: SessionKeys, cipher: str, outer: tuple[str, int], now: float) -> None:
        """Install *keys* and start the session (its first actions are executed at once)."""
        state = self.state
        if state.in_dataplane:
            state.retired += self.port.remove_session(self.peer_id, state.live_inbound)
            self.ids.release(*(state.live_inbound - {keys.inbound.p3_id}))
        state.outer_addr, state.outer_port = outer
        self.port.install_session(self.peer_id, outer, keys)
        state.in_dataplane = True
        state.live_inbound = {keys.inbound.p3_id}
        state.used_p3_ids = {keys.inbound.p3_id}
        self.ids.hold(keys.inbound.p3_id)
        self.session = Session(replace(self.settings.session, cipher=cipher), keys, self.key_source, now,
                               id_allocator=self.ids.for_session(state.used_p3_ids))
        state.established_at = now
        state.sessions_started += 1
        self.log.info("session with %s (%s port %d) established: %s, P3 IDs in %#010x out %#010x",
                      self.settings.address, outer[0], outer[1], cipher, keys.inbound.p3_id, keys.outbound.p3_id)
        if self.settings.role == "primary" and self.settings.control_settle_s > 0:
            state.hold_control_until, state.held_control = now + self.settings.control_settle_s, []
        if self.settings.role == "primary" and self.settings.announce_settings:
            # The liveness timers are primary-side keywords (Appendix A 1); the
            # secondary learns them through the control channel.
            self.session.announce_settings(now, primary_settings(self.settings.session.heartbeat_time_s,
                                                                 self.settings.session.heartbeat_fail_s))
        self.execute(now)

    def receive_control(self, inner_packet: bytes, now: float) -> None:
        """A control packet the dataplane opened for this peer's session."""
        if self.session is None:
            return
        self.session.receive_control_packet(inner_packet, now)
        self.execute(now)

    def execute(self, now: float) -> None:
        """Carry out what the session asks for, until it asks for nothing more (the one executor)."""
        session = self.session
        if session is None:
            return
        state = self.state
        for _ in range(MAX_ACTION_ROUNDS):
            actions = session.events()
            if not actions and session.lost is None:
                return
            for action in actions:
                if self.observer is not None:
                    self.observer(action)
                if isinstance(action, SendControlPacket):
                    self._send_control(action.packet, now)
                elif isinstance(action, InstallInboundSa):
                    self.port.add_inbound_sa(self.peer_id, action.sa)
                    state.live_inbound.add(action.sa.p3_id)
                elif isinstance(action, InstallOutboundSa):
                    state.retired += self.port.install_outbound_sa(self.peer_id, action.sa)
                    session.outbound_installed(action.sa.p3_id, NEW_SA_FIRST_SEQ, now)
                elif isinstance(action, RemoveInboundSa):
                    state.live_inbound.discard(action.p3_id)
                    self.ids.release(action.p3_id)
                    state.retired += self.port.remove_inbound_sa(self.peer_id, action.p3_id)
                elif isinstance(action, RekeyCompleted):
                    state.last_rekey_at = now
                    self.log.info("rekey %d with %s completed", action.rekey_id, self.settings.address)
                elif isinstance(action, ConfigReceived):
                    state.peer_version = version_in(action.settings) or state.peer_version
                    if self.settings.role == "secondary" and (answer := secondary_answer(action.settings)):
                        session.send_config(answer, now)
                    if action.timers is not None:
                        self.log.debug("heartbeat timers from %s: %g s, lost after %g s", self.settings.address,
                                       action.timers.heartbeat_time_s, action.timers.heartbeat_fail_s)
            if session.lost is not None:
                self._session_lost(session.lost, now)
                return

    def _send_control(self, inner_packet: bytes, now: float) -> None:
        state = self.state
        if now < state.hold_control_until:
            state.held_control.append(inner_packet)  # sent when the settle time is over
            return
        self.port.send_control(self.peer_id, inner_packet)

    def _release_held(self) -> None:
        held, self.state.held_control = self.state.held_control, []
        self.state.hold_control_until = 0.0
        for packet in held:
            self.port.send_control(self.peer_id, packet)

    def _session_lost(self, lost: SessionLost, now: float) -> None:
        state = self.state
        state.hold_control_until, state.held_control = 0.0, []  # the lost session's, never to be sent
        state.losses.append(lost.reason_code)
        facts = dict(lost.facts)
        facts["rekeys_completed"] = self.rekeys_completed
        # Spec §2.1.7: connections are terminated at once, and the one failure
        # line carries what was done with the other facts.
        done = self._terminate_flows()
        facts["tcp_flows_reset"] = done.tcp_flows_reset
        facts["tcp_resets"] = done.tcp_resets
        facts["icmp_unreachables"] = done.icmp_unreachables
        self.recovery.session_lost(now, lost.reason_code, lost.detail, facts)
        self._run_recovery(now, terminated=True)
        self._teardown()
        state.rekeys_earlier_sessions = self.rekeys_completed
        self.session = None

    def _teardown(self) -> None:
        state = self.state
        if not state.in_dataplane:
            return
        state.retired += self.port.remove_session(self.peer_id, state.live_inbound)
        self.ids.release(*state.live_inbound)
        state.live_inbound = set()
        state.in_dataplane = False

    def _terminate_flows(self) -> Terminated:
        done = self.port.terminate_flows(self.peer_id)
        self.state.last_termination = done
        return done

    def _run_recovery(self, now: float, terminated: bool = False) -> None:
        for action in self.recovery.events():
            if self.observer is not None:
                self.observer(action)
            if isinstance(action, TerminateEnterpriseConnections):
                if not terminated:
                    self._terminate_flows()
            elif isinstance(action, SyslogMessage):
                level = {"err": logging.ERROR, "warning": logging.WARNING}.get(action.severity, logging.INFO)
                self.log.log(level, "%s", action.message)
            elif isinstance(action, ScheduleReconnect):
                self.log.info("reconnecting to %s in %g s (attempt %d)", self.settings.address, action.wait_s,
                              action.attempt)
            elif isinstance(action, Reconnect):
                self.start(now)

    def observe_traffic(self, now: float) -> None:
        """Liveness learns from the dataplane's counters whether traffic flows (runtime/traffic_feed.py)."""
        session, state = self.session, self.state
        if session is None or session.lost is not None or not state.in_dataplane:
            return
        traffic = state.retired + self.port.traffic(self.peer_id, state.live_inbound)
        session.observe_traffic(now, traffic.packets_out, traffic.packets_in)
        self.execute(now)

    # ------------------------------------------------------------ settings

    def change_settings(self, settings: PeerSettings, now: float) -> None:
        """New settings for this remote: the next session starts with them, and the live
        session takes its timers now (`Session.change_settings`; it is never restarted)."""
        self.settings = settings
        if self.session is None or self.session.lost is not None:
            return
        new = settings.session
        self.session.change_settings(now, rekey_wait_s=new.rekey_wait_s, heartbeat_time_s=new.heartbeat_time_s,
                                     heartbeat_fail_s=new.heartbeat_fail_s)
        self.execute(now)

    # ------------------------------------------------------------ the administrator

    def _live_session(self) -> Session:
        if self.session is None or self.session.lost is not None:
            raise P3Error("ADMIN_NOT_FOUND", f"remote {self.peer_id} ({self.settings.address}) has no session")
        return self.session

    def rekey(self, now: float) -> bool:
        """Force a rekey (spec §2.1.1.1 Keys 2); False if one is already under way."""
        started = self._live_session().request_rekey(now)
        self.execute(now)
        return started

    def shutdown(self, now: float, detail: str = "an administrator shut the session down") -> None:
        """Session shutdown (spec §2.1.1.1 4): SHUTDOWN to the peer, connections terminated."""
        self._live_session().shutdown(now, "P3-E504", detail)
        self.execute(now)

    def key_arrays(self, op: str, now: float) -> None:
        """generate, flush or flush+regenerate both key arrays (spec §2.1.1.1 Keys 1 and 3)."""
        session = self._live_session()
        for kind in (ArrayKind.DATA, ArrayKind.CONTROL):
            if op == "generate":
                session.generate_key_array(kind, now)
            else:
                session.flush_key_array(kind, now, regenerate=op == "flush+regenerate")
        self.execute(now)

    def stop(self, now: float, detail: str) -> None:
        """The gateway is leaving: what a new session held back goes now, then one SHUTDOWN.

        The dataplane is not torn down and recovery is not run: the process ends."""
        self._release_held()
        session = self.session
        if session is None or session.lost is not None:
            return
        session.shutdown(now, "P3-E504", detail)
        for action in session.events():
            if isinstance(action, SendControlPacket):
                try:
                    self.port.send_control(self.peer_id, action.packet)
                except P3Error:
                    pass

    def remove(self, now: float) -> None:
        """The remote left the configuration: SHUTDOWN to it, its SAs out of the dataplane."""
        self.state.hold_control_until, self.state.held_control = 0.0, []
        if self.session is not None and self.session.lost is None:
            self.session.shutdown(now, "P3-E504", "remote removed from the configuration")
            self.execute(now)
        self._teardown()

    # ------------------------------------------------------------ time

    def get_timer(self) -> float | None:
        deadlines = [t for t in (
            self.handshake.get_timer() if self.handshake is not None else None,
            self.session.get_timer() if self.session is not None and self.session.lost is None else None,
            self.recovery.get_timer(),
            self.state.hold_control_until if self.state.held_control else None,
        ) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        state = self.state
        if state.held_control and now >= state.hold_control_until:
            self._release_held()
        if self.handshake is not None:
            timer = self.handshake.get_timer()
            if timer is not None and timer <= now:
                self._send_ike(state.outer_addr or self.settings.address, self.settings.remote_port,
                               self.handshake.handle_timer(now))
                self._handshake_events(now)
        if self.session is not None and self.session.lost is None:
            timer = self.session.get_timer()
            if timer is not None and timer <= now:
                self.session.handle_timer(now)
                self.execute(now)
        timer = self.recovery.get_timer()
        if timer is not None and timer <= now:
            self.recovery.handle_timer(now)
            self._run_recovery(now)

    # ------------------------------------------------------------ status

    def status(self, now: float) -> PeerStatus:
        """This remote's line of `p3ctl status` (without what only the gateway knows: subnets, key source)."""
        state = self.state
        entry = PeerStatus(
            id=self.peer_id, address=self.settings.address, state=self.phase, subnets=[],
            outer=f"{state.outer_addr}:{state.outer_port}" if state.outer_addr else "",
            since_s=round(now - state.established_at, 3) if state.established_at is not None else None,
            sessions_started=state.sessions_started, rekeys_completed=self.rekeys_completed,
            losses=list(state.losses), peer_version=state.peer_version,
        )
        if state.in_dataplane:
            entry.outbound_p3_id = self.port.outbound_id(self.peer_id)
        session = self.session
        if session is not None and session.lost is None:
            session_status = session.status()
            entry.session_live = True
            entry.inbound_p3_id = session_status.inbound_p3_id
            entry.control_retransmissions = session_status.control_retransmissions
            entry.heartbeat_rtt_ms = session_status.heartbeat_rtt_ms
            entry.key_type = session.config.cipher
            entry.heartbeat_time_s = session.liveness.heartbeat_time_s
            entry.heartbeat_fail_s = session.liveness.heartbeat_fail_s
            if session.primary is not None:
                entry.next_rekey_s = round(max(0.0, session.primary.next_rekey_s - now), 3)
        if state.last_rekey_at is not None:
            entry.last_rekey_s = round(now - state.last_rekey_at, 3)
        traffic = state.retired
        if state.in_dataplane and session is not None:
            traffic = traffic + self.port.traffic(self.peer_id, state.live_inbound)
        entry.packets_in, entry.packets_out = traffic.packets_in, traffic.packets_out
        entry.bytes_in, entry.bytes_out = traffic.bytes_in, traffic.bytes_out
        return entry
