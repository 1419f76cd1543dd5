"""`DataplanePort`: everything a `PeerDriver` may ask of the dataplane (docs/architecture.md).

A driver never sees a `Dataplane`, a `Worker` or a socket: it calls these
methods with its peer id. The daemon's implementation is
`p3hw.runtime.io.GatewayPort` (the native worker); the two-sided simulation's
is `simulators.harness.SideDataplane`; unit tests use a recording fake.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from p3hw.crypto.keys import SaKeys, SessionKeys
from p3hw.dataplane import Terminated


@dataclass
class Traffic:
    """Packets and bytes carried, each way."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.packets_in + other.packets_in, self.bytes_in + other.bytes_in,
                       self.packets_out + other.packets_out, self.bytes_out + other.bytes_out)


class DataplanePort(Protocol):
    """The dataplane as one peer's driver sees it. Methods that remove an SA
    return what it carried, read at the moment it went (so no count is lost)."""

    def install_session(self, peer_id: int, outer: tuple[str, int], keys: SessionKeys) -> None:
        """The peer, reached at *outer* (address, port), with the session's first inbound and outbound SAs."""

    def remove_session(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        """The peer and all its SAs leave the dataplane; what its live SAs carried."""

    def add_inbound_sa(self, peer_id: int, sa: SaKeys) -> None:
        """Open packets under *sa* too (a rekey's new inbound SA)."""

    def remove_inbound_sa(self, peer_id: int, p3_id: int) -> Traffic:
        """Stop opening packets under *p3_id* (its grace period is over)."""

    def install_outbound_sa(self, peer_id: int, sa: SaKeys) -> Traffic:
        """Seal with *sa* from the next packet on, starting at `NEW_SA_FIRST_SEQ`; what the old one carried."""

    def send_control(self, peer_id: int, inner_packet: bytes) -> None:
        """Seal *inner_packet* (a control message for the peer) like data and send it."""

    def send_ike(self, addr: str, port: int, message: bytes) -> None:
        """Send one IKE message (the initial exchange) to *addr* port *port*."""

    def terminate_flows(self, peer_id: int) -> Terminated:
        """Spec §2.1.7 1): reset every enterprise connection that ran through the peer."""

    def traffic(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        """What the peer's live SAs (these inbound ones and the outbound one) have carried."""

    def outbound_id(self, peer_id: int) -> int | None:
        """The P3 ID the peer's packets are sealed with now, None without a session."""
