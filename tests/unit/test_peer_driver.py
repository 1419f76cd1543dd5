"""PeerDriver without root: two drivers, primary and secondary, joined through recording
DataplanePorts that hand each other's control packets across (no sealing, no worker)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

import pytest

from p3hw.crypto.keys import SaKeys, SessionKeys
from p3hw.crypto.keysource import SoftwareKeySource
from p3hw.dataplane import Terminated
from p3hw.protocol.handshake import InitiatorHandshake
from p3hw.protocol.ids import P3IdAllocator
from p3hw.protocol.recovery import Reconnect, TerminateEnterpriseConnections
from p3hw.protocol.session import SessionConfig
from p3hw.reasons import P3Error
from p3hw.runtime.peer import PeerDriver, PeerSettings
from p3hw.runtime.ports import Traffic
from p3hw.simulators.harness import make_initial_keys
from p3hw.wire.ike import Identity

P_ADDR, S_ADDR = "10.255.0.1", "10.255.0.2"
CIPHER = "aes-256-gcm"
PEER = 7
LOG = logging.getLogger("test_peer_driver")


@dataclass
class FakePort:
    """A DataplanePort that records what it is asked and queues control packets for the other side."""

    installed: list[tuple[tuple[str, int], SessionKeys]] = field(default_factory=list)
    inbound: dict[int, SaKeys] = field(default_factory=dict)
    outbound: SaKeys | None = None
    outbound_history: list[SaKeys] = field(default_factory=list)
    removed_sessions: int = 0
    sent_control: list[bytes] = field(default_factory=list)
    sent_ike: list[tuple[str, int, bytes]] = field(default_factory=list)
    terminated: int = 0
    #: what each SA "carried", handed back when it goes
    per_sa: Traffic = field(default_factory=lambda: Traffic(1, 100, 2, 200))

    def install_session(self, peer_id: int, outer: tuple[str, int], keys: SessionKeys) -> None:
        assert peer_id == PEER
        self.installed.append((outer, keys))
        self.inbound = {keys.inbound.p3_id: keys.inbound}
        self.outbound = keys.outbound

    def remove_session(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        self.removed_sessions += 1
        self.inbound, self.outbound = {}, None
        return Traffic(len(inbound_ids), 0, 1, 0)

    def add_inbound_sa(self, peer_id: int, sa: SaKeys) -> None:
        self.inbound[sa.p3_id] = sa

    def remove_inbound_sa(self, peer_id: int, p3_id: int) -> Traffic:
        self.inbound.pop(p3_id)
        return Traffic(self.per_sa.packets_in, self.per_sa.bytes_in)

    def install_outbound_sa(self, peer_id: int, sa: SaKeys) -> Traffic:
        self.outbound = sa
        self.outbound_history.append(sa)
        return Traffic(0, 0, self.per_sa.packets_out, self.per_sa.bytes_out)

    def send_control(self, peer_id: int, inner_packet: bytes) -> None:
        self.sent_control.append(inner_packet)

    def send_ike(self, addr: str, port: int, message: bytes) -> None:
        self.sent_ike.append((addr, port, message))

    def terminate_flows(self, peer_id: int) -> Terminated:
        self.terminated += 1
        return Terminated(tcp_flows_reset=2, tcp_resets=2, icmp_unreachables=1)

    def traffic(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        return Traffic(10, 1000, 20, 2000)

    def outbound_id(self, peer_id: int) -> int | None:
        return None if self.outbound is None else self.outbound.p3_id


def _settings(role: str, *, settle_s: float = 0.0, rekey_wait_s: float = 3600.0,
              heartbeat_time_s: float = 15.0, heartbeat_fail_s: float = 120.0) -> PeerSettings:
    local, peer = (P_ADDR, S_ADDR) if role == "primary" else (S_ADDR, P_ADDR)
    return PeerSettings(role=role, address=peer, remote_port=5653,
                        session=SessionConfig(role, CIPHER, local, peer, rekey_wait_s=rekey_wait_s,
                                              heartbeat_time_s=heartbeat_time_s, heartbeat_fail_s=heartbeat_fail_s),
                        control_settle_s=settle_s)


class Pair:
    """A primary and a secondary driver with a session between them, at virtual time `now`."""

    def __init__(self, *, settle_s: float = 0.0, observe: bool = False) -> None:
        self.now = 0.0
        self.ports = {"primary": FakePort(), "secondary": FakePort()}
        self.ids = {"primary": P3IdAllocator(), "secondary": P3IdAllocator()}
        self.seen: list[object] = []
        self.handshakes: list[int] = []
        source = SoftwareKeySource()
        self.drivers = {
            "primary": PeerDriver(PEER, _settings("primary", settle_s=settle_s), self.ports["primary"],
                                  self.ids["primary"], source, LOG),
            "secondary": PeerDriver(PEER, _settings("secondary"), self.ports["secondary"], self.ids["secondary"],
                                    source, LOG, make_handshake=self._handshake,
                                    observer=self.seen.append if observe else None),
        }
        keys_p, keys_s = make_initial_keys(CIPHER, source)
        self.drivers["primary"].start_session(keys_p, CIPHER, ("198.51.100.2", 5653), self.now)
        self.drivers["secondary"].start_session(keys_s, CIPHER, ("192.0.2.1", 5653), self.now)

    def _handshake(self, p3_id: int) -> InitiatorHandshake:
        self.handshakes.append(p3_id)
        return InitiatorHandshake(Identity.ip(S_ADDR), b"psk", remote_identity=Identity.ip(P_ADDR),
                                  inbound_p3_id=p3_id)

    @property
    def primary(self) -> PeerDriver:
        return self.drivers["primary"]

    @property
    def secondary(self) -> PeerDriver:
        return self.drivers["secondary"]

    def deliver(self) -> int:
        """Hand every queued control packet to the other side, until none is left; how many."""
        moved = 0
        while True:
            batch = [(name, packet) for name, port in self.ports.items() for packet in port.sent_control]
            for port in self.ports.values():
                port.sent_control.clear()
            if not batch:
                return moved
            for name, packet in batch:
                other = "secondary" if name == "primary" else "primary"
                self.drivers[other].receive_control(packet, self.now)
                moved += 1

    def advance(self, seconds: float) -> None:
        """Let virtual time pass, running every timer due and delivering what it sends."""
        until = self.now + seconds
        while True:
            self.deliver()
            timers = [t for t in (d.get_timer() for d in self.drivers.values()) if t is not None and t <= until]
            if not timers:
                break
            self.now = max(self.now, min(timers))
            for driver in self.drivers.values():
                driver.handle_timer(self.now)
        self.now = until


def test_a_new_session_installs_its_keys_and_the_primary_says_hello() -> None:
    pair = Pair()
    port = pair.ports["primary"]
    [(outer, keys)] = port.installed
    assert outer == ("198.51.100.2", 5653)
    assert port.outbound == keys.outbound and set(port.inbound) == {keys.inbound.p3_id}
    assert len(port.sent_control) == 1  # HELLO (spec §2.1.2: the primary initializes the channel)
    assert pair.primary.phase == "established" and pair.primary.state.sessions_started == 1
    assert pair.deliver() == 2  # HELLO, ACK


def test_a_rekey_installs_new_sas_on_both_sides_and_each_seals_what_the_other_opens() -> None:
    pair = Pair()
    pair.deliver()
    first_p, first_s = pair.ports["primary"].outbound, pair.ports["secondary"].outbound
    assert pair.primary.rekey(pair.now)
    pair.advance(60.0)  # past the grace period: the old inbound SAs go
    p, s = pair.ports["primary"], pair.ports["secondary"]
    assert pair.primary.rekeys_completed == 1 and pair.secondary.rekeys_completed == 1
    assert p.outbound not in (None, first_p) and s.outbound not in (None, first_s)
    assert p.outbound is not None and s.outbound is not None
    assert set(s.inbound) == {p.outbound.p3_id} and set(p.inbound) == {s.outbound.p3_id}
    assert p.outbound_history == [p.outbound] and s.outbound_history == [s.outbound]


def test_the_primary_holds_a_new_sessions_first_control_packets_for_the_settle_time() -> None:
    pair = Pair(settle_s=0.1)
    port = pair.ports["primary"]
    assert port.sent_control == [] and len(pair.primary.state.held_control) == 1
    assert pair.primary.get_timer() == pytest.approx(0.1)
    pair.primary.handle_timer(0.05)
    assert port.sent_control == []
    pair.primary.handle_timer(0.1)
    assert len(port.sent_control) == 1 and pair.primary.state.held_control == []


def test_a_lost_session_terminates_flows_leaves_the_dataplane_and_the_secondary_waits_to_reconnect() -> None:
    pair = Pair(observe=True)
    pair.deliver()
    pair.primary.shutdown(pair.now)
    pair.deliver()
    s = pair.ports["secondary"]
    assert pair.secondary.session is None and pair.secondary.state.losses == ["P3-E501"]
    assert s.terminated == 1 and s.removed_sessions == 1 and s.outbound is None
    assert pair.secondary.phase == "waiting" and pair.secondary.get_timer() == pytest.approx(5.0)
    assert any(isinstance(a, TerminateEnterpriseConnections) for a in pair.seen)
    assert pair.ports["primary"].removed_sessions == 1 and pair.primary.state.losses == ["P3-E504"]
    assert pair.primary.phase == "down"


def test_after_the_wait_the_secondary_dials_again_with_a_new_p3_id() -> None:
    pair = Pair(observe=True)
    pair.deliver()
    first_id = pair.ports["secondary"].installed[0][1].inbound.p3_id
    pair.primary.shutdown(pair.now)
    pair.deliver()
    pair.secondary.handle_timer(5.0)
    assert any(isinstance(a, Reconnect) for a in pair.seen)
    assert pair.secondary.phase == "connecting" and len(pair.handshakes) == 1
    assert pair.handshakes[0] != first_id and pair.handshakes[0] in pair.ids["secondary"].live
    [(addr, port, _message)] = pair.ports["secondary"].sent_ike
    assert (addr, port) == (P_ADDR, 5653)


def test_p3_ids_of_sas_that_went_are_free_again() -> None:
    pair = Pair()
    pair.deliver()
    ids = pair.ids["primary"]
    first_inbound = next(iter(pair.ports["primary"].inbound))
    assert first_inbound in ids.live
    pair.primary.rekey(pair.now)
    pair.advance(60.0)
    assert first_inbound not in ids.live and ids.live == set(pair.ports["primary"].inbound)
    pair.primary.shutdown(pair.now)
    assert ids.live == set()


def test_status_counts_what_retired_sas_carried_plus_the_live_ones() -> None:
    pair = Pair()
    pair.deliver()
    pair.primary.rekey(pair.now)
    pair.advance(60.0)
    status = pair.primary.status(pair.now)
    # one inbound SA went (1 packet, 100 bytes), one outbound SA was replaced (2, 200); live: 10/1000, 20/2000
    assert (status.packets_in, status.bytes_in, status.packets_out, status.bytes_out) == (11, 1100, 22, 2200)
    assert status.state == "established" and status.rekeys_completed == 1
    assert status.outbound_p3_id == pair.ports["primary"].outbound.p3_id  # type: ignore[union-attr]
    assert "next_rekey_s" in status.to_dict() and "last_rekey_s" in status.to_dict()


def test_admin_verbs_on_a_remote_without_session_name_e702() -> None:
    pair = Pair()
    pair.primary.shutdown(pair.now)
    with pytest.raises(P3Error) as caught:
        pair.primary.rekey(pair.now)
    assert caught.value.code == "P3-E702" and S_ADDR in caught.value.detail


def test_stopping_sends_held_packets_then_one_shutdown_and_keeps_the_dataplane() -> None:
    pair = Pair(settle_s=0.1)
    port = pair.ports["primary"]
    pair.primary.stop(0.01, "primary is stopping")
    assert len(port.sent_control) == 2  # the held HELLO, then SHUTDOWN
    assert port.removed_sessions == 0 and port.terminated == 0


def test_changed_timers_reach_the_live_session_and_the_secondary_without_a_restart() -> None:
    pair = Pair()
    pair.deliver()
    session = pair.primary.session
    assert session is not None and session.primary is not None
    pair.now = 100.0
    pair.primary.change_settings(_settings("primary", rekey_wait_s=300.0, heartbeat_time_s=5.0,
                                           heartbeat_fail_s=30.0), pair.now)
    pair.deliver()
    assert pair.primary.session is session and pair.primary.state.sessions_started == 1
    assert session.primary.next_rekey_s == 400.0  # brought forward: at most rekey_wait from now
    for driver in (pair.primary, pair.secondary):
        status = driver.status(pair.now)
        assert (status.heartbeat_time_s, status.heartbeat_fail_s) == (5.0, 30.0)
        assert driver.state.losses == [] and driver.phase == "established"


def test_the_primary_announces_its_heartbeat_timers_at_the_start_of_a_session() -> None:
    source = SoftwareKeySource()
    ports = {"primary": FakePort(), "secondary": FakePort()}
    primary = PeerDriver(PEER, PeerSettings(**{**_settings("primary", heartbeat_time_s=9.0).__dict__,
                                               "announce_settings": True}),
                         ports["primary"], P3IdAllocator(), source, LOG)
    secondary = PeerDriver(PEER, _settings("secondary"), ports["secondary"], P3IdAllocator(), source, LOG)
    keys_p, keys_s = make_initial_keys(CIPHER, source)
    primary.start_session(keys_p, CIPHER, ("198.51.100.2", 5653), 0.0)
    secondary.start_session(keys_s, CIPHER, ("192.0.2.1", 5653), 0.0)
    assert len(ports["primary"].sent_control) == 2  # HELLO, CONFIG
    for packet in ports["primary"].sent_control:
        secondary.receive_control(packet, 0.0)
    assert secondary.status(0.0).heartbeat_time_s == 9.0
