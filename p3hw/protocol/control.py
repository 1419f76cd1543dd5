"""The control channel: request ids, answers, retransmission, duplicate suppression.

Sans-I/O (STYLE.md, the aioquic shape): feed it the decrypted inner packets
that were addressed to this P3 system (`receive_packet`) and the time
(`handle_timer` at `get_timer()`); those inputs return what the peer said
(`ControlEvent`s, for the session that owns the channel), and `events()`
drains the `SendControlPacket`s that the runtime hands to the dataplane as
ordinary inner packets (spec §2.1.3: they are sealed again with the data key).

Reliability model (docs/protocol.md §Control channel):

* every request carries a fresh ``msg_id`` (per direction, counting from 1);
* the receiver answers each request exactly once; the answer is cached, and
  a retransmitted request (same ``msg_id``) is answered again from the cache
  without reaching the application a second time;
* the sender retransmits an unanswered request every ``retransmit_s``
  seconds, up to ``max_retries`` times (spec §2.1.6: four), then reports
  `RequestFailed`;
* a request can be sent without retransmission (heartbeats: liveness has
  its own clock).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from p3hw.constants import REKEY_MAX_RETRIES
from p3hw.reasons import P3Error
from p3hw.wire.control import (
    RESPONSE_TYPES,
    ControlMessage,
    ControlOpener,
    ControlSealer,
    FieldValue,
    MsgType,
    decode_message,
    encode_message,
    unwrap_packet,
    wrap_packet,
)

#: Implementation constant: seconds between retransmissions of an unanswered
#: request. Five tries (one plus four retries, spec §2.1.6) then span 10 s.
DEFAULT_RETRANSMIT_S = 2.0
#: Answers kept for retransmitted requests (more than any peer has in flight).
RESPONSE_CACHE_SIZE = 256
#: Request ids remembered for duplicate suppression, behind the highest seen.
DUPLICATE_WINDOW = 4096


@dataclass(frozen=True)
class SendControlPacket:
    """Action: give *packet* (a full inner IP packet) to the dataplane to seal
    and send to the peer like any data packet. *msg_type* and *msg_id* are for
    logs and tests; the packet itself is opaque."""

    packet: bytes
    msg_type: MsgType
    msg_id: int
    retransmission: bool = False


@dataclass(frozen=True)
class RequestReceived:
    """Event: a new request from the peer; the owner must answer it."""

    message: ControlMessage


@dataclass(frozen=True)
class ResponseReceived:
    """Event: the peer answered one of our requests."""

    request: ControlMessage
    response: ControlMessage


@dataclass(frozen=True)
class RequestFailed:
    """Event: a request stayed unanswered after all its retries."""

    request: ControlMessage
    attempts: int


@dataclass(frozen=True)
class MessageRejected:
    """Event: an inbound control packet was dropped (for counters and logs)."""

    error: P3Error


ControlEvent = RequestReceived | ResponseReceived | RequestFailed | MessageRejected


@dataclass
class _Pending:
    message: ControlMessage
    retransmit: bool
    max_retries: int
    attempts: int
    next_send_s: float


class ControlChannel:
    """One side of the control channel with one peer."""

    def __init__(
        self,
        local_address: str,
        peer_address: str,
        control_out_key: bytes,
        control_in_key: bytes,
        retransmit_s: float = DEFAULT_RETRANSMIT_S,
    ) -> None:
        self.local_address = local_address
        self.peer_address = peer_address
        self.retransmit_s = retransmit_s
        self._sealer = ControlSealer(control_out_key, 0)
        self._opener = ControlOpener()
        self._opener.add_key(0, control_in_key)
        self._next_msg_id = 1
        self._pending: dict[int, _Pending] = {}
        self._responses: OrderedDict[int, ControlMessage] = OrderedDict()
        self._highest_request_seen = 0
        self._requests_seen: set[int] = set()
        self._outbox: list[SendControlPacket] = []
        self.messages_sent = 0
        self.messages_received = 0
        self.retransmissions = 0
        self.duplicates_suppressed = 0
        self.rejected = 0

    # --- keys (driven by the rekey machine) -----------------------------------------

    @property
    def out_key_epoch(self) -> int:
        return self._sealer.key_epoch

    def switch_out_key(self, key: bytes, key_epoch: int) -> None:
        """Seal everything from now on (retransmissions too) with the new key."""
        self._sealer = ControlSealer(key, key_epoch & 0xFFFF)

    def add_in_key(self, key: bytes, key_epoch: int) -> None:
        self._opener.add_key(key_epoch, key)

    def remove_in_key(self, key_epoch: int) -> None:
        self._opener.remove_key(key_epoch)

    @property
    def in_key_epochs(self) -> frozenset[int]:
        return self._opener.epochs

    # --- sending -----------------------------------------------------------------

    def _allocate_msg_id(self) -> int:
        msg_id = self._next_msg_id
        if msg_id > 0xFFFFFFFF:
            raise P3Error("CTL_UNEXPECTED", "control message ids exhausted; the session must be re-established")
        self._next_msg_id += 1
        return msg_id

    def _emit(self, message: ControlMessage, retransmission: bool = False) -> None:
        sealed = self._sealer.seal(encode_message(message))
        packet = wrap_packet(sealed, self.local_address, self.peer_address)
        self._outbox.append(SendControlPacket(packet, message.msg_type, message.msg_id, retransmission))
        self.messages_sent += 1
        if retransmission:
            self.retransmissions += 1

    def send_request(
        self,
        msg_type: MsgType,
        fields: dict[str, FieldValue],
        now: float,
        retransmit: bool = True,
        max_retries: int = REKEY_MAX_RETRIES,
    ) -> ControlMessage:
        if msg_type in RESPONSE_TYPES:
            raise P3Error("INTERNAL", f"{msg_type.name} is an answer, not a request")
        message = ControlMessage(msg_type, self._allocate_msg_id(), 0, dict(fields))
        self._emit(message)
        self._pending[message.msg_id] = _Pending(message, retransmit, max_retries, 1, now + self.retransmit_s)
        return message

    def send_response(self, request: ControlMessage, msg_type: MsgType, fields: dict[str, FieldValue]) -> None:
        if msg_type not in RESPONSE_TYPES:
            raise P3Error("INTERNAL", f"{msg_type.name} is a request, not an answer")
        message = ControlMessage(msg_type, self._allocate_msg_id(), request.msg_id, dict(fields))
        self._responses[request.msg_id] = message
        while len(self._responses) > RESPONSE_CACHE_SIZE:
            self._responses.popitem(last=False)
        self._emit(message)

    def cancel(self, msg_id: int) -> None:
        self._pending.pop(msg_id, None)

    def cancel_all(self) -> None:
        self._pending.clear()

    def events(self) -> list[SendControlPacket]:
        out, self._outbox = self._outbox, []
        return out

    # --- receiving ---------------------------------------------------------------

    def receive_packet(self, packet: bytes, now: float) -> list[ControlEvent]:
        """One decrypted inner packet addressed to this P3 system."""
        try:
            unwrapped = unwrap_packet(packet)
            if unwrapped.src != self.peer_address or unwrapped.dst != self.local_address:
                raise P3Error(
                    "CTL_MALFORMED",
                    f"control packet {unwrapped.src} -> {unwrapped.dst} is not from this session's peer",
                )
            message = decode_message(self._opener.open(unwrapped.sealed))
        except P3Error as error:
            self.rejected += 1
            return [MessageRejected(error)]
        self.messages_received += 1
        if message.reply_to:
            pending = self._pending.pop(message.reply_to, None)
            if pending is None:
                self.duplicates_suppressed += 1  # a late or duplicated answer
                return []
            return [ResponseReceived(pending.message, message)]
        if self._is_duplicate_request(message.msg_id):
            self.duplicates_suppressed += 1
            cached = self._responses.get(message.msg_id)
            if cached is not None:
                self._emit(cached, retransmission=True)
            return []
        return [RequestReceived(message)]

    def _is_duplicate_request(self, msg_id: int) -> bool:
        if msg_id + DUPLICATE_WINDOW <= self._highest_request_seen or msg_id in self._requests_seen:
            return True
        self._requests_seen.add(msg_id)
        if msg_id > self._highest_request_seen:
            self._highest_request_seen = msg_id
            if len(self._requests_seen) > 2 * DUPLICATE_WINDOW:
                floor = msg_id - DUPLICATE_WINDOW
                self._requests_seen = {seen for seen in self._requests_seen if seen > floor}
        return False

    # --- time ---------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = [p.next_send_s for p in self._pending.values()]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[ControlEvent]:
        events: list[ControlEvent] = []
        for msg_id, pending in list(self._pending.items()):
            if pending.next_send_s > now:
                continue
            if not pending.retransmit or pending.attempts > pending.max_retries:
                del self._pending[msg_id]
                events.append(RequestFailed(pending.message, pending.attempts))
                continue
            pending.attempts += 1
            pending.next_send_s = now + self.retransmit_s
            self._emit(pending.message, retransmission=True)
        return events
