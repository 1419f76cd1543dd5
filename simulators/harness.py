"""Two session machines (primary, secondary) joined by two simulated links, in virtual time,
carrying real packets sealed and opened by two native dataplane contexts.

Each side owns a `p3hw.dataplane.Dataplane` (one peer: the other side).
What crosses the links are whole outer IP packets as the dataplane writes
them (``seal(..., with_ip=True)``) and as the receiving dataplane reads them
(``open(..., with_ip=True)``):

* a seq-numbered data stream each way (inner IPv4/UDP packets between the
  two sites' LANs, the stream counter in the payload), sealed during the
  whole run;
* the control messages of the sessions (`SendControlPacket`: an inner packet
  addressed to the peer's P3 address), sealed like data; the receiving
  dataplane classifies them as ``control`` by their inner destination and
  the harness hands the opened inner packet to the receiving `Session`;
* optionally the initial exchange (`handshake=True`): the secondary's
  `InitiatorHandshake` and the primary's `ResponderHandshake` talk IKEv2 over
  the same links, behind the non-ESP marker (RFC 3948), and each IKE message
  is recognised by the receiving dataplane (``kind == "ike"``). The sessions
  then start from the keys that exchange produced. The IKE datagrams are
  recorded (`ike_capture`, `write_ike_pcap`) as a pcap a dissector can read.

Each side's session runs in a `p3hw.runtime.peer.PeerDriver`, the daemon's
own executor of the machines' actions; `SideDataplane` is its
`DataplanePort`: `InstallInboundSa` -> ``add_inbound_sa``,
`InstallOutboundSa` -> ``add_outbound_sa(sa, 0)`` (the driver tells the
session the new SA starts at `NEW_SA_FIRST_SEQ`, and the side checks that
promise on the first packet sealed), `RemoveInboundSa` -> ``remove_sa``,
`SessionLost` -> the peer is removed from that side's dataplane.

The link sees only bytes; to let tests drop "the first SWITCH" each packet
also carries a tap record (what the sender knew when it sent it: data or
control, message type and id, stream counter), the way a capture filter
would be told. The receiver never looks at the tap.

What it measures (`HarnessReport`): data packets sent, delivered, dropped
by the link, refused by the receiving dataplane (by reason), delivered out
of order, control packets refused, rekeys completed, sessions lost (with the
recovery actions taken), the dataplanes' own drop counters, and
`key_mismatch_violations`: moments when one side sealed with an SA the other
did not hold for longer than the grace period while both sessions were
alive.
"""

from __future__ import annotations

import functools
import logging
import random
import struct
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p3hw.constants import DEFAULT_PORT, TRAFFIC_POLL_S
from p3hw.crypto.keys import CONTROL_KEY_BYTES, HP_KEY_BYTES, SaKeys, SessionKeys, material_length
from p3hw.crypto.keysource import KeySource, SoftwareKeySource
from p3hw.dataplane import Dataplane, Opened, PeerConfig, Terminated
from p3hw.protocol.control import SendControlPacket
from p3hw.protocol.handshake import (
    HandshakeEstablished,
    HandshakeFailed,
    IkeProposalConfig,
    InitiatorHandshake,
    PeerPolicy,
    ResponderHandshake,
)
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
from p3hw.protocol.session import Session, SessionAction, SessionConfig, SessionLost
from p3hw.reasons import P3Error
from p3hw.runtime.peer import NEW_SA_FIRST_SEQ, PeerDriver, PeerSettings
from p3hw.runtime.ports import Traffic
from p3hw.wire.control import MsgType
from p3hw.wire.ike import Identity
from p3hw.wire.pcap import CapturedDatagram, ike_datagram, udp_packet, write_pcap

from .link import Link, LinkConfig

RECOVERY_ACTIONS = (TerminateEnterpriseConnections, SyslogMessage, ScheduleReconnect, Reconnect)
#: The peer id each side's dataplane gives the other side (one session each).
PEER_ID = 1
#: Outer (WAN) addresses of the two gateways, documentation ranges (RFC 5737).
PRIMARY_OUTER = ("192.0.2.1", DEFAULT_PORT)
SECONDARY_OUTER = ("198.51.100.2", DEFAULT_PORT)
#: The data stream runs between one host on each site's LAN.
PRIMARY_LAN_HOST = "10.1.0.10"
SECONDARY_LAN_HOST = "10.2.0.10"
STREAM_PORT = 9000
STREAM_MAGIC = b"P3HS"
STREAM_PAYLOAD_BYTES = 48
#: Inbound SAs each dataplane can hold at once (old ones wait out the grace period).
MAX_INBOUND_SAS = 256
#: Give up on an initial exchange that has not finished after this long (virtual s).
HANDSHAKE_LIMIT_S = 120.0
IKE_SA_INIT, IKE_AUTH = 34, 35
LOG = logging.getLogger("p3hw.harness")


@dataclass(frozen=True)
class WirePacket:
    """What crosses the link: a whole outer IP packet, plus the sender's tap record."""

    data: bytes
    kind: str  # "data" | "control" | "ike" (tap: what the sender sent)
    stream_seq: int = 0  # data: the stream's own counter
    msg_type: MsgType | None = None  # control: for drop rules and logs
    msg_id: int = 0
    ike_exchange: int = 0  # ike: exchange type (34 IKE_SA_INIT, 35 IKE_AUTH)
    ike_response: bool = False

    @property
    def is_control(self) -> bool:
        return self.kind == "control"


@dataclass
class DropControl:
    """A link drop rule: drop the first *count* control packets of *msg_type*
    (retransmissions included: count=5 drops a message and all four retries)."""

    msg_type: MsgType
    count: int = 1
    dropped: int = 0

    def __call__(self, packet: WirePacket) -> bool:
        if packet.msg_type is self.msg_type and self.dropped < self.count:
            self.dropped += 1
            return True
        return False


@dataclass
class DropIke:
    """A link drop rule: drop the first *count* IKE messages of one exchange type and direction."""

    exchange_type: int
    response: bool
    count: int = 1
    dropped: int = 0

    def __call__(self, packet: WirePacket) -> bool:
        if (packet.kind == "ike" and packet.ike_exchange == self.exchange_type
                and packet.ike_response == self.response and self.dropped < self.count):
            self.dropped += 1
            return True
        return False


@functools.lru_cache(maxsize=16)
def _stream_headers(src: str, dst: str) -> bytes:
    """IP and UDP headers of the stream between two LAN hosts (lengths fixed, so built once)."""
    packet = udp_packet((src, STREAM_PORT), (dst, STREAM_PORT), bytes(STREAM_PAYLOAD_BYTES))
    headers = packet[:len(packet) - STREAM_PAYLOAD_BYTES]
    if headers[0] >> 4 == 4:
        # UDP checksum 0 = none (RFC 768, IPv4 only): the header stays valid whatever the counter.
        headers = headers[:-2] + b"\x00\x00"
    return headers


def stream_packet(src: str, dst: str, stream_seq: int) -> bytes:
    """One inner packet of the data stream: IP/UDP, the counter in the payload."""
    payload = STREAM_MAGIC + struct.pack("!Q", stream_seq)
    payload += bytes(STREAM_PAYLOAD_BYTES - len(payload))
    headers = _stream_headers(src, dst)
    if headers[0] >> 4 == 6:  # IPv6 needs the checksum (RFC 8200 §8.1)
        return udp_packet((src, STREAM_PORT), (dst, STREAM_PORT), payload)
    return headers + payload


def stream_seq_of(inner: bytes) -> int | None:
    """The stream counter of an opened inner packet, or None if it is not one of ours."""
    if not inner:
        return None
    offset = (inner[0] & 0x0F) * 4 + 8 if inner[0] >> 4 == 4 else 40 + 8
    payload = inner[offset:offset + len(STREAM_MAGIC) + 8]
    if len(payload) != len(STREAM_MAGIC) + 8 or not payload.startswith(STREAM_MAGIC):
        return None
    return int(struct.unpack("!Q", payload[len(STREAM_MAGIC):])[0])


class SideDataplane:
    """One side's native dataplane context with its one peer, and the harness's
    record of what it installed there (for the key-mismatch invariant and tests).
    It is the side's `DataplanePort`: its peer id is always `PEER_ID`."""

    def __init__(self, local_outer: tuple[str, int], remote_outer: tuple[str, int], p3_address: str) -> None:
        self.local_outer, self.remote_outer = local_outer, remote_outer
        self.dp = Dataplane(max_peers=4, max_inbound_sas=MAX_INBOUND_SAS)
        self.dp.set_local_address(p3_address)
        self.dp.add_peer(PeerConfig(PEER_ID, local_outer[0], remote_outer[0], local_port=local_outer[1],
                                    remote_port=remote_outer[1]))
        self.outbound: SaKeys | None = None  # what the next packet is sealed with
        self.inbound: dict[int, SaKeys] = {}  # inbound SAs installed and not removed
        self.installed: list[SaKeys] = []  # inbound SAs, in installation order
        self.removed_ids: set[int] = set()
        self.install_errors: list[str] = []
        self.seal_failures: Counter[str] = Counter()
        self.torn_down = False
        #: packets sealed and opened, as the runtime reads them from the dataplane's counters
        self.sealed_packets = self.opened_packets = 0
        self._expect_first: tuple[int, int] | None = None  # (p3_id, first seq) promised to the session
        #: where sealed control packets go (the harness puts them on the link)
        self.control_out: Callable[[bytes], None] = lambda data: None

    # --- DataplanePort ---------------------------------------------------------------

    def install_session(self, peer_id: int, outer: tuple[str, int], keys: SessionKeys) -> None:
        self.dp.install_session(PEER_ID, keys)
        self.outbound = keys.outbound
        self.inbound = {keys.inbound.p3_id: keys.inbound}
        self.installed = [keys.inbound]

    def remove_session(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        self.tear_down()
        return Traffic()

    def add_inbound_sa(self, peer_id: int, sa: SaKeys) -> None:
        self.install_inbound(sa)

    def remove_inbound_sa(self, peer_id: int, p3_id: int) -> Traffic:
        self.remove_inbound(p3_id)
        return Traffic()

    def install_outbound_sa(self, peer_id: int, sa: SaKeys) -> Traffic:
        self.install_outbound(sa)
        return Traffic()

    def send_control(self, peer_id: int, inner_packet: bytes) -> None:
        data = self.seal(inner_packet)
        if data is not None:
            self.control_out(data)

    def send_ike(self, addr: str, port: int, message: bytes) -> None:
        raise P3Error("DP_BAD_ARGUMENT", "the harness runs the initial exchange itself")

    def terminate_flows(self, peer_id: int) -> Terminated:
        return Terminated()  # no LAN hosts with connections to reset

    def traffic(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        return Traffic()

    def outbound_id(self, peer_id: int) -> int | None:
        return None if self.torn_down else self.dp.outbound_id(PEER_ID)

    # --- what the port does --------------------------------------------------------

    def install_inbound(self, sa: SaKeys) -> None:
        if sa.p3_id in self.inbound or sa.p3_id in self.removed_ids:
            self.install_errors.append(f"P3 ID {sa.p3_id:#x} installed twice (IDs must never be reused)")
        try:
            self.dp.add_inbound_sa(PEER_ID, sa)
        except P3Error as error:
            self.install_errors.append(f"add_inbound_sa {sa.p3_id:#x}: {error.message()}")
            return
        self.inbound[sa.p3_id] = sa
        self.installed.append(sa)

    def install_outbound(self, sa: SaKeys) -> None:
        """Seal with *sa* from the next packet on (switch_after_seq 0). The driver promised the
        session NEW_SA_FIRST_SEQ; seal() checks the promise on the first packet."""
        try:
            self.dp.add_outbound_sa(PEER_ID, sa, 0)
        except P3Error as error:
            self.install_errors.append(f"add_outbound_sa {sa.p3_id:#x}: {error.message()}")
            return
        self.outbound = sa
        self._expect_first = (sa.p3_id, NEW_SA_FIRST_SEQ)

    def remove_inbound(self, p3_id: int) -> None:
        try:
            self.dp.remove_sa("in", PEER_ID, p3_id)
        except P3Error as error:
            self.install_errors.append(f"remove_sa {p3_id:#x}: {error.message()}")
        self.inbound.pop(p3_id, None)
        self.removed_ids.add(p3_id)

    def tear_down(self) -> None:
        """The session is lost: the runtime removes the peer (and all its SAs)."""
        if not self.torn_down:
            self.dp.remove_peer(PEER_ID)
            self.torn_down = True

    def seal(self, inner: bytes) -> bytes | None:
        """The outer IP packet carrying *inner*, or None (counted) if the dataplane refused."""
        sealed = self.dp.seal([(PEER_ID, inner)], with_ip=True)[0]
        if sealed.status != "OK":
            self.seal_failures[sealed.status] += 1
            return None
        self.sealed_packets += 1
        if self._expect_first is not None:
            # The first packet after a switch must use the SA and seq we told the session.
            if (sealed.p3_id, sealed.seq) != self._expect_first:
                self.install_errors.append(
                    f"first packet after the switch sealed with {sealed.p3_id:#x}/{sealed.seq}, "
                    f"promised {self._expect_first[0]:#x}/{self._expect_first[1]}")
            self._expect_first = None
        return sealed.data

    def open(self, packets: list[bytes]) -> list[Opened]:
        opened = self.dp.open(packets, with_ip=True)
        self.opened_packets += sum(1 for result in opened if result.status == "OK")
        return opened

    def holds(self, sa: SaKeys) -> bool:
        return self.inbound.get(sa.p3_id) == sa


@dataclass
class StreamStats:
    sent: int = 0
    delivered: int = 0
    out_of_order: int = 0  # delivered after a later stream packet
    link_reordered: int = 0  # of those, the link had already swapped them
    highest: int = 0
    highest_arrived: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    corrupted: int = 0  # opened, but not the stream packet that was sent


@dataclass
class Side:
    name: str
    dataplane: SideDataplane
    driver: PeerDriver
    #: the side's one session (kept after it is lost, for tests to inspect); set when it starts
    session: Session = None  # type: ignore[assignment]
    stream: StreamStats = field(default_factory=StreamStats)  # what this side RECEIVED
    next_stream_seq: int = 1
    control_delivered: int = 0
    control_rejected: Counter[str] = field(default_factory=Counter)  # while its session was alive
    control_after_loss: int = 0  # control packets reaching it after its session was lost
    misclassified: int = 0  # the dataplane called a data packet control or the reverse
    rekeys_completed: list[RekeyCompleted] = field(default_factory=list)
    lost: SessionLost | None = None
    recovery_actions: list[RecoveryAction] = field(default_factory=list)
    other_actions: list[SessionAction] = field(default_factory=list)
    control_sent: Counter[str] = field(default_factory=Counter)
    #: the tap record of the control packet being sent (what the sender knew)
    tap: tuple[MsgType, int] | None = None

    @property
    def recovery(self) -> Recovery:
        return self.driver.recovery


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
    #: Both dataplanes' own drop counters (reason name -> packets), data and control.
    dataplane_drops: dict[str, int] = field(default_factory=dict)
    data_duplicated_by_link: int = 0
    control_delivered: int = 0
    seal_failures: dict[str, int] = field(default_factory=dict)
    misclassified: int = 0
    corrupted: int = 0


def make_initial_keys(cipher: str, source: KeySource, primary_inbound_id: int = 0x100,
                      secondary_inbound_id: int = 0x200) -> tuple[SessionKeys, SessionKeys]:
    """The two sides' keys in the shape the initial exchange leaves them
    (p3hw.crypto.keys), for runs that skip the exchange (handshake=False)."""
    length = material_length(cipher)
    p_to_s = SaKeys.from_material(secondary_inbound_id, cipher, source.random_bytes(length))
    s_to_p = SaKeys.from_material(primary_inbound_id, cipher, source.random_bytes(length))
    ctl_ps, ctl_sp = source.random_bytes(CONTROL_KEY_BYTES), source.random_bytes(CONTROL_KEY_BYTES)
    hp_ps, hp_sp = source.random_bytes(HP_KEY_BYTES), source.random_bytes(HP_KEY_BYTES)
    primary = SessionKeys(p_to_s, s_to_p, ctl_ps, ctl_sp, hp_ps, hp_sp)
    secondary = SessionKeys(s_to_p, p_to_s, ctl_sp, ctl_ps, hp_sp, hp_ps)
    return primary, secondary


class Harness:
    """Primary and secondary, two native dataplanes, two links, two data streams, one virtual clock."""

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
        *,
        handshake: bool = False,
        psk: bytes = b"harness pre-shared key",
        secondary_psk: bytes | None = None,  # what the secondary uses, if not *psk* (a misconfiguration)
        ike_proposals: IkeProposalConfig | None = None,
        primary_outer: tuple[str, int] = PRIMARY_OUTER,
        secondary_outer: tuple[str, int] = SECONDARY_OUTER,
        drop_rules: Sequence[Callable[[WirePacket], bool]] = (),
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
        self.primary_outer, self.secondary_outer = primary_outer, secondary_outer
        self.to_secondary: Link[WirePacket] = Link(to_secondary or LinkConfig(), random.Random(self.rng.random()), "p->s")
        self.to_primary: Link[WirePacket] = Link(to_primary or LinkConfig(), random.Random(self.rng.random()), "s->p")
        for rule in drop_rules:  # on both links, from the first packet (the handshake's) on
            self.to_secondary.drop_rules.append(rule)
            self.to_primary.drop_rules.append(rule)
        dp_p = SideDataplane(primary_outer, secondary_outer, primary_config.local_address)
        dp_s = SideDataplane(secondary_outer, primary_outer, secondary_config.local_address)
        # Each side's inbound P3 IDs, as a gateway allocates them (reproducible from the seed).
        id_rng = random.Random(self.rng.random())
        self.ids = {"primary": P3IdAllocator(id_rng.randbytes), "secondary": P3IdAllocator(id_rng.randbytes)}
        self.ike_capture: list[CapturedDatagram] = []
        self.handshake_results: tuple[HandshakeEstablished, HandshakeEstablished] | None = None
        if handshake:
            at_primary, at_secondary = self._run_handshake(dp_p, dp_s, psk, psk if secondary_psk is None else secondary_psk,
                                                           ike_proposals, primary_config.cipher)
            self.handshake_results = (at_primary, at_secondary)
            keys_p, keys_s = at_primary.keys, at_secondary.keys
        else:
            keys_p, keys_s = make_initial_keys(primary_config.cipher, self.key_source)
        starts = []
        for name, config, dp, keys, remote_outer in (
                ("primary", primary_config, dp_p, keys_p, secondary_outer),
                ("secondary", secondary_config, dp_s, keys_s, primary_outer)):
            driver = PeerDriver(PEER_ID, PeerSettings(role=name, address=config.peer_address,
                                                      remote_port=remote_outer[1], session=config),
                                dp, self.ids[name], self.key_source, LOG)
            side = Side(name, dp, driver)
            driver.observer = functools.partial(self._observe, side)
            dp.control_out = functools.partial(self._send_control, side)
            starts.append((side, keys, config.cipher, remote_outer))
        self.primary, self.secondary = starts[0][0], starts[1][0]
        self.data_interval_s = data_interval_s
        self.data_running = data_interval_s > 0
        self._next_data_s = {"primary": self.now, "secondary": self.now + data_interval_s / 2}
        self._lan_hosts = {"primary": (PRIMARY_LAN_HOST, SECONDARY_LAN_HOST),
                           "secondary": (SECONDARY_LAN_HOST, PRIMARY_LAN_HOST)}
        self._mismatch_since: dict[str, float | None] = {"p->s": None, "s->p": None}
        self.key_mismatch_violations = 0
        self._next_traffic_report_s = 0.0
        self.data_duplicated_by_link = 0
        for side, keys, cipher, remote_outer in starts:  # the primary's HELLO goes out first
            side.driver.start_session(keys, cipher, remote_outer, self.now)
            assert side.driver.session is not None
            side.session = side.driver.session

    # --- the initial exchange ------------------------------------------------------------

    def _send_ike(self, link: Link[WirePacket], src: tuple[str, int], dst: tuple[str, int], message: bytes) -> None:
        datagram = ike_datagram(self.now, src, dst, message)
        self.ike_capture.append(datagram)  # a capture on the sender's interface sees every transmission
        exchange, flags = (message[18], message[19]) if len(message) >= 20 else (0, 0)
        packet = WirePacket(udp_packet(src, dst, datagram.payload), "ike", ike_exchange=exchange,
                            ike_response=bool(flags & 0x20))
        link.send(packet, self.now)

    def _receive_ike(self, dp: SideDataplane, packets: list[WirePacket]) -> list[bytes]:
        if not packets:
            return []
        return [o.data for o in dp.open([p.data for p in packets]) if o.status == "OK" and o.kind == "ike"]

    def _run_handshake(self, dp_p: SideDataplane, dp_s: SideDataplane, psk: bytes, secondary_psk: bytes,
                       proposals: IkeProposalConfig | None, cipher: str,
                       ) -> tuple[HandshakeEstablished, HandshakeEstablished]:
        """The secondary initiates (spec §2.1.2); both sides' IKE goes over the links."""
        secondary_id, primary_id = Identity.ip(self.secondary_outer[0]), Identity.ip(self.primary_outer[0])
        initiator = InitiatorHandshake(secondary_id, secondary_psk, data_ciphers=(cipher,), proposals=proposals,
                                       remote_identity=primary_id, inbound_p3_id=self.ids["secondary"].allocate())
        responder = ResponderHandshake(primary_id, {secondary_id: PeerPolicy(psk, data_ciphers=(cipher,))}.get,
                                       proposals=proposals, allocate_p3_id=self.ids["primary"].allocate)
        for message in initiator.start(self.now):
            self._send_ike(self.to_primary, self.secondary_outer, self.primary_outer, message)
        results: dict[str, HandshakeEstablished] = {}
        while len(results) < 2:
            for name, machine in (("primary", responder), ("secondary", initiator)):
                for event in machine.events():
                    if isinstance(event, HandshakeFailed):
                        raise P3Error(event.reason_code, f"initial exchange failed at the {name}: {event.detail}")
                    if isinstance(event, HandshakeEstablished):
                        results[name] = event
            if len(results) == 2:
                break
            candidates = [t for t in (self.to_primary.next_arrival(), self.to_secondary.next_arrival(),
                                      initiator.get_timer(), responder.get_timer()) if t is not None]
            if not candidates or min(candidates) > HANDSHAKE_LIMIT_S:
                raise P3Error("IKE_TIMEOUT", f"initial exchange unfinished after {self.now:.1f} virtual s")
            self.now = max(self.now, min(candidates))
            for request in self._receive_ike(dp_p, self.to_primary.pop_arrivals(self.now)):
                for answer in responder.receive(request, self.now, self.secondary_outer):
                    self._send_ike(self.to_secondary, self.primary_outer, self.secondary_outer, answer)
            for answer in self._receive_ike(dp_s, self.to_secondary.pop_arrivals(self.now)):
                for request in initiator.receive(answer, self.now):
                    self._send_ike(self.to_primary, self.secondary_outer, self.primary_outer, request)
            timer = initiator.get_timer()
            if timer is not None and timer <= self.now:
                for request in initiator.handle_timer(self.now):
                    self._send_ike(self.to_primary, self.secondary_outer, self.primary_outer, request)
            timer = responder.get_timer()
            if timer is not None and timer <= self.now:
                responder.handle_timer(self.now)
        # IKE messages still in flight (retransmits) would reach a side that no longer listens.
        self.to_primary.pop_arrivals(float("inf"))
        self.to_secondary.pop_arrivals(float("inf"))
        return results["primary"], results["secondary"]

    def write_ike_pcap(self, path: str | Path) -> None:
        """The initial exchange as sent (retransmissions included), for tshark / Wireshark."""
        write_pcap(path, self.ike_capture)

    # --- plumbing ----------------------------------------------------------------------

    def _peer(self, side: Side) -> Side:
        return self.secondary if side is self.primary else self.primary

    def _link_from(self, side: Side) -> Link[WirePacket]:
        return self.to_secondary if side is self.primary else self.to_primary

    def _observe(self, side: Side, action: SessionAction | RecoveryAction) -> None:
        """What the side's driver is about to execute: the harness's records and the link's tap."""
        if isinstance(action, SendControlPacket):
            side.control_sent[action.msg_type.name] += 1
            side.tap = (action.msg_type, action.msg_id)
        elif isinstance(action, RekeyCompleted):
            side.rekeys_completed.append(action)
        elif isinstance(action, SessionLost):
            side.lost = action
        elif isinstance(action, RECOVERY_ACTIONS):
            side.recovery_actions.append(action)
        elif not isinstance(action, InstallInboundSa | InstallOutboundSa | RemoveInboundSa):
            side.other_actions.append(action)

    def _send_control(self, side: Side, data: bytes) -> None:
        """The side's dataplane sealed a control packet: onto the link, with the tap record."""
        msg_type, msg_id = side.tap if side.tap is not None else (None, 0)
        side.tap = None
        self._link_from(side).send(WirePacket(data, "control", msg_type=msg_type, msg_id=msg_id), self.now)

    def _deliver(self, receiver: Side, packets: list[WirePacket]) -> None:
        """One receive burst: open everything that arrived now, then dispatch it."""
        opened = receiver.dataplane.open([p.data for p in packets])
        for packet, result in zip(packets, opened, strict=True):
            if packet.kind == "ike":
                continue  # a late retransmission of the initial exchange
            if packet.is_control:
                if receiver.lost is not None:
                    receiver.control_after_loss += 1  # refused (no peer any more) or ignored
                elif result.status != "OK":
                    receiver.control_rejected[result.status] += 1
                elif result.kind != "control":
                    receiver.misclassified += 1
                else:
                    receiver.control_delivered += 1
                    receiver.driver.receive_control(result.data, self.now)
                continue
            stream = receiver.stream
            link_reordered = packet.stream_seq < stream.highest_arrived
            stream.highest_arrived = max(stream.highest_arrived, packet.stream_seq)
            if result.status != "OK":
                # A side whose session is lost has no peer in its dataplane any more.
                down = receiver.lost is not None and result.status == "DP_UNKNOWN_SESSION"
                stream.rejected["SESSION_DOWN" if down else result.status] += 1
                continue
            if result.kind != "data":
                receiver.misclassified += 1
                continue
            if stream_seq_of(result.data) != packet.stream_seq:
                stream.corrupted += 1
                continue
            stream.delivered += 1
            if packet.stream_seq < stream.highest:
                stream.out_of_order += 1
                stream.link_reordered += link_reordered
            stream.highest = max(stream.highest, packet.stream_seq)

    def _send_data(self, side: Side) -> None:
        if side.lost is not None or not self.data_running:
            return
        src, dst = self._lan_hosts[side.name]
        seq = side.next_stream_seq
        data = side.dataplane.seal(stream_packet(src, dst, seq))
        side.next_stream_seq += 1
        self._peer(side).stream.sent += 1
        if data is None:
            return
        link = self._link_from(side)
        duplicated = link.stats.duplicated
        link.send(WirePacket(data, "data", stream_seq=seq), self.now)
        self.data_duplicated_by_link += link.stats.duplicated - duplicated

    def _check_keys(self) -> None:
        """Invariant: whatever one side seals with, the other can open (within grace)."""
        for sender, name in ((self.primary, "p->s"), (self.secondary, "s->p")):
            receiver = self._peer(sender)
            if sender.lost is not None or receiver.lost is not None:
                self._mismatch_since[name] = None
                continue
            sa = sender.dataplane.outbound
            if sa is not None and receiver.dataplane.holds(sa):
                self._mismatch_since[name] = None
                continue
            since = self._mismatch_since[name]
            if since is None:
                self._mismatch_since[name] = self.now
            elif self.now - since > self.grace_s:
                self.key_mismatch_violations += 1
                self._mismatch_since[name] = self.now

    # --- driving -----------------------------------------------------------------------

    def _next_event_s(self) -> float | None:
        candidates = [self.to_secondary.next_arrival(), self.to_primary.next_arrival()]
        for side in (self.primary, self.secondary):
            candidates.append(side.driver.get_timer())
            if self.data_running and side.lost is None:
                candidates.append(self._next_data_s[side.name])
        present = [c for c in candidates if c is not None]
        return min(present) if present else None

    def step(self, until_s: float) -> bool:
        """Process everything due at the next event time (not after *until_s*)."""
        at = self._next_event_s()
        if at is None or at > until_s:
            self.now = max(self.now, until_s)
            return False
        self.now = max(self.now, at)
        for link, receiver in ((self.to_secondary, self.secondary), (self.to_primary, self.primary)):
            arrivals = link.pop_arrivals(self.now)
            if arrivals:
                self._deliver(receiver, arrivals)
        for side in (self.primary, self.secondary):
            side.driver.handle_timer(self.now)  # whatever of its machines is due
            if self.data_running and side.lost is None and self._next_data_s[side.name] <= self.now:
                self._send_data(side)
                self._next_data_s[side.name] += self.data_interval_s
        if self.now >= self._next_traffic_report_s:
            # The runtime feeds its sessions the dataplane's counters likewise, twice a second.
            self._next_traffic_report_s = self.now + TRAFFIC_POLL_S
            for side in (self.primary, self.secondary):
                if side.lost is None:
                    side.session.observe_traffic(self.now, side.dataplane.sealed_packets,
                                                 side.dataplane.opened_packets)
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
        self.primary.driver.execute(self.now)
        return started

    def do(self, side: Side, method: str, *args: object, **kwargs: object) -> object:
        """Call a session method at the current time and execute its actions."""
        result = getattr(side.session, method)(*args, now=self.now, **kwargs)
        side.driver.execute(self.now)
        return result

    # --- results -------------------------------------------------------------------------

    def report(self) -> HarnessReport:
        sides = (self.primary, self.secondary)
        rejected: Counter[str] = Counter()
        control_rejected: Counter[str] = Counter()
        drops: Counter[str] = Counter()
        seal_failures: Counter[str] = Counter()
        for side in sides:
            rejected.update(side.stream.rejected)
            control_rejected.update(side.control_rejected)
            drops.update(side.dataplane.dp.counters().drops)
            seal_failures.update(side.dataplane.seal_failures)
        data_sent = sum(s.stream.sent for s in sides)
        delivered = sum(s.stream.delivered for s in sides)
        corrupted = sum(s.stream.corrupted for s in sides)
        misclassified = sum(s.misclassified for s in sides)
        arrived = delivered + sum(rejected.values()) + corrupted
        return HarnessReport(
            rekeys_completed=len(self.primary.rekeys_completed),
            data_sent=data_sent,
            data_delivered=delivered,
            data_dropped_by_link=(data_sent + self.data_duplicated_by_link - arrived - self._data_in_flight()
                                  - sum(seal_failures.values())),
            data_rejected=dict(rejected),
            data_out_of_order=sum(s.stream.out_of_order for s in sides),
            rekey_rejected=sum(rejected[r] for r in ("DP_UNKNOWN_ID", "DP_AUTH_FAILED", "DP_TOO_OLD")),
            rekey_out_of_order=sum(s.stream.out_of_order - s.stream.link_reordered for s in sides),
            control_rejected=dict(control_rejected),
            key_mismatch_violations=self.key_mismatch_violations,
            sessions_lost=[f"{s.name}: {s.lost.reason_code} {s.lost.detail}" for s in sides if s.lost],
            install_errors=self.primary.dataplane.install_errors + self.secondary.dataplane.install_errors,
            dataplane_drops=dict(drops),
            data_duplicated_by_link=self.data_duplicated_by_link,
            control_delivered=sum(s.control_delivered for s in sides),
            seal_failures=dict(seal_failures),
            misclassified=misclassified,
            corrupted=corrupted,
        )

    def _data_in_flight(self) -> int:
        return sum(
            1 for link in (self.to_secondary, self.to_primary)
            for _, _, packet in link._in_flight if packet.kind == "data"
        )


__all__ = [
    "PEER_ID", "PRIMARY_OUTER", "SECONDARY_OUTER", "DropControl", "DropIke", "Harness", "HarnessReport",
    "Side", "SideDataplane", "StreamStats", "WirePacket", "make_initial_keys", "stream_packet",
    "stream_seq_of",
]
