"""The peer's requests on an established IKE SA (RFC 7296 §1.4, §2.3), answered for the SA's life.

After the initial exchange p3hw itself sends no more IKE requests (keys change
through the control channel, DESIGN.md §4.3), but a standard peer does: an
empty INFORMATIONAL as its liveness check (dead-peer detection), DELETE of the
child SA or of the IKE SA, perhaps a CREATE_CHILD_SA. RFC 7296 §1.4 says every
INFORMATIONAL request MUST be answered, or the peer declares us dead.

``IkeSaRequests`` is the part both machines share: the responder
(``handshake.ResponderHandshake``) keeps one per established secondary, the
initiator (``handshake.InitiatorHandshake``) one for its own IKE SA. It keeps
the responder's message-ID window of one (§2.3): the next request is
processed, a retransmission of the last one gets the same answer again,
anything else is dropped. Sans-I/O, like every machine in p3hw/protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

from p3hw.reasons import P3Error
from p3hw.wire.ike import (
    CREATE_CHILD_SA,
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    INFORMATIONAL,
    N_NO_ADDITIONAL_SAS,
    N_UNSUPPORTED_CRITICAL_PAYLOAD,
    PROTO_AH,
    PROTO_ESP,
    PROTO_IKE,
    DeletePayload,
    IkeMessage,
    NotifyPayload,
    Payload,
    UnsupportedCriticalPayload,
    decrypt_message,
    encode_encrypted_message,
)


@dataclass(frozen=True)
class PeerRequest:
    """What an answered request asked for, for the machine that owns the IKE SA."""

    exchange_type: int
    message_id: int
    #: the peer deleted the IKE SA (and with it the child SA)
    deletes_ike_sa: bool = False
    #: the peer deleted our child SA (one of its SPIs named the child's inbound SA on its side)
    deletes_child_sa: bool = False
    #: error notifies the request carried (e.g. AUTHENTICATION_FAILED, RFC 7296 §2.21.2)
    error_notifies: tuple[int, ...] = ()


class IkeSaRequests:
    """Answers the peer's requests on one IKE SA.

    *original_initiator*: whether this side started the IKE SA (its answers
    carry the Initiator flag and are sealed with SK_ei, RFC 7296 §3.1).
    *next_iv* continues the IV counter this side used for SK so far: an IV
    never repeats under a key. *child_spis* are (this side's inbound SPI, the
    peer's inbound SPI) of the child SA, or None if it has none.
    *answered* is the last request already answered and its answer (the
    IKE_AUTH exchange on the responder), so a retransmission of it is served.
    """

    def __init__(self, spi_i: bytes, spi_r: bytes, *, original_initiator: bool, keys_in: tuple[bytes, bytes],
                 keys_out: tuple[bytes, bytes], next_iv: int, child_spis: tuple[bytes, bytes] | None,
                 answered: tuple[int, bytes, bytes] | None = None) -> None:
        self.spi_i, self.spi_r = spi_i, spi_r
        self._flags = FLAG_RESPONSE | (FLAG_INITIATOR if original_initiator else 0)
        self._key_in, self._salt_in = keys_in
        self._key_out, self._salt_out = keys_out
        self._next_iv = next_iv
        self.child_spis = child_spis
        self._last = answered
        self.next_message_id = answered[0] + 1 if answered is not None else 0
        self.deleted = False
        #: requests answered (retransmissions included): INFORMATIONAL liveness checks and the rest
        self.requests_answered = 0
        self.informational_answered = 0

    def receive(self, message: IkeMessage, data: bytes) -> tuple[list[bytes], PeerRequest | None]:
        """A decoded request of the peer's on this SA -> (answers to send, what it asked for if new).

        Raises P3Error (dropped by the caller) for what is not answered: a
        response, a message ID outside the window, a failed integrity check.
        """
        if message.is_response:
            raise P3Error("IKE_UNEXPECTED", "a response on an IKE SA where this side sent no request")
        if message.from_initiator == bool(self._flags & FLAG_INITIATOR):
            raise P3Error("IKE_UNEXPECTED", "a request whose Initiator flag names this side's role")
        if self._last is not None and message.message_id == self._last[0]:
            if data != self._last[1]:
                raise P3Error("IKE_UNEXPECTED", f"a different request reuses message id {message.message_id}")
            self.requests_answered += 1
            return [self._last[2]], None  # RFC 7296 §2.1: answered again, not processed again
        if self.deleted:
            raise P3Error("IKE_UNEXPECTED", "a request on an IKE SA the peer deleted")
        if message.message_id != self.next_message_id:
            raise P3Error("IKE_UNEXPECTED", f"request with message id {message.message_id}, "
                          f"{self.next_message_id} expected (window of one, RFC 7296 §2.3)")
        try:
            opened = decrypt_message(message, self._key_in, self._salt_in)  # P3-E307: dropped
        except UnsupportedCriticalPayload as critical:
            # RFC 7296 §2.5: the authenticated request is refused, and told why.
            answer = self._seal(message, [NotifyPayload(N_UNSUPPORTED_CRITICAL_PAYLOAD,
                                                        bytes([critical.payload_type]))])
            return self._answered(message, data, answer), PeerRequest(message.exchange_type, message.message_id)
        if message.exchange_type == INFORMATIONAL:
            payloads, request = self._informational(opened)
            self.informational_answered += 1
        elif message.exchange_type == CREATE_CHILD_SA:
            # No CREATE_CHILD_SA here (keys change through the control channel):
            # RFC 7296 §1.3 lets a responder refuse further SAs this way.
            payloads, request = [NotifyPayload(N_NO_ADDITIONAL_SAS)], PeerRequest(CREATE_CHILD_SA, message.message_id)
        else:
            raise P3Error("IKE_UNEXPECTED", f"exchange type {message.exchange_type} on an established IKE SA")
        return self._answered(message, data, self._seal(message, payloads)), request

    def delete_request(self, message_id: int) -> bytes:
        """This side leaves the IKE SA: INFORMATIONAL {D(IKE)} (RFC 7296 §1.4.1), sent once.

        p3hw sends it when it gives an IKE SA up for a new one; the peer's
        answer changes nothing here, so it is neither awaited nor retransmitted.
        """
        self.deleted = True
        iv = self._next_iv.to_bytes(8, "big")
        self._next_iv += 1
        flags = self._flags & FLAG_INITIATOR  # a request: no Response flag
        request = IkeMessage(self.spi_i, self.spi_r, INFORMATIONAL, flags, message_id, [DeletePayload(PROTO_IKE)])
        return encode_encrypted_message(request, self._key_out, self._salt_out, iv)

    def _informational(self, opened: IkeMessage) -> tuple[list[Payload], PeerRequest]:
        """RFC 7296 §1.4.1: an empty request gets an empty answer; a DELETE is answered in kind."""
        deletes_ike = deletes_child = False
        answer: list[Payload] = []
        for delete in opened.all(DeletePayload):
            assert isinstance(delete, DeletePayload)
            if delete.protocol_id == PROTO_IKE:
                deletes_ike = True
            elif delete.protocol_id in (PROTO_ESP, PROTO_AH) and self.child_spis is not None:
                ours, theirs = self.child_spis
                if delete.protocol_id == PROTO_ESP and theirs in delete.spis:
                    # The peer closed its inbound SA; we close ours and name it (§1.4.1).
                    answer.append(DeletePayload(PROTO_ESP, (ours,)))
                    deletes_child = True
        if deletes_ike:
            answer = []  # §1.4.1: deleting the IKE SA is answered with an empty INFORMATIONAL
            self.deleted = True
        if deletes_child:
            self.child_spis = None
        errors = tuple(n.notify_type for n in opened.error_notifies())
        return answer, PeerRequest(INFORMATIONAL, opened.message_id, deletes_ike, deletes_child, errors)

    def _seal(self, request: IkeMessage, payloads: list[Payload]) -> bytes:
        iv = self._next_iv.to_bytes(8, "big")
        self._next_iv += 1
        answer = IkeMessage(self.spi_i, self.spi_r, request.exchange_type, self._flags, request.message_id, payloads)
        return encode_encrypted_message(answer, self._key_out, self._salt_out, iv)

    def _answered(self, message: IkeMessage, data: bytes, answer: bytes) -> list[bytes]:
        self._last = (message.message_id, data, answer)
        self.next_message_id = message.message_id + 1
        self.requests_answered += 1
        return [answer]
