"""Two session machines (primary, secondary) joined by two simulated links, in virtual time.

Each side carries a seq-numbered data stream to the other during the whole
run. Where the native dataplane will seal and open packets (issue 4 item 8
wires it in), this harness uses `ModelDataplane`: a pure-Python model of
"which SAs does each side hold", which seals a packet by recording the SA
(ID and keys) it used and opens it only if the receiver holds an inbound
SA with that ID *and the same keys*, inside a 1024-packet anti-replay
window. Control packets travel the same way (sealed with the data SA), so
a control message is lost exactly as a data packet would be.

What it measures (`HarnessReport`): data packets sent, delivered, dropped
by the link, rejected at the receiver (by reason), deliveries out of
order, control messages rejected, rekeys completed, sessions lost (with the
recovery actions taken), and `key_mismatch_violations`: moments when one
side sealed with an SA the other could not open for longer than the grace
period while both sessions were alive.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from p3hw.crypto.keys import CONTROL_KEY_BYTES, HP_KEY_BYTES, SaKeys, SessionKeys, material_length
from p3hw.crypto.keysource import KeySource, SoftwareKeySource
from p3hw.protocol.control import SendControlPacket
from p3hw.protocol.recovery import Recovery, RecoveryAction
from p3hw.protocol.rekey import InstallInboundSa, InstallOutboundSa, RekeyCompleted, RemoveInboundSa
from p3hw.protocol.session import Session, SessionAction, SessionConfig, SessionLost
from p3hw.wire.control import MsgType

from .link import Link, LinkConfig

REPLAY_WINDOW = 1024


@dataclass(frozen=True)
class SealedPacket:
    """What crosses the link: the SA it was sealed with, and its contents."""

    p3_id: int
    sa: SaKeys
    seq: int
    stream_seq: int = 0  # data packets: the stream's own counter
    control: bytes = b""  # control packets: the inner packet
    msg_type: MsgType | None = None  # control packets: for drop rules and logs
    msg_id: int = 0

    @property
    def is_control(self) -> bool:
        return self.msg_type is not None


class ModelDataplane:
    """The SA state of one side's dataplane (stand-in until the native one is wired).

    The interface the harness uses — `seal`, `open`, `install_inbound`,
    `install_outbound` (returns the first seq sealed with the new SA),
    `remove_inbound`, `outbound`, `inbound` — is what an adapter over
    p3hw.dataplane must offer to run these tests on real sealed packets.
    """

    def __init__(self, outbound: SaKeys, inbound: SaKeys) -> None:
        self.outbound: SaKeys | None = outbound
        self.inbound: dict[int, SaKeys] = {inbound.p3_id: inbound}
        self.next_seq = 1  # per direction, continuous across SAs
        self._replay: dict[int, tuple[int, int]] = {}
        self.removed_ids: set[int] = set()
        self.installed: list[SaKeys] = [inbound]  # history, in order
        self.install_errors: list[str] = []

    def seal(self, **contents: object) -> SealedPacket:
        assert self.outbound is not None
        seq = self.next_seq
        self.next_seq += 1
        return SealedPacket(self.outbound.p3_id, self.outbound, seq, **contents)  # type: ignore[arg-type]

    def install_inbound(self, sa: SaKeys) -> None:
        if sa.p3_id in self.inbound or sa.p3_id in self.removed_ids:
            self.install_errors.append(f"P3 ID {sa.p3_id} installed twice (IDs must never be reused)")
        self.inbound[sa.p3_id] = sa
        self.installed.append(sa)

    def install_outbound(self, sa: SaKeys) -> int:
        """Seal with *sa* from now on; the first sequence number it will use."""
        self.outbound = sa
        return self.next_seq

    def remove_inbound(self, p3_id: int) -> None:
        if self.inbound.pop(p3_id, None) is None:
            self.install_errors.append(f"removal of P3 ID {p3_id}, which is not installed")
        self.removed_ids.add(p3_id)
        self._replay.pop(p3_id, None)

    def open(self, packet: SealedPacket) -> str:
        """'ok', or why the native dataplane would reject it (reason names)."""
        sa = self.inbound.get(packet.p3_id)
        if sa is None:
            return "DP_UNKNOWN_ID"
        if sa != packet.sa:
            return "DP_AUTH_FAILED"
        highest, bitmap = self._replay.get(packet.p3_id, (0, 0))
        if packet.seq > highest:
            shift = packet.seq - highest
            bitmap = ((bitmap << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            highest = packet.seq
        else:
            offset = highest - packet.seq
            if offset >= REPLAY_WINDOW:
                return "DP_TOO_OLD"
            if bitmap >> offset & 1:
                return "DP_REPLAY"
            bitmap |= 1 << offset
        self._replay[packet.p3_id] = (highest, bitmap)
        return "ok"


@dataclass
class DropControl:
    """A link drop rule: drop the first *count* control packets of *msg_type*
    (retransmissions included: count=5 drops a message and all four retries)."""

    msg_type: MsgType
    count: int = 1
    dropped: int = 0

    def __call__(self, packet: SealedPacket) -> bool:
        if packet.msg_type is self.msg_type and self.dropped < self.count:
            self.dropped += 1
            return True
        return False


@dataclass
class StreamStats:
    sent: int = 0
    delivered: int = 0
    out_of_order: int = 0  # delivered after a later stream packet
    link_reordered: int = 0  # of those, the link had already swapped them
    highest: int = 0
    highest_arrived: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass
class Side:
    name: str
    session: Session
    dataplane: ModelDataplane
    recovery: Recovery
    stream: StreamStats = field(default_factory=StreamStats)  # what this side RECEIVED
    next_stream_seq: int = 1
    control_rejected: Counter[str] = field(default_factory=Counter)
    rekeys_completed: list[RekeyCompleted] = field(default_factory=list)
    lost: SessionLost | None = None
    recovery_actions: list[RecoveryAction] = field(default_factory=list)
    other_actions: list[SessionAction] = field(default_factory=list)
    control_sent: Counter[str] = field(default_factory=Counter)


@dataclass
class HarnessReport:
    rekeys_completed: int
    data_sent: int
    data_delivered: int
    data_dropped_by_link: int
    data_rejected: dict[str, int]
    data_out_of_order: int
    #: Attributable to rekeys: data packets refused for an unknown P3 ID, a
    #: wrong key or a sequence left of the window (not the link's duplicates,
    #: not packets reaching a side whose session is down) ...
    rekey_rejected: int
    #: ... and out-of-order deliveries that the link did not cause.
    rekey_out_of_order: int
    control_rejected: dict[str, int]
    key_mismatch_violations: int
    sessions_lost: list[str]
    install_errors: list[str]


def make_initial_keys(cipher: str, source: KeySource, primary_inbound_id: int = 0x100,
                      secondary_inbound_id: int = 0x200) -> tuple[SessionKeys, SessionKeys]:
    """The two sides' keys as the initial exchange would leave them (its output
    shape, p3hw.crypto.keys; the handshake itself is tested elsewhere)."""
    length = material_length(cipher)
    p_to_s = SaKeys.from_material(secondary_inbound_id, cipher, source.random_bytes(length))
    s_to_p = SaKeys.from_material(primary_inbound_id, cipher, source.random_bytes(length))
    ctl_ps, ctl_sp = source.random_bytes(CONTROL_KEY_BYTES), source.random_bytes(CONTROL_KEY_BYTES)
    hp_ps, hp_sp = source.random_bytes(HP_KEY_BYTES), source.random_bytes(HP_KEY_BYTES)
    primary = SessionKeys(p_to_s, s_to_p, ctl_ps, ctl_sp, hp_ps, hp_sp)
    secondary = SessionKeys(s_to_p, p_to_s, ctl_sp, ctl_ps, hp_sp, hp_ps)
    return primary, secondary


class Harness:
    """Primary and secondary, two links, two data streams, one virtual clock."""

    def __init__(
        self,
        seed: int = 0,
        primary_config: SessionConfig | None = None,
        secondary_config: SessionConfig | None = None,
        to_secondary: LinkConfig | None = None,
        to_primary: LinkConfig | None = None,
        data_interval_s: float = 0.002,
        cipher: str = "aes-256-gcm",
        key_source: KeySource | None = None,
    ) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.key_source = key_source or SoftwareKeySource()
        primary_config = primary_config or SessionConfig("primary", cipher, "10.255.0.1", "10.255.0.2")
        secondary_config = secondary_config or SessionConfig(
            "secondary", primary_config.cipher, primary_config.peer_address, primary_config.local_address,
            grace_s=primary_config.grace_s, heartbeat_time_s=primary_config.heartbeat_time_s,
            heartbeat_fail_s=primary_config.heartbeat_fail_s, retransmit_s=primary_config.retransmit_s,
        )
        self.grace_s = min(primary_config.grace_s, secondary_config.grace_s)
        keys_p, keys_s = make_initial_keys(primary_config.cipher, self.key_source)
        self.primary = Side(
            "primary", Session(primary_config, keys_p, self.key_source, self.now),
            ModelDataplane(keys_p.outbound, keys_p.inbound), Recovery("primary", primary_config.peer_address),
        )
        self.secondary = Side(
            "secondary", Session(secondary_config, keys_s, self.key_source, self.now),
            ModelDataplane(keys_s.outbound, keys_s.inbound), Recovery("secondary", secondary_config.peer_address),
        )
        self.to_secondary: Link[SealedPacket] = Link(to_secondary or LinkConfig(), random.Random(self.rng.random()), "p->s")
        self.to_primary: Link[SealedPacket] = Link(to_primary or LinkConfig(), random.Random(self.rng.random()), "s->p")
        self.data_interval_s = data_interval_s
        self.data_running = data_interval_s > 0
        self._next_data_s = {"primary": 0.0, "secondary": data_interval_s / 2}
        self._mismatch_since: dict[str, float | None] = {"p->s": None, "s->p": None}
        self.key_mismatch_violations = 0
        self._drain(self.primary)
        self._drain(self.secondary)

    # --- plumbing ----------------------------------------------------------------------

    def _peer(self, side: Side) -> Side:
        return self.secondary if side is self.primary else self.primary

    def _link_from(self, side: Side) -> Link[SealedPacket]:
        return self.to_secondary if side is self.primary else self.to_primary

    def _drain(self, side: Side) -> None:
        """Execute the session's actions the way the runtime will."""
        while True:
            actions = side.session.actions()
            if not actions:
                return
            for action in actions:
                self._execute(side, action)

    def _execute(self, side: Side, action: SessionAction) -> None:
        dp = side.dataplane
        if isinstance(action, SendControlPacket):
            side.control_sent[action.msg_type.name] += 1
            if side.lost is None or action.msg_type in (MsgType.SHUTDOWN, MsgType.ACK):
                packet = dp.seal(control=action.packet, msg_type=action.msg_type, msg_id=action.msg_id)
                self._link_from(side).send(packet, self.now)
        elif isinstance(action, InstallInboundSa):
            dp.install_inbound(action.sa)
        elif isinstance(action, InstallOutboundSa):
            first_seq = dp.install_outbound(action.sa)
            side.session.outbound_installed(action.sa.p3_id, first_seq, self.now)
        elif isinstance(action, RemoveInboundSa):
            dp.remove_inbound(action.p3_id)
        elif isinstance(action, RekeyCompleted):
            side.rekeys_completed.append(action)
        elif isinstance(action, SessionLost):
            side.lost = action
            side.recovery_actions.extend(
                side.recovery.session_lost(self.now, action.reason_code, action.detail, action.facts),
            )
        else:
            side.other_actions.append(action)

    def _deliver(self, receiver: Side, packet: SealedPacket) -> None:
        if receiver.lost is not None:
            if not packet.is_control:
                receiver.stream.rejected["SESSION_DOWN"] += 1  # its tunnel is down
            return
        verdict = receiver.dataplane.open(packet)
        if packet.is_control:
            if verdict != "ok":
                receiver.control_rejected[verdict] += 1
                return
            receiver.session.receive_control_packet(packet.control, self.now)
            self._drain(receiver)
            return
        stream = receiver.stream
        link_reordered = packet.stream_seq < stream.highest_arrived
        stream.highest_arrived = max(stream.highest_arrived, packet.stream_seq)
        if verdict != "ok":
            stream.rejected[verdict] += 1
            return
        stream.delivered += 1
        if packet.stream_seq < stream.highest:
            stream.out_of_order += 1
            stream.link_reordered += link_reordered
        stream.highest = max(stream.highest, packet.stream_seq)

    def _send_data(self, side: Side) -> None:
        if side.lost is not None or not self.data_running:
            return
        packet = side.dataplane.seal(stream_seq=side.next_stream_seq)
        side.next_stream_seq += 1
        self._peer(side).stream.sent += 1
        self._link_from(side).send(packet, self.now)

    def _check_keys(self) -> None:
        """Invariant: whatever one side seals with, the other can open (within grace)."""
        for sender, name in ((self.primary, "p->s"), (self.secondary, "s->p")):
            receiver = self._peer(sender)
            if sender.lost is not None or receiver.lost is not None:
                self._mismatch_since[name] = None
                continue
            sa = sender.dataplane.outbound
            ok = sa is not None and receiver.dataplane.inbound.get(sa.p3_id) == sa
            if ok:
                self._mismatch_since[name] = None
                continue
            since = self._mismatch_since[name]
            if since is None:
                self._mismatch_since[name] = self.now
            elif self.now - since > self.grace_s:
                self.key_mismatch_violations += 1
                self._mismatch_since[name] = self.now

    # --- driving -----------------------------------------------------------------------

    def _next_event_s(self) -> tuple[float | None, dict[str, float | None]]:
        timers = {side.name: side.session.get_timer() for side in (self.primary, self.secondary)}
        candidates = [self.to_secondary.next_arrival(), self.to_primary.next_arrival(), *timers.values()]
        for side in (self.primary, self.secondary):
            candidates.append(side.recovery.get_timer())
            if self.data_running and side.lost is None:
                candidates.append(self._next_data_s[side.name])
        present = [c for c in candidates if c is not None]
        return (min(present) if present else None), timers

    def step(self, until_s: float) -> bool:
        """Process everything due at the next event time (not after *until_s*)."""
        at, timers = self._next_event_s()
        if at is None or at > until_s:
            self.now = until_s
            return False
        self.now = max(self.now, at)
        for link, receiver in ((self.to_secondary, self.secondary), (self.to_primary, self.primary)):
            for packet in link.pop_arrivals(self.now):
                self._deliver(receiver, packet)
        for side in (self.primary, self.secondary):
            # Deliveries above only ever add timers in the future, and
            # handle_timer is harmless when nothing is due any more.
            timer = timers[side.name]
            if timer is not None and timer <= self.now:
                side.session.handle_timer(self.now)
                self._drain(side)
            if side.recovery.get_timer() is not None:
                side.recovery_actions.extend(side.recovery.handle_timer(self.now))
            if self.data_running and side.lost is None and self._next_data_s[side.name] <= self.now:
                self._send_data(side)
                self._next_data_s[side.name] += self.data_interval_s
        self._check_keys()
        return True

    def run_until(self, until_s: float) -> None:
        while self.step(until_s):
            pass

    def run_for(self, duration_s: float) -> None:
        self.run_until(self.now + duration_s)

    def quiesce(self) -> None:
        """Stop the data streams and let everything in flight arrive."""
        self.data_running = False
        self.run_for(max(self.to_secondary.config.max_delay_s, self.to_primary.config.max_delay_s) + 0.001)

    def rekey(self) -> bool:
        started = self.primary.session.request_rekey(self.now)
        self._drain(self.primary)
        return started

    def do(self, side: Side, method: str, *args: object, **kwargs: object) -> object:
        """Call a session method at the current time and execute its actions."""
        result = getattr(side.session, method)(*args, now=self.now, **kwargs)
        self._drain(side)
        return result

    # --- results -------------------------------------------------------------------------

    def report(self) -> HarnessReport:
        streams = (self.primary.stream, self.secondary.stream)
        rejected: Counter[str] = Counter()
        control_rejected: Counter[str] = Counter()
        for side in (self.primary, self.secondary):
            rejected.update(side.stream.rejected)
            control_rejected.update(side.control_rejected)
        data_sent = sum(s.sent for s in streams)
        delivered = sum(s.delivered for s in streams)
        return HarnessReport(
            rekeys_completed=len(self.primary.rekeys_completed),
            data_sent=data_sent,
            data_delivered=delivered,
            data_dropped_by_link=data_sent - delivered - sum(rejected.values()) - self._data_in_flight(),
            data_rejected=dict(rejected),
            data_out_of_order=sum(s.out_of_order for s in streams),
            rekey_rejected=sum(rejected[r] for r in ("DP_UNKNOWN_ID", "DP_AUTH_FAILED", "DP_TOO_OLD")),
            rekey_out_of_order=sum(s.out_of_order - s.link_reordered for s in streams),
            control_rejected=dict(control_rejected),
            key_mismatch_violations=self.key_mismatch_violations,
            sessions_lost=[f"{s.name}: {s.lost.reason_code} {s.lost.detail}" for s in (self.primary, self.secondary) if s.lost],
            install_errors=self.primary.dataplane.install_errors + self.secondary.dataplane.install_errors,
        )

    def _data_in_flight(self) -> int:
        return sum(
            1 for link in (self.to_secondary, self.to_primary)
            for _, _, packet in link._in_flight if not packet.is_control
        )
