"""Control-channel messages: TLV encoding, control-key sealing, IP+TCP wrapping.

Spec §2.1.3–2.1.4: a control message is sealed with the *control* key, given
predefined IP and TCP headers addressed to the peer's P3 address, and then
handed to the dataplane as an ordinary inner packet (which seals it again
with the data key). The reverse path strips the headers, opens and parses.
The layout is in docs/protocol.md; in short::

    message  = version(1)=1 | type(1) | reserved(2)=0 | msg_id(4) | reply_to(4)
               | body_len(2) | TLV* (tag(2) | length(2) | value)
    sealed   = version(1)=1 | reserved(1)=0 | key_epoch(2) | counter(8)
               | AES-256-GCM(message) | tag(16)
               (nonce = AAD = the 12 header octets)
    packet   = IPv4 or IPv6 header | TCP header | sealed

Everything here is a pure function or a small stateful sealer/opener; the
protocol machines in p3hw/protocol/ decide what to send. Parsing is strict:
bad bytes raise P3Error P3-E400 (CTL_MALFORMED), a bad control-key tag
P3-E401 (CTL_AUTH_FAILED), a replayed counter P3-E401 as well — never any
other exception.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p3hw.crypto.keys import CONTROL_KEY_BYTES
from p3hw.reasons import P3Error
from p3hw.wire.checksum import internet_checksum

CONTROL_VERSION = 1
#: Largest plaintext control message; a KEY_ARRAY is chunked to stay below it
#: so that every control packet fits one inner packet on a 1500-octet path.
MAX_MESSAGE_BYTES = 1200
#: Anti-replay window of the control opener, per control key (in messages).
CONTROL_REPLAY_WINDOW = 1024
#: The predefined TCP ports of control packets (spec §2.1.4: static headers;
#: only the addresses are looked at by the receiver).
CONTROL_TCP_PORT = 5653

_MESSAGE_HEADER = struct.Struct("!BBHIIH")
_SEALED_HEADER = struct.Struct("!BBHQ")
_TLV_HEADER = struct.Struct("!HH")
_GCM_TAG_BYTES = 16
_IP_PROTO_TCP = 6


class MsgType(IntEnum):
    HELLO = 1
    REKEY = 2
    REKEY_STATUS = 3
    SWITCH = 4
    SWITCH_ACK = 5
    HEARTBEAT = 6
    HEARTBEAT_ACK = 7
    KEY_ARRAY = 8
    KEY_ARRAY_FLUSH = 9
    CONFIG = 10
    SHUTDOWN = 11
    ERROR = 12
    #: A plain acknowledgement for requests that have no answer of their own
    #: (HELLO, KEY_ARRAY, KEY_ARRAY_FLUSH, CONFIG, SHUTDOWN).
    ACK = 13


#: Messages that answer a request (reply_to != 0); all others are requests.
RESPONSE_TYPES = frozenset({MsgType.REKEY_STATUS, MsgType.SWITCH_ACK, MsgType.HEARTBEAT_ACK, MsgType.ACK, MsgType.ERROR})

# Field name -> (TLV tag, kind). Kinds: u8/u16/u32/u64 (exact length, big
# endian), bytes (any length), text (UTF-8).
FIELDS: dict[str, tuple[int, str]] = {
    "rekey_id": (1, "u32"),
    "status": (2, "u16"),
    "data_material": (3, "bytes"),
    "data_array_generation": (4, "u32"),
    "data_index": (5, "u32"),
    "data_nonce": (6, "bytes"),
    "control_material": (7, "bytes"),
    "control_array_generation": (8, "u32"),
    "control_index": (9, "u32"),
    "control_nonce": (10, "bytes"),
    "new_inbound_id": (11, "u32"),
    "pfs_share": (12, "bytes"),
    "first_seq": (13, "u64"),
    "echo": (14, "u64"),
    "array_kind": (15, "u8"),
    "generation": (16, "u32"),
    "chunk_index": (17, "u16"),
    "chunk_count": (18, "u16"),
    "first_index": (19, "u32"),
    "entries": (20, "bytes"),
    "array_size": (21, "u32"),
    "settings": (22, "text"),
    "reason": (23, "u16"),
    "detail": (24, "text"),
    "protocol_version": (25, "u8"),
    "role": (26, "u8"),
    "heartbeat_time_ms": (27, "u32"),
    "heartbeat_fail_ms": (28, "u32"),
}
_BY_TAG: dict[int, tuple[str, str]] = {tag: (name, kind) for name, (tag, kind) in FIELDS.items()}
_INT_BYTES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}

# Message type -> (required fields, optional fields).
SCHEMA: dict[MsgType, tuple[frozenset[str], frozenset[str]]] = {
    MsgType.HELLO: (frozenset({"protocol_version", "role"}), frozenset()),
    MsgType.REKEY: (
        frozenset({"rekey_id", "new_inbound_id"}),
        frozenset({
            "data_material", "data_array_generation", "data_index", "data_nonce",
            "control_material", "control_array_generation", "control_index", "control_nonce",
            "pfs_share",
        }),
    ),
    MsgType.REKEY_STATUS: (frozenset({"rekey_id", "status"}), frozenset({"new_inbound_id", "pfs_share"})),
    MsgType.SWITCH: (frozenset({"rekey_id", "first_seq"}), frozenset()),
    MsgType.SWITCH_ACK: (frozenset({"rekey_id", "first_seq"}), frozenset()),
    MsgType.HEARTBEAT: (frozenset({"echo"}), frozenset()),
    MsgType.HEARTBEAT_ACK: (frozenset({"echo"}), frozenset()),
    MsgType.KEY_ARRAY: (
        frozenset({"array_kind", "generation", "array_size", "chunk_index", "chunk_count", "first_index", "entries"}),
        frozenset(),
    ),
    MsgType.KEY_ARRAY_FLUSH: (frozenset({"array_kind", "generation"}), frozenset()),
    # The primary's session settings (heartbeat timers, `SessionSettings`) and/or free text.
    MsgType.CONFIG: (frozenset(), frozenset({"settings", "heartbeat_time_ms", "heartbeat_fail_ms"})),
    MsgType.SHUTDOWN: (frozenset({"reason"}), frozenset({"detail"})),
    MsgType.ERROR: (frozenset({"reason"}), frozenset({"detail"})),
    MsgType.ACK: (frozenset(), frozenset()),
}

FieldValue = int | bytes | str


@dataclass(frozen=True)
class ControlMessage:
    """One control message. *msg_id* is the sender's request id (per direction,
    never 0); a response carries the request's id in *reply_to*."""

    msg_type: MsgType
    msg_id: int
    reply_to: int = 0
    fields: dict[str, FieldValue] = field(default_factory=dict)

    def __getitem__(self, name: str) -> FieldValue:
        return self.fields[name]

    def get(self, name: str) -> FieldValue | None:
        return self.fields.get(name)

    def int_field(self, name: str) -> int:
        value = self.fields[name]
        assert isinstance(value, int)
        return value

    def bytes_field(self, name: str) -> bytes | None:
        value = self.fields.get(name)
        assert value is None or isinstance(value, bytes)
        return value


def _malformed(detail: str) -> P3Error:
    return P3Error("CTL_MALFORMED", detail)


#: Longest heartbeat_time / heartbeat_fail a CONFIG may carry (one day).
MAX_HEARTBEAT_MS = 86_400_000


@dataclass(frozen=True)
class SessionSettings:
    """The settings a primary gives the secondary in CONFIG (Appendix A: primary-side keywords).

    The heartbeat timers travel in whole milliseconds (`heartbeat_time_ms`,
    `heartbeat_fail_ms`, both required together)."""

    heartbeat_time_s: float
    heartbeat_fail_s: float

    def to_fields(self) -> dict[str, FieldValue]:
        fields: dict[str, FieldValue] = {"heartbeat_time_ms": round(self.heartbeat_time_s * 1000),
                                         "heartbeat_fail_ms": round(self.heartbeat_fail_s * 1000)}
        for name, value in fields.items():
            if not 0 < int(value) <= MAX_HEARTBEAT_MS:  # type: ignore[call-overload]
                raise _malformed(f"{name}={value} is outside 1..{MAX_HEARTBEAT_MS}")
        return fields

    @classmethod
    def from_message(cls, msg: ControlMessage) -> SessionSettings | None:
        """The settings a CONFIG carries, None if it carries none; P3-E400 if they are unusable."""
        names = {"heartbeat_time_ms", "heartbeat_fail_ms"} & set(msg.fields)
        if not names:
            return None
        if len(names) != 2:
            raise _malformed(f"CONFIG carries {sorted(names)[0]} without the other heartbeat timer")
        time_ms, fail_ms = msg.int_field("heartbeat_time_ms"), msg.int_field("heartbeat_fail_ms")
        for name, value in (("heartbeat_time_ms", time_ms), ("heartbeat_fail_ms", fail_ms)):
            if not 0 < value <= MAX_HEARTBEAT_MS:
                raise _malformed(f"CONFIG {name}={value} is outside 1..{MAX_HEARTBEAT_MS}")
        return cls(time_ms / 1000, fail_ms / 1000)


def _check_message_shape(msg: ControlMessage) -> None:
    required, optional = SCHEMA[msg.msg_type]
    names = set(msg.fields)
    if missing := required - names:
        raise _malformed(f"{msg.msg_type.name} lacks {sorted(missing)}")
    if extra := names - required - optional:
        raise _malformed(f"{msg.msg_type.name} does not carry {sorted(extra)}")
    is_response = msg.msg_type in RESPONSE_TYPES
    if is_response != (msg.reply_to != 0):
        raise _malformed(f"{msg.msg_type.name} reply_to={msg.reply_to} (responses, and only they, name a request)")
    if not 0 < msg.msg_id <= 0xFFFFFFFF or not 0 <= msg.reply_to <= 0xFFFFFFFF:
        raise _malformed("message id out of range")


def encode_message(msg: ControlMessage) -> bytes:
    """Serialise a message (fields in tag order, so equal messages give equal bytes)."""
    _check_message_shape(msg)
    body = bytearray()
    for name in sorted(msg.fields, key=lambda n: FIELDS[n][0]):
        tag, kind = FIELDS[name]
        value = msg.fields[name]
        if kind in _INT_BYTES:
            if not isinstance(value, int) or isinstance(value, bool):
                raise _malformed(f"field {name} must be an integer")
            size = _INT_BYTES[kind]
            if not 0 <= value < 1 << (8 * size):
                raise _malformed(f"field {name}={value} does not fit {kind}")
            raw = value.to_bytes(size, "big")
        elif kind == "text":
            if not isinstance(value, str):
                raise _malformed(f"field {name} must be text")
            raw = value.encode("utf-8")
        else:
            if not isinstance(value, bytes):
                raise _malformed(f"field {name} must be bytes")
            raw = value
        if len(raw) > 0xFFFF:
            raise _malformed(f"field {name} is too long")
        body += _TLV_HEADER.pack(tag, len(raw)) + raw
    out = _MESSAGE_HEADER.pack(CONTROL_VERSION, msg.msg_type, 0, msg.msg_id, msg.reply_to, len(body)) + bytes(body)
    if len(out) > MAX_MESSAGE_BYTES:
        raise _malformed(f"{msg.msg_type.name} is {len(out)} octets, more than {MAX_MESSAGE_BYTES}")
    return out


def decode_message(data: bytes) -> ControlMessage:
    """Parse one message; anything not exactly a version-1 message is P3-E400."""
    if len(data) < _MESSAGE_HEADER.size:
        raise _malformed(f"control message of {len(data)} octets is shorter than its header")
    if len(data) > MAX_MESSAGE_BYTES:
        raise _malformed(f"control message of {len(data)} octets is too long")
    version, type_code, reserved, msg_id, reply_to, body_len = _MESSAGE_HEADER.unpack_from(data)
    if version != CONTROL_VERSION:
        raise _malformed(f"control message version {version} (this side speaks {CONTROL_VERSION})")
    if reserved != 0:
        raise _malformed("reserved header bits are set")
    try:
        msg_type = MsgType(type_code)
    except ValueError:
        raise _malformed(f"unknown control message type {type_code}") from None
    if _MESSAGE_HEADER.size + body_len != len(data):
        raise _malformed(f"body length {body_len} disagrees with the message size {len(data)}")
    fields: dict[str, FieldValue] = {}
    at = _MESSAGE_HEADER.size
    while at < len(data):
        if len(data) - at < _TLV_HEADER.size:
            raise _malformed("truncated TLV header")
        tag, length = _TLV_HEADER.unpack_from(data, at)
        at += _TLV_HEADER.size
        if length > len(data) - at:
            raise _malformed(f"TLV {tag} runs past the end of the message")
        raw = data[at:at + length]
        at += length
        if tag not in _BY_TAG:
            # Version 1 has no optional extensions: an unknown tag is a peer
            # speaking something else, never silently skipped.
            raise _malformed(f"unknown TLV tag {tag}")
        name, kind = _BY_TAG[tag]
        if name in fields:
            raise _malformed(f"TLV {name} appears twice")
        if kind in _INT_BYTES:
            if length != _INT_BYTES[kind]:
                raise _malformed(f"TLV {name} has length {length}, {kind} needs {_INT_BYTES[kind]}")
            fields[name] = int.from_bytes(raw, "big")
        elif kind == "text":
            try:
                fields[name] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _malformed(f"TLV {name} is not UTF-8") from None
        else:
            fields[name] = bytes(raw)
    if msg_id == 0:
        raise _malformed("message id 0 is not allowed")
    msg = ControlMessage(msg_type, msg_id, reply_to, fields)
    _check_message_shape(msg)
    return msg


# --- sealing with the control key -------------------------------------------------


class ControlSealer:
    """Seals outgoing control messages with one direction's control key.

    The 64-bit counter is the explicit nonce: it starts at 1 for every key and
    never repeats under that key, so AES-GCM nonces are never reused.
    """

    def __init__(self, key: bytes, key_epoch: int) -> None:
        if len(key) != CONTROL_KEY_BYTES:
            raise P3Error("DP_BAD_CIPHER", f"control key must be {CONTROL_KEY_BYTES} octets")
        if not 0 <= key_epoch <= 0xFFFF:
            raise P3Error("DP_BAD_ARGUMENT", f"control key epoch {key_epoch} out of range")
        self.key_epoch = key_epoch
        self._aead = AESGCM(key)
        self._counter = 0

    def seal(self, message: bytes) -> bytes:
        self._counter += 1
        header = _SEALED_HEADER.pack(CONTROL_VERSION, 0, self.key_epoch, self._counter)
        return header + self._aead.encrypt(header, message, header)


class _ReplayWindow:
    """RFC 4303 §3.4.3-style sliding window over the control counters of one key."""

    def __init__(self, width: int = CONTROL_REPLAY_WINDOW) -> None:
        self.width = width
        self.highest = 0
        self.bitmap = 0  # bit i set: counter (highest - i) seen

    def check(self, counter: int) -> None:
        if counter == 0:
            raise P3Error("CTL_AUTH_FAILED", "control counter 0 is never sealed")
        if counter > self.highest:
            return
        offset = self.highest - counter
        if offset >= self.width:
            raise P3Error("CTL_AUTH_FAILED", f"control counter {counter} is left of the replay window")
        if self.bitmap >> offset & 1:
            raise P3Error("CTL_AUTH_FAILED", f"control counter {counter} was already received (replay)")

    def accept(self, counter: int) -> None:
        if counter > self.highest:
            shift = counter - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.width) - 1)
            self.highest = counter
        else:
            self.bitmap |= 1 << (self.highest - counter)


class ControlOpener:
    """Opens incoming control messages; holds every control key still in grace.

    During a rekey the peer switches to the new control key while messages
    sealed with the old one may still be in flight, so the old key stays
    until the rekey machine removes it (switch point + grace period).
    """

    def __init__(self) -> None:
        self._keys: dict[int, tuple[AESGCM, _ReplayWindow]] = {}

    def add_key(self, key_epoch: int, key: bytes) -> None:
        if len(key) != CONTROL_KEY_BYTES:
            raise P3Error("DP_BAD_CIPHER", f"control key must be {CONTROL_KEY_BYTES} octets")
        self._keys[key_epoch & 0xFFFF] = (AESGCM(key), _ReplayWindow())

    def remove_key(self, key_epoch: int) -> None:
        self._keys.pop(key_epoch & 0xFFFF, None)

    @property
    def epochs(self) -> frozenset[int]:
        return frozenset(self._keys)

    def open(self, sealed: bytes) -> bytes:
        if len(sealed) < _SEALED_HEADER.size + _GCM_TAG_BYTES:
            raise _malformed(f"sealed control message of {len(sealed)} octets is too short")
        version, reserved, key_epoch, counter = _SEALED_HEADER.unpack_from(sealed)
        if version != CONTROL_VERSION or reserved != 0:
            raise _malformed(f"sealed control message version {version}/{reserved} is not {CONTROL_VERSION}/0")
        entry = self._keys.get(key_epoch)
        if entry is None:
            raise P3Error("CTL_AUTH_FAILED", f"no control key of epoch {key_epoch} is installed")
        aead, window = entry
        window.check(counter)
        header = sealed[:_SEALED_HEADER.size]
        try:
            message = aead.decrypt(header, sealed[_SEALED_HEADER.size:], header)
        except InvalidTag:
            raise P3Error("CTL_AUTH_FAILED", "control message failed its control-key authentication") from None
        window.accept(counter)
        return message


# --- predefined IP + TCP headers (spec §2.1.3) -------------------------------------


def _tcp_header(src: bytes, dst: bytes, payload: bytes) -> bytes:
    # Static fields: ports 5653, seq 1, ack 1, data offset 5, PSH|ACK, window
    # 65535. The checksum is real so the packet is an ordinary TCP segment.
    header = struct.pack("!HHIIBBHHH", CONTROL_TCP_PORT, CONTROL_TCP_PORT, 1, 1, 5 << 4, 0x18, 0xFFFF, 0, 0)
    length = len(header) + len(payload)
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, _IP_PROTO_TCP, length)
    else:
        pseudo = src + dst + struct.pack("!I3xB", length, _IP_PROTO_TCP)
    checksum = internet_checksum(pseudo + header + payload)
    return header[:16] + struct.pack("!H", checksum) + header[18:]


def wrap_packet(sealed: bytes, src: str, dst: str) -> bytes:
    """The full inner packet: IP header (src -> dst P3 addresses) | TCP header | sealed."""
    src_addr = ipaddress.ip_address(src)
    dst_addr = ipaddress.ip_address(dst)
    if src_addr.version != dst_addr.version:
        raise P3Error("DP_BAD_ARGUMENT", f"control packet from {src} to {dst} mixes IP versions")
    tcp = _tcp_header(src_addr.packed, dst_addr.packed, sealed)
    if src_addr.version == 4:
        total = 20 + len(tcp) + len(sealed)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, _IP_PROTO_TCP, 0, src_addr.packed, dst_addr.packed)
        ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp) + len(sealed), _IP_PROTO_TCP, 64, src_addr.packed, dst_addr.packed)
    return ip + tcp + sealed


@dataclass(frozen=True)
class UnwrappedPacket:
    src: str
    dst: str
    sealed: bytes


def unwrap_packet(packet: bytes) -> UnwrappedPacket:
    """Strip the predefined headers. Spec §2.1.4: only the address fields are
    processed; the rest is checked only for consistent lengths."""
    if len(packet) < 1:
        raise _malformed("empty control packet")
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20:
            raise _malformed("control packet shorter than an IPv4 header")
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        if ihl < 20 or total != len(packet) or total < ihl or packet[9] != _IP_PROTO_TCP:
            raise _malformed("control packet IPv4 header is inconsistent")
        src, dst = packet[12:16], packet[16:20]
        at = ihl
    elif version == 6:
        if len(packet) < 40:
            raise _malformed("control packet shorter than an IPv6 header")
        payload_len = struct.unpack_from("!H", packet, 4)[0]
        if 40 + payload_len != len(packet) or packet[6] != _IP_PROTO_TCP:
            raise _malformed("control packet IPv6 header is inconsistent")
        src, dst = packet[8:24], packet[24:40]
        at = 40
    else:
        raise _malformed(f"control packet IP version {version}")
    if len(packet) - at < 20:
        raise _malformed("control packet shorter than its TCP header")
    data_offset = (packet[at + 12] >> 4) * 4
    if data_offset < 20 or data_offset > len(packet) - at:
        raise _malformed("control packet TCP data offset is inconsistent")
    return UnwrappedPacket(
        src=str(ipaddress.ip_address(bytes(src))),
        dst=str(ipaddress.ip_address(bytes(dst))),
        sealed=bytes(packet[at + data_offset:]),
    )
