"""One side of one established session: control channel + rekey + key arrays + liveness.

Sans-I/O, in the aioquic shape (STYLE.md):

* inputs: `receive_control_packet(packet, now)` (a decrypted inner packet
  addressed to this P3 system), `handle_timer(now)` at `get_timer()`,
  `outbound_installed(p3_id, first_seq, now)` after executing an
  `InstallOutboundSa`, `change_settings(now, ...)` when the configuration's
  timers changed (the session goes on with the new ones; the primary tells
  the secondary in CONFIG), `announce_settings(now)` (the primary's CONFIG
  at the start of a session), and the administrator's requests
  (`request_rekey`, `generate_key_array`, `flush_key_array`, `send_config`,
  `shutdown`);
* output: `events()` drains what the runtime must do, in order:
  `SendControlPacket` (seal as data and send), `InstallInboundSa`,
  `InstallOutboundSa`, `RemoveInboundSa`, and the events `RekeyCompleted`,
  `KeyArrayDelivered`, `KeyArrayFlushed`, `ConfigReceived`, `SessionLost`.

After `SessionLost` the session is dead: the runtime hands the loss to the
peer's `Recovery` machine (p3hw/protocol/recovery.py), which decides about
connection termination, syslog and reconnection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from p3hw.constants import (
    DEFAULT_ARRAY_SIZE,
    DEFAULT_CONTROL_ARRAY_TIME_S,
    DEFAULT_DATA_ARRAY_TIME_S,
    DEFAULT_HEARTBEAT_FAIL_S,
    DEFAULT_HEARTBEAT_TIME_S,
    DEFAULT_REKEY_WAIT_S,
)
from p3hw.crypto.keyarray import ArrayKind, ArraySchedule, KeyArrayStore, generate_key_array
from p3hw.crypto.keys import SessionKeys
from p3hw.crypto.keysource import KeySource
from p3hw.protocol.control import (
    DEFAULT_RETRANSMIT_S,
    ControlChannel,
    ControlEvent,
    MessageRejected,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    SendControlPacket,
)
from p3hw.protocol.ids import IdSource, P3IdAllocator
from p3hw.protocol.liveness import Liveness, LivenessAction
from p3hw.protocol.rekey import (
    DEFAULT_GRACE_S,
    InstallInboundSa,
    InstallOutboundSa,
    PrimaryRekey,
    RekeyCompleted,
    RekeyFailed,
    RemoveInboundSa,
    SecondaryRekey,
)
from p3hw.reasons import P3Error
from p3hw.wire.control import ControlMessage, FieldValue, MsgType, SessionSettings

PROTOCOL_VERSION = 1
#: SHUTDOWN's detail is cut to this many characters (a control message holds 1200 octets).
SHUTDOWN_DETAIL_MAX = 200
_ROLE_CODES = {"primary": 1, "secondary": 2}


@dataclass(frozen=True)
class SessionConfig:
    role: str  # "primary" | "secondary"
    cipher: str  # a p3hw.crypto.keys.CIPHERS name
    local_address: str  # this side's P3 address (control packets come from it)
    peer_address: str
    rekey_wait_s: float = DEFAULT_REKEY_WAIT_S
    grace_s: float = DEFAULT_GRACE_S
    pfs: bool = False
    #: "x25519", or "ecp256" in FIPS mode (docs/fips.md); the secondary follows the primary's share
    pfs_group: str = "x25519"
    heartbeat_time_s: float = DEFAULT_HEARTBEAT_TIME_S
    heartbeat_fail_s: float = DEFAULT_HEARTBEAT_FAIL_S
    use_key_arrays: bool = False
    array_size: int = DEFAULT_ARRAY_SIZE
    data_array_time_s: float = DEFAULT_DATA_ARRAY_TIME_S
    control_array_time_s: float = DEFAULT_CONTROL_ARRAY_TIME_S
    retransmit_s: float = DEFAULT_RETRANSMIT_S


@dataclass(frozen=True)
class SessionLost:
    """Event: the session is over; hand it to Recovery.session_lost."""

    reason_code: str
    detail: str
    facts: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyArrayDelivered:
    kind: ArrayKind
    generation: int


@dataclass(frozen=True)
class KeyArrayFlushed:
    kind: ArrayKind
    generation: int


@dataclass(frozen=True)
class ConfigReceived:
    """Event: the primary's CONFIG arrived; its heartbeat timers (if any) are already in force."""

    settings: str = ""
    timers: SessionSettings | None = None


@dataclass(frozen=True)
class SessionStatus:
    """What `p3ctl status` shows for one session (spec §2.1.1.1 Status)."""

    role: str
    peer_p3_address: str
    state: str  # "established" | "lost"
    lost_reason: str | None
    inbound_p3_id: int
    rekeys_completed: int
    control_sent: int
    control_received: int
    control_retransmissions: int
    control_rejected: int
    key_arrays: dict[str, int]  # kind ("data", "control") -> generation in force
    last_heard_s: float
    heartbeat_rtt_ms: float | None


SessionAction = (
    SendControlPacket | InstallInboundSa | InstallOutboundSa | RemoveInboundSa | RekeyCompleted
    | KeyArrayDelivered | KeyArrayFlushed | ConfigReceived | SessionLost
)


class Session:
    def __init__(self, config: SessionConfig, keys: SessionKeys, key_source: KeySource, now: float,
                 id_allocator: IdSource | None = None) -> None:
        """*id_allocator* gives this side's new inbound P3 IDs; a gateway with many
        sessions in one dataplane passes one that keeps IDs unique across them."""
        if config.role not in _ROLE_CODES:
            raise P3Error("DP_BAD_ARGUMENT", f"session role must be primary or secondary, not {config.role!r}")
        self.config = config
        self.started_s = now
        self.lost: SessionLost | None = None
        self.rejected_messages: list[P3Error] = []
        self.channel = ControlChannel(
            config.local_address, config.peer_address, keys.control_out_key, keys.control_in_key, config.retransmit_s,
        )
        self.liveness = Liveness(now, config.heartbeat_time_s, config.heartbeat_fail_s)
        self.key_source = key_source
        inbound_ids = id_allocator or P3IdAllocator().for_session({keys.inbound.p3_id})
        self._events: list[SessionAction] = []
        self._heartbeat_echo = 0
        self._heartbeat_sent_s: float | None = None
        #: the round trip of the last answered heartbeat (spec §2.1.1.1 status), None before one
        self.heartbeat_rtt_s: float | None = None
        #: (data packets sealed, packets opened) at the last observe_traffic, None before the first
        self._traffic_seen: tuple[int, int] | None = None
        self._array_generation = {ArrayKind.DATA: 0, ArrayKind.CONTROL: 0}
        self._array_chunks_unacked: dict[int, tuple[ArrayKind, int]] = {}
        self.schedules = {
            ArrayKind.DATA: ArraySchedule(ArrayKind.DATA, config.data_array_time_s),
            ArrayKind.CONTROL: ArraySchedule(ArrayKind.CONTROL, config.control_array_time_s),
        }
        self.arrays = KeyArrayStore()
        self.primary: PrimaryRekey | None = None
        self.secondary: SecondaryRekey | None = None
        if config.role == "primary":
            self.primary = PrimaryRekey(
                self.channel, config.cipher, key_source, inbound_ids, keys.inbound.p3_id, now,
                rekey_wait_s=config.rekey_wait_s, grace_s=config.grace_s, pfs=config.pfs,
                data_schedule=self.schedules[ArrayKind.DATA], control_schedule=self.schedules[ArrayKind.CONTROL],
                pfs_group=config.pfs_group,
            )
            # Spec §2.1.2: the primary initializes the control channel.
            self.channel.send_request(
                MsgType.HELLO, {"protocol_version": PROTOCOL_VERSION, "role": _ROLE_CODES["primary"]}, now,
            )
            if config.use_key_arrays:
                self.generate_key_array(ArrayKind.DATA, now)
                self.generate_key_array(ArrayKind.CONTROL, now)
        else:
            self.secondary = SecondaryRekey(
                self.channel, config.cipher, key_source, inbound_ids, keys.inbound.p3_id, self.arrays,
                grace_s=config.grace_s,
            )

    # --- outputs --------------------------------------------------------------------

    def events(self) -> list[SessionAction]:
        self._collect()
        out, self._events = self._events, []
        return out

    def _collect(self) -> None:
        rekey = self.primary or self.secondary
        assert rekey is not None
        for action in rekey.events():
            if isinstance(action, RekeyFailed):
                self._lose(action.reason_code, action.detail)
            elif self.lost is None:
                self._events.append(action)
        if self.lost is None:
            self._events.extend(self.channel.events())
        else:
            self.channel.events()

    # --- inputs ---------------------------------------------------------------------

    def receive_control_packet(self, packet: bytes, now: float) -> None:
        if self.lost is not None:
            return
        self._handle_events(self.channel.receive_packet(packet, now), now)
        self._collect()

    def outbound_installed(self, p3_id: int, first_seq: int, now: float) -> None:
        if self.lost is not None:
            return
        rekey = self.primary or self.secondary
        assert rekey is not None
        rekey.outbound_installed(p3_id, first_seq, now)
        self._collect()

    def observe_traffic(self, now: float, sealed_packets: int, opened_packets: int) -> None:
        """The dataplane's packet counters for this peer (monotonic totals, any origin), read by the
        runtime on its own clock (never per packet). Sealed packets beyond this session's own control
        messages are data sent to the peer; any packet opened from it is news from the peer. Liveness
        uses both to notice a peer that went silent while traffic flows (p3hw/protocol/liveness.py)."""
        if self.lost is not None:
            return
        data_sealed = sealed_packets - self.channel.messages_sent
        if self._traffic_seen is None:
            self._traffic_seen = (data_sealed, opened_packets)
            return
        seen_sealed, seen_opened = self._traffic_seen
        self.liveness.traffic(now, sent=data_sealed > seen_sealed, received=opened_packets > seen_opened)
        self._traffic_seen = (max(data_sealed, seen_sealed), max(opened_packets, seen_opened))

    def request_rekey(self, now: float) -> bool:
        """Force a rekey (spec §2.1.1.1 Keys 2). Only the primary rekeys."""
        if self.primary is None:
            raise P3Error("CTL_UNEXPECTED", "only the primary initiates a rekey (spec §2.1.6)")
        if self.lost is not None:
            return False
        started = self.primary.start(now)
        self._collect()
        return started

    def generate_key_array(self, kind: ArrayKind, now: float) -> int:
        """Generate a new array of `array_size` keys and deliver it (spec §2.1.1.1 Keys 1)."""
        if self.primary is None:
            raise P3Error("CTL_UNEXPECTED", "key arrays are generated by the primary")
        self._array_generation[kind] += 1
        generation = self._array_generation[kind]
        array = generate_key_array(kind, generation, self.config.array_size, self.key_source)
        self.schedules[kind].install(array)
        for chunk in array.chunks():
            request = self.channel.send_request(MsgType.KEY_ARRAY, dict(chunk), now)
            self._array_chunks_unacked[request.msg_id] = (kind, generation)
        self._collect()
        return generation

    def flush_key_array(self, kind: ArrayKind, now: float, regenerate: bool = False) -> None:
        """Flush an array on both sides, optionally generating a new one (spec §2.1.1.1 Keys 3)."""
        if self.primary is None:
            raise P3Error("CTL_UNEXPECTED", "key arrays are flushed by the primary")
        schedule = self.schedules[kind]
        if schedule.array is not None:
            generation = schedule.array.generation
            schedule.flush()
            for msg_id, (chunk_kind, chunk_generation) in list(self._array_chunks_unacked.items()):
                if (chunk_kind, chunk_generation) == (kind, generation):
                    self.channel.cancel(msg_id)
                    del self._array_chunks_unacked[msg_id]
            self.channel.send_request(MsgType.KEY_ARRAY_FLUSH, {"array_kind": int(kind), "generation": generation}, now)
            self._events.append(KeyArrayFlushed(kind, generation))
        if regenerate:
            self.generate_key_array(kind, now)
        self._collect()

    def send_config(self, settings: str, now: float) -> None:
        self.channel.send_request(MsgType.CONFIG, {"settings": settings}, now)
        self._collect()

    def announce_settings(self, now: float, settings: str = "") -> None:
        """Primary: give the secondary this session's heartbeat timers (primary-side keywords, Appendix A 1),
        with *settings* (JSON text: the primary's version, p3hw/peer_version.py) beside them."""
        if self.primary is None:
            raise P3Error("CTL_UNEXPECTED", "only the primary announces the session's settings")
        timers = SessionSettings(self.liveness.heartbeat_time_s, self.liveness.heartbeat_fail_s)
        fields: dict[str, FieldValue] = dict(timers.to_fields())
        if settings:
            fields["settings"] = settings
        self.channel.send_request(MsgType.CONFIG, fields, now)
        self._collect()

    def change_settings(self, now: float, *, rekey_wait_s: float | None = None, heartbeat_time_s: float | None = None,
                        heartbeat_fail_s: float | None = None) -> None:
        """The configuration's timers changed: go on with the new ones, never restart.

        Primary: a shorter `rekey_wait` brings the next rekey forward; changed
        heartbeat timers apply here and are sent to the secondary in CONFIG.
        Secondary: heartbeat timers are the primary's (they come in its CONFIG),
        so a local change to them is not applied."""
        if self.lost is not None:
            return
        if self.primary is not None and rekey_wait_s is not None and rekey_wait_s != self.primary.rekey_wait_s:
            self.primary.change_rekey_wait(rekey_wait_s, now)
            self.config = replace(self.config, rekey_wait_s=rekey_wait_s)
        new_timers = (heartbeat_time_s if heartbeat_time_s is not None else self.liveness.heartbeat_time_s,
                      heartbeat_fail_s if heartbeat_fail_s is not None else self.liveness.heartbeat_fail_s)
        if self.primary is not None and new_timers != (self.liveness.heartbeat_time_s, self.liveness.heartbeat_fail_s):
            self._set_heartbeat(*new_timers)
            self.announce_settings(now)
        self._collect()

    def _set_heartbeat(self, heartbeat_time_s: float, heartbeat_fail_s: float) -> None:
        self.liveness.heartbeat_time_s, self.liveness.heartbeat_fail_s = heartbeat_time_s, heartbeat_fail_s
        self.config = replace(self.config, heartbeat_time_s=heartbeat_time_s, heartbeat_fail_s=heartbeat_fail_s)

    def shutdown(self, now: float, reason_code: str = "P3-E504", detail: str = "administrator shut the session down") -> None:
        """Tell the peer (one SHUTDOWN, not retried) and end the session here."""
        self._lose(reason_code, detail)

    def status(self) -> SessionStatus:
        """What `p3ctl status` shows for this session (spec §2.1.1.1 Status)."""
        rekey = self.primary or self.secondary
        assert rekey is not None
        if self.primary is not None:
            completed = self.primary.stats.completed
        else:
            assert self.secondary is not None
            completed = self.secondary.completed
        arrays = self.arrays.current if self.secondary else {
            kind: schedule.array for kind, schedule in self.schedules.items() if schedule.delivered
        }
        return SessionStatus(
            role=self.config.role,
            peer_p3_address=self.config.peer_address,
            state="lost" if self.lost else "established",
            lost_reason=self.lost.reason_code if self.lost else None,
            inbound_p3_id=rekey.current_inbound_id,
            rekeys_completed=completed,
            control_sent=self.channel.messages_sent,
            control_received=self.channel.messages_received,
            control_retransmissions=self.channel.retransmissions,
            control_rejected=self.channel.rejected,
            key_arrays={kind.name.lower(): array.generation for kind, array in arrays.items() if array is not None},
            last_heard_s=self.liveness.last_heard_s,
            heartbeat_rtt_ms=None if self.heartbeat_rtt_s is None else round(self.heartbeat_rtt_s * 1000, 3),
        )

    # --- time -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self.lost is not None:
            return None
        rekey = self.primary or self.secondary
        assert rekey is not None
        deadlines = [d for d in (self.channel.get_timer(), self.liveness.get_timer(), rekey.get_timer()) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self.lost is not None:
            return
        self._handle_events(self.channel.handle_timer(now), now)
        rekey = self.primary or self.secondary
        assert rekey is not None
        if self.lost is None:
            rekey.handle_timer(now)
        if self.lost is None:
            self.liveness.handle_timer(now)
        for action in self.liveness.events():
            if self.lost is not None:
                break
            if action is LivenessAction.SEND_HEARTBEAT:
                self._heartbeat_echo += 1
                self._heartbeat_sent_s = now
                self.channel.send_request(MsgType.HEARTBEAT, {"echo": self._heartbeat_echo}, now, retransmit=False)
            elif action is LivenessAction.PEER_LOST:
                silent_s = now - self.liveness.last_heard_s
                self._lose("P3-E500", f"no answer to heartbeats for {self.liveness.heartbeat_fail_s:g} s (silent for {silent_s:.1f} s)")
            elif action is LivenessAction.PEER_SILENT:
                silent_s = now - self.liveness.last_received_s
                self._lose("P3-E505", f"nothing received for {silent_s:.1f} s while sending data; "
                           f"{self.liveness.probes_sent} heartbeat probe(s) unanswered in "
                           f"{self.liveness.probe_deadline_s:g} s")
        self._collect()

    # --- dispatch -------------------------------------------------------------------

    def _handle_events(self, events: list[ControlEvent], now: float) -> None:
        for event in events:
            if self.lost is not None:
                return
            if isinstance(event, MessageRejected):
                self.rejected_messages.append(event.error)
                continue
            if isinstance(event, RequestReceived):
                self.liveness.heard_from_peer(now)
                self._on_request(event.message, now)
            elif isinstance(event, ResponseReceived):
                self.liveness.heard_from_peer(now)
                self._on_response(event.request, event.response, now)
            elif isinstance(event, RequestFailed):
                self._on_request_failed(event.request, event.attempts, now)

    def _on_request(self, message: ControlMessage, now: float) -> None:
        kind = message.msg_type
        if kind is MsgType.HEARTBEAT:
            self.channel.send_response(message, MsgType.HEARTBEAT_ACK, {"echo": message.int_field("echo")})
        elif kind is MsgType.HELLO:
            self.channel.send_response(message, MsgType.ACK, {})
        elif kind is MsgType.CONFIG:
            try:
                timers = SessionSettings.from_message(message)
            except P3Error as error:
                self.rejected_messages.append(error)
                self.channel.send_response(message, MsgType.ERROR, {"reason": int(error.code[4:]), "detail": error.detail})
                return
            self.channel.send_response(message, MsgType.ACK, {})
            if timers is not None and self.secondary is not None:
                self._set_heartbeat(timers.heartbeat_time_s, timers.heartbeat_fail_s)
            settings = message.get("settings") or ""
            assert isinstance(settings, str)
            self._events.append(ConfigReceived(settings, timers))
        elif kind is MsgType.SHUTDOWN:
            self.channel.send_response(message, MsgType.ACK, {})
            self._events.extend(self.channel.events())
            detail = message.get("detail") or ""
            self._lose("P3-E501", f"peer closed the session with P3-E{message.int_field('reason'):03d} {detail}".rstrip())
        elif self.secondary is not None and kind is MsgType.REKEY:
            self.secondary.on_rekey(message, now)
        elif self.secondary is not None and kind is MsgType.SWITCH:
            self.secondary.on_switch(message, now)
        elif self.secondary is not None and kind is MsgType.KEY_ARRAY:
            try:
                array = self.arrays.add_chunk(message.fields)
            except P3Error as error:
                self.channel.send_response(message, MsgType.ERROR, {"reason": int(error.code[4:]), "detail": error.detail})
                return
            self.channel.send_response(message, MsgType.ACK, {})
            if array is not None:
                self._events.append(KeyArrayDelivered(array.kind, array.generation))
        elif self.secondary is not None and kind is MsgType.KEY_ARRAY_FLUSH:
            try:
                array_kind = ArrayKind(message.int_field("array_kind"))
            except ValueError:
                self.channel.send_response(message, MsgType.ERROR, {"reason": 400, "detail": "unknown key-array kind"})
                return
            self.arrays.flush(array_kind, message.int_field("generation"))
            self.channel.send_response(message, MsgType.ACK, {})
            self._events.append(KeyArrayFlushed(array_kind, message.int_field("generation")))
        else:
            self.channel.send_response(message, MsgType.ERROR, {
                "reason": 406, "detail": f"a {self.config.role} does not accept {kind.name}",
            })

    def _on_response(self, request: ControlMessage, response: ControlMessage, now: float) -> None:
        if request.msg_type is MsgType.HEARTBEAT and self._heartbeat_sent_s is not None \
                and request.int_field("echo") == self._heartbeat_echo:
            # Heartbeats are sent once (no retransmission), so the answer times the last one.
            self.heartbeat_rtt_s = now - self._heartbeat_sent_s
            self.liveness.rtt_s = self.heartbeat_rtt_s
            return
        if self.primary is not None and request.msg_type in (MsgType.REKEY, MsgType.SWITCH):
            self.primary.on_response(request, response, now)
        elif request.msg_type is MsgType.KEY_ARRAY:
            owner = self._array_chunks_unacked.pop(request.msg_id, None)
            if owner is None:
                return
            if response.msg_type is MsgType.ERROR:
                self._lose("P3-E400", f"secondary refused a key-array chunk: {response.get('detail')}")
                return
            kind, generation = owner
            if not any(o == owner for o in self._array_chunks_unacked.values()):
                schedule = self.schedules[kind]
                if schedule.array is not None and schedule.array.generation == generation:
                    schedule.mark_delivered(now)
                    self._events.append(KeyArrayDelivered(kind, generation))

    def _on_request_failed(self, request: ControlMessage, attempts: int, now: float) -> None:
        if request.msg_type is MsgType.HEARTBEAT or request.msg_type is MsgType.SHUTDOWN:
            return  # liveness keeps its own clock; a shutdown is not retried
        if self.primary is not None and request.msg_type in (MsgType.REKEY, MsgType.SWITCH):
            self.primary.on_request_failed(request, attempts, now)
            return
        self._lose("P3-E408", f"{request.msg_type.name} unanswered after {attempts - 1} retries")

    def _lose(self, reason_code: str, detail: str) -> None:
        """End the session. Unless the peer ended it (its SHUTDOWN), tell the peer first.

        A loss seen on one side only (a failed rekey, a key source gone, unanswered
        heartbeats, an administrator) would otherwise stay unknown to the peer until its
        own heartbeat_fail, and the peer would seal into a dead session all that time.
        The SHUTDOWN goes once, not retried, sealed with the keys in force: it comes
        before `SessionLost` in the actions, so the runtime seals it before it removes
        the peer from the dataplane (docs/protocol.md §7).
        """
        if self.lost is not None:
            return
        self.channel.cancel_all()
        if reason_code != "P3-E501":
            self.channel.send_request(MsgType.SHUTDOWN, {
                "reason": int(reason_code.removeprefix("P3-E")), "detail": detail[:SHUTDOWN_DETAIL_MAX],
            }, 0.0, retransmit=False)  # the time would only schedule a retransmission
            self.channel.cancel_all()  # sent once: nothing waits for its ACK
        self._events.extend(self.channel.events())
        facts: dict[str, object] = {
            "role": self.config.role,
            "peer_p3_address": self.config.peer_address,
            "control_sent": self.channel.messages_sent,
            "control_received": self.channel.messages_received,
            "control_retransmissions": self.channel.retransmissions,
            "control_rejected": self.channel.rejected,
        }
        if self.primary is not None:
            facts["rekeys_completed"] = self.primary.stats.completed
            facts["rekey_attempts"] = self.primary.stats.attempts
        if self.secondary is not None:
            facts["rekeys_completed"] = self.secondary.completed
        self.lost = SessionLost(reason_code, detail, facts)
        self._events.append(self.lost)
