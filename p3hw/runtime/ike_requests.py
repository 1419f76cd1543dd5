"""The runtime's side of established IKE SAs (docs/handshake.md "After the exchange").

The handshake machines answer a peer's requests on an established IKE SA
(p3hw/protocol/ike_sa.py); these helpers let the gateway route a datagram
to the machine that holds the SA, log what came of it, and report it.
"""

from __future__ import annotations

import logging

from p3hw.protocol.handshake import InitiatorHandshake, MessageDropped, PeerDeletedSa, ResponderHandshake


def holds_ike_sa(machine: InitiatorHandshake | None, data: bytes) -> bool:
    """Whether *data* (an IKE message) belongs to the established IKE SA of the secondary's *machine*."""
    return machine is not None and machine.ike_sa is not None and data[:8] == machine.spi_i


def log_ike_sa_events(machine: InitiatorHandshake, log: logging.Logger, peer: str) -> None:
    for event in machine.events():
        if isinstance(event, PeerDeletedSa):
            log.info("%s deleted the %s SA of the initial exchange", peer, "IKE" if event.ike_sa else "child")
        elif isinstance(event, MessageDropped):
            log.debug("%s dropped IKE message from %s: %s", event.reason_code, peer, event.detail)


def log_peer_deleted(event: PeerDeletedSa, log: logging.Logger, addr: str) -> None:
    log.info("%s (%s) deleted the %s SA of the initial exchange", event.peer_identity, addr,
             "IKE" if event.ike_sa else "child")


def ike_status(responder: ResponderHandshake | None, machines: list[InitiatorHandshake | None]) -> dict[str, int]:
    """For the status file: INFORMATIONAL requests (liveness checks, DELETEs) answered on IKE SAs."""
    answered = responder.informational_answered if responder is not None else 0
    answered += sum(m.ike_sa.informational_answered for m in machines if m is not None and m.ike_sa is not None)
    return {"informational_answered": answered}
