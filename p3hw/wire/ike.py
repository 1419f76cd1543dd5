"""IKEv2 messages (RFC 7296 §3) as pure functions: encode and strict decode.

p3hw's initial exchange is standard IKEv2 so that a stock dissector reads it
(DESIGN.md §4.1). This module knows the header, the generic payload chain
and the payloads the exchange uses: SA (proposals, transforms, attributes),
KE, Nonce, IDi/IDr, CERT, CERTREQ, AUTH, Notify, Delete, Vendor ID, TSi/TSr
and SK, the Encrypted payload, with AES-GCM-16 and an 8-octet IV
(RFC 5282).

The bytes here are the IKE message itself. On UDP port 5653 the runtime
puts the four-zero-octet non-ESP marker (RFC 3948, ``NON_ESP_MARKER``) in
front; this codec neither writes nor expects it.

Decoding is strict: a length that disagrees with the data, a truncated
structure, trailing octets, or an unknown payload marked critical raise
``P3Error`` (P3-E300 / P3-E301) and nothing else. Two of them are subclasses
that carry what the answer needs (RFC 7296 §2.5): ``UnsupportedCriticalPayload``
names the payload type, ``UnsupportedMajorVersion`` the received version.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p3hw.reasons import P3Error

# --- RFC 7296 §3.1: the header ------------------------------------------------

IKE_HEADER_BYTES = 28
IKE_VERSION = 0x20  # major 2, minor 0
#: Messages larger than a UDP datagram can carry are malformed by definition.
MAX_MESSAGE_BYTES = 65535 - 8

# Exchange types
IKE_SA_INIT = 34
IKE_AUTH = 35
CREATE_CHILD_SA = 36
INFORMATIONAL = 37

# Header flags
FLAG_INITIATOR = 0x08
FLAG_VERSION = 0x10
FLAG_RESPONSE = 0x20

# --- RFC 7296 §3.2: payload types --------------------------------------------

PT_NONE = 0
PT_SA = 33
PT_KE = 34
PT_IDI = 35
PT_IDR = 36
PT_CERT = 37
PT_CERTREQ = 38
PT_AUTH = 39
PT_NONCE = 40
PT_NOTIFY = 41
PT_DELETE = 42
PT_VENDOR = 43
PT_TSI = 44
PT_TSR = 45
PT_SK = 46

# --- RFC 7296 §3.3: proposals and transforms ---------------------------------

PROTO_IKE = 1
PROTO_AH = 2
PROTO_ESP = 3

TRANSFORM_ENCR = 1
TRANSFORM_PRF = 2
TRANSFORM_INTEG = 3
TRANSFORM_DH = 4
TRANSFORM_ESN = 5
#: RFC 7296 §3.3.3: the transform types an IKE / ESP proposal may hold. A
#: proposal with any other type (e.g. 6..12, RFC 9370's additional key
#: exchanges) is unacceptable as a whole (§3.3.6).
IKE_TRANSFORM_TYPES = frozenset({TRANSFORM_ENCR, TRANSFORM_PRF, TRANSFORM_INTEG, TRANSFORM_DH})
ESP_TRANSFORM_TYPES = frozenset({TRANSFORM_ENCR, TRANSFORM_INTEG, TRANSFORM_DH, TRANSFORM_ESN})

ENCR_AES_CTR = 13  # RFC 5930 / RFC 3686
ENCR_AES_CCM_16 = 16  # RFC 4309
ENCR_AES_GCM_16 = 20  # RFC 5282 / RFC 4106
AUTH_HMAC_SHA2_256_128 = 12  # RFC 4868
DH_ECP_256 = 19  # RFC 5903
DH_ECP_384 = 20  # RFC 5903
DH_CURVE25519 = 31  # RFC 8031
ESN_NONE = 0
ESN_YES = 1

ATTR_KEY_LENGTH = 14
_ATTR_FORMAT_TV = 0x8000

# --- RFC 7296 §3.5, §3.8, §3.10, §3.13 ----------------------------------------

ID_IPV4_ADDR = 1
ID_FQDN = 2
ID_RFC822_ADDR = 3
ID_IPV6_ADDR = 5
ID_KEY_ID = 11

AUTH_SHARED_KEY_MIC = 2
AUTH_DIGITAL_SIGNATURE = 14  # RFC 7427

CERT_X509_SIGNATURE = 4

TS_IPV4_ADDR_RANGE = 7
TS_IPV6_ADDR_RANGE = 8

# Notify message types (RFC 7296 §3.10.1): errors below 16384.
N_UNSUPPORTED_CRITICAL_PAYLOAD = 1
N_INVALID_IKE_SPI = 4
N_INVALID_MAJOR_VERSION = 5
N_INVALID_SYNTAX = 7
N_INVALID_MESSAGE_ID = 9
N_INVALID_SPI = 11
N_NO_PROPOSAL_CHOSEN = 14
N_INVALID_KE_PAYLOAD = 17
N_AUTHENTICATION_FAILED = 24
N_SINGLE_PAIR_REQUIRED = 34
N_NO_ADDITIONAL_SAS = 35
N_INTERNAL_ADDRESS_FAILURE = 36
N_FAILED_CP_REQUIRED = 37
N_TS_UNACCEPTABLE = 38
N_INVALID_SELECTORS = 39
N_TEMPORARY_FAILURE = 43
N_CHILD_SA_NOT_FOUND = 44
N_INITIAL_CONTACT = 16384
N_NAT_DETECTION_SOURCE_IP = 16388
N_NAT_DETECTION_DESTINATION_IP = 16389
N_COOKIE = 16390
N_USE_TRANSPORT_MODE = 16391
N_SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427

#: RFC 5282 §3: the SK payload with AES-GCM carries an 8-octet IV and a 16-octet ICV.
SK_IV_BYTES = 8
SK_ICV_BYTES = 16
SK_SALT_BYTES = 4


def nat_detection_hash(spi_i: bytes, spi_r: bytes, address: str, port: int) -> bytes:
    """RFC 7296 §2.23: SHA-1 of the header's SPIs, an IP address and a port (NAT_DETECTION_*_IP data)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(spi_i + spi_r + ipaddress.ip_address(address).packed + port.to_bytes(2, "big"))
    return digest.digest()


def _malformed(detail: str) -> P3Error:
    return P3Error("IKE_MALFORMED", detail)


class UnsupportedCriticalPayload(P3Error):
    """An unknown payload type marked critical (P3-E301): a request is answered
    with UNSUPPORTED_CRITICAL_PAYLOAD carrying *payload_type* (RFC 7296 §2.5, §3.10.1)."""

    def __init__(self, payload_type: int, detail: str) -> None:
        super().__init__("IKE_UNSUPPORTED_CRITICAL", detail)
        self.payload_type = payload_type


class UnsupportedMajorVersion(P3Error):
    """A header with a major version above 2 (P3-E300): a request is answered
    with INVALID_MAJOR_VERSION (RFC 7296 §2.5)."""

    def __init__(self, major_version: int) -> None:
        super().__init__("IKE_MALFORMED", f"IKE major version {major_version} (INVALID_MAJOR_VERSION)")
        self.major_version = major_version


class _Reader:
    """Bounds-checked reads: running off the end is a P3-E300, never an IndexError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.at

    def take(self, count: int) -> bytes:
        if count < 0 or self.at + count > len(self.data):
            raise _malformed(f"{self.what} truncated: needs {count} octets at offset {self.at}, has {self.remaining}")
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def rest(self) -> bytes:
        return self.take(self.remaining)


# --- Payload bodies -------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """RFC 7296 §3.3.2; *key_length* is the Key Length attribute in bits."""

    transform_type: int
    transform_id: int
    key_length: int | None = None
    # Attributes other than Key Length, as (type, value): RFC 7296 §3.3.6 says
    # a transform with an unknown attribute is not acceptable, not malformed.
    other_attributes: tuple[tuple[int, bytes], ...] = ()

    def encode(self, last: bool) -> bytes:
        attributes = b""
        if self.key_length is not None:
            attributes += struct.pack("!HH", _ATTR_FORMAT_TV | ATTR_KEY_LENGTH, self.key_length)
        for attribute_type, value in self.other_attributes:
            attributes += struct.pack("!HH", attribute_type & 0x7FFF, len(value)) + value
        length = 8 + len(attributes)
        return struct.pack("!BBHBBH", 0 if last else 3, 0, length, self.transform_type, 0, self.transform_id) + attributes

    @classmethod
    def decode(cls, data: bytes) -> Transform:
        reader = _Reader(data, "transform")
        transform_type = reader.u8()
        reader.u8()  # reserved
        transform_id = reader.u16()
        key_length: int | None = None
        others: list[tuple[int, bytes]] = []
        while reader.remaining:
            kind = reader.u16()
            attribute_type = kind & 0x7FFF
            if kind & _ATTR_FORMAT_TV:
                value = reader.take(2)
            else:
                value = reader.take(reader.u16())
            if attribute_type == ATTR_KEY_LENGTH and kind & _ATTR_FORMAT_TV and key_length is None:
                key_length = int.from_bytes(value, "big")
            else:
                others.append((attribute_type, value))
        return cls(transform_type, transform_id, key_length, tuple(others))


@dataclass(frozen=True)
class Proposal:
    """RFC 7296 §3.3.1."""

    number: int
    protocol_id: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self, last: bool) -> bytes:
        body = b"".join(t.encode(i == len(self.transforms) - 1) for i, t in enumerate(self.transforms))
        length = 8 + len(self.spi) + len(body)
        header = struct.pack("!BBHBBBB", 0 if last else 2, 0, length, self.number, self.protocol_id,
                             len(self.spi), len(self.transforms))
        return header + self.spi + body

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        reader = _Reader(data, "proposal")
        number = reader.u8()
        protocol_id = reader.u8()
        spi_size = reader.u8()
        transform_count = reader.u8()
        spi = reader.take(spi_size)
        transforms: list[Transform] = []
        last_seen = False
        while reader.remaining:
            if last_seen:
                raise _malformed("transform after the last transform of a proposal")
            last_flag = reader.u8()
            reader.u8()
            length = reader.u16()
            if last_flag not in (0, 3) or length < 8:
                raise _malformed(f"transform header (last={last_flag}, length={length}) invalid")
            transforms.append(Transform.decode(reader.take(length - 4)))
            last_seen = last_flag == 0
        if not last_seen or len(transforms) != transform_count:
            raise _malformed(f"proposal says {transform_count} transforms, holds {len(transforms)}")
        return cls(number, protocol_id, spi, tuple(transforms))

    def of_type(self, transform_type: int) -> tuple[Transform, ...]:
        return tuple(t for t in self.transforms if t.transform_type == transform_type)


@dataclass(frozen=True)
class Identity:
    """The identification in IDi/IDr (RFC 7296 §3.5): type and data."""

    id_type: int
    data: bytes

    @classmethod
    def ip(cls, address: str) -> Identity:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            raise P3Error("CONFIG_BAD_ADDRESS", f"{address!r} is not an IP address") from None
        return cls(ID_IPV4_ADDR if parsed.version == 4 else ID_IPV6_ADDR, parsed.packed)

    @classmethod
    def fqdn(cls, name: str) -> Identity:
        if not name or not name.isascii():
            raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", f"{name!r} is not an ASCII host name")
        return cls(ID_FQDN, name.encode("ascii"))

    @classmethod
    def key_id(cls, value: bytes) -> Identity:
        return cls(ID_KEY_ID, value)

    def __str__(self) -> str:
        if self.id_type in (ID_IPV4_ADDR, ID_IPV6_ADDR) and len(self.data) in (4, 16):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (ID_FQDN, ID_RFC822_ADDR):
            return self.data.decode("ascii", "replace")
        return f"id-type-{self.id_type}:{self.data.hex()}"


@dataclass(frozen=True)
class TrafficSelector:
    """RFC 7296 §3.13.1: an address range, protocol and port range."""

    start: ipaddress.IPv4Address | ipaddress.IPv6Address
    end: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip_protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> int:
        return TS_IPV4_ADDR_RANGE if self.start.version == 4 else TS_IPV6_ADDR_RANGE

    @classmethod
    def any_ipv4(cls) -> TrafficSelector:
        return cls(ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv4Address("255.255.255.255"))

    @classmethod
    def any_ipv6(cls) -> TrafficSelector:
        return cls(ipaddress.IPv6Address("::"), ipaddress.IPv6Address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))

    @classmethod
    def subnet(cls, network: str) -> TrafficSelector:
        net = ipaddress.ip_network(network)
        return cls(net.network_address, net.broadcast_address)

    def encode(self) -> bytes:
        addresses = self.start.packed + self.end.packed
        return struct.pack("!BBHHH", self.ts_type, self.ip_protocol, 8 + len(addresses),
                           self.start_port, self.end_port) + addresses

    def intersect(self, other: TrafficSelector) -> TrafficSelector | None:
        """The narrowest selector both allow (RFC 7296 §2.9 narrowing), or None."""
        if self.ts_type != other.ts_type:
            return None
        if self.ip_protocol and other.ip_protocol and self.ip_protocol != other.ip_protocol:
            return None
        start, end = max(self.start, other.start), min(self.end, other.end)
        start_port, end_port = max(self.start_port, other.start_port), min(self.end_port, other.end_port)
        if start > end or start_port > end_port:
            return None
        return TrafficSelector(start, end, self.ip_protocol or other.ip_protocol, start_port, end_port)


class Payload:
    """A payload: knows its type and how to encode its body."""

    payload_type: ClassVar[int] = PT_NONE

    @property
    def type_code(self) -> int:
        return self.payload_type

    def encode_body(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True)
class SaPayload(Payload):
    payload_type: ClassVar[int] = PT_SA
    proposals: tuple[Proposal, ...]

    def encode_body(self) -> bytes:
        return b"".join(p.encode(i == len(self.proposals) - 1) for i, p in enumerate(self.proposals))

    @classmethod
    def decode(cls, body: bytes) -> SaPayload:
        reader = _Reader(body, "SA payload")
        proposals: list[Proposal] = []
        last_seen = False
        while reader.remaining:
            if last_seen:
                raise _malformed("proposal after the last proposal")
            last_flag = reader.u8()
            reader.u8()
            length = reader.u16()
            if last_flag not in (0, 2) or length < 8:
                raise _malformed(f"proposal header (last={last_flag}, length={length}) invalid")
            proposal = Proposal.decode(reader.take(length - 4))
            # RFC 7296 §3.3.1: an offer is numbered from 1, each the same or one more; an answer holds
            # one proposal with the number of the one accepted, which may be any.
            if not proposals and proposal.number == 0 or proposals and proposal.number not in (
                    proposals[-1].number, proposals[-1].number + 1):
                raise _malformed(f"proposal number {proposal.number} out of sequence")
            proposals.append(proposal)
            last_seen = last_flag == 0
        if not proposals or not last_seen:
            raise _malformed("SA payload without a complete proposal list")
        return cls(tuple(proposals))


@dataclass(frozen=True)
class KePayload(Payload):
    payload_type: ClassVar[int] = PT_KE
    dh_group: int
    key_data: bytes

    def encode_body(self) -> bytes:
        return struct.pack("!HH", self.dh_group, 0) + self.key_data

    @classmethod
    def decode(cls, body: bytes) -> KePayload:
        reader = _Reader(body, "KE payload")
        group = reader.u16()
        reader.u16()
        data = reader.rest()
        if not data:
            raise _malformed("KE payload without key exchange data")
        return cls(group, data)


@dataclass(frozen=True)
class NoncePayload(Payload):
    payload_type: ClassVar[int] = PT_NONCE
    nonce: bytes

    def encode_body(self) -> bytes:
        return self.nonce

    @classmethod
    def decode(cls, body: bytes) -> NoncePayload:
        # RFC 7296 §3.9: between 16 and 256 octets.
        if not 16 <= len(body) <= 256:
            raise _malformed(f"nonce of {len(body)} octets (16..256 allowed)")
        return cls(body)


@dataclass(frozen=True)
class IdPayload(Payload):
    """IDi (responder=False) or IDr (responder=True)."""

    identity: Identity
    responder: bool = False

    @property
    def type_code(self) -> int:
        return PT_IDR if self.responder else PT_IDI

    def encode_body(self) -> bytes:
        return bytes([self.identity.id_type, 0, 0, 0]) + self.identity.data

    @classmethod
    def decode(cls, body: bytes, responder: bool) -> IdPayload:
        reader = _Reader(body, "ID payload")
        id_type = reader.u8()
        reader.take(3)
        data = reader.rest()
        if not data:
            raise _malformed("ID payload without identification data")
        if id_type == ID_IPV4_ADDR and len(data) != 4 or id_type == ID_IPV6_ADDR and len(data) != 16:
            raise _malformed(f"ID type {id_type} with {len(data)} octets of address")
        return cls(Identity(id_type, data), responder)


@dataclass(frozen=True)
class AuthPayload(Payload):
    payload_type: ClassVar[int] = PT_AUTH
    method: int
    auth_data: bytes

    def encode_body(self) -> bytes:
        return bytes([self.method, 0, 0, 0]) + self.auth_data

    @classmethod
    def decode(cls, body: bytes) -> AuthPayload:
        reader = _Reader(body, "AUTH payload")
        method = reader.u8()
        reader.take(3)
        data = reader.rest()
        if not data:
            raise _malformed("AUTH payload without authentication data")
        return cls(method, data)


@dataclass(frozen=True)
class CertPayload(Payload):
    payload_type: ClassVar[int] = PT_CERT
    encoding: int
    cert_data: bytes

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.cert_data

    @classmethod
    def decode(cls, body: bytes) -> CertPayload:
        reader = _Reader(body, "CERT payload")
        encoding = reader.u8()
        return cls(encoding, reader.rest())


@dataclass(frozen=True)
class CertReqPayload(Payload):
    payload_type: ClassVar[int] = PT_CERTREQ
    encoding: int
    authorities: bytes

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.authorities

    @classmethod
    def decode(cls, body: bytes) -> CertReqPayload:
        reader = _Reader(body, "CERTREQ payload")
        encoding = reader.u8()
        return cls(encoding, reader.rest())


@dataclass(frozen=True)
class NotifyPayload(Payload):
    payload_type: ClassVar[int] = PT_NOTIFY
    notify_type: int
    notification_data: bytes = b""
    protocol_id: int = 0
    spi: bytes = b""

    @property
    def is_error(self) -> bool:
        return self.notify_type < 16384

    def encode_body(self) -> bytes:
        return struct.pack("!BBH", self.protocol_id, len(self.spi), self.notify_type) + self.spi + self.notification_data

    @classmethod
    def decode(cls, body: bytes) -> NotifyPayload:
        reader = _Reader(body, "Notify payload")
        protocol_id = reader.u8()
        spi_size = reader.u8()
        notify_type = reader.u16()
        spi = reader.take(spi_size)
        return cls(notify_type, reader.rest(), protocol_id, spi)


@dataclass(frozen=True)
class DeletePayload(Payload):
    payload_type: ClassVar[int] = PT_DELETE
    protocol_id: int
    spis: tuple[bytes, ...] = ()

    def encode_body(self) -> bytes:
        spi_size = len(self.spis[0]) if self.spis else 0
        return struct.pack("!BBH", self.protocol_id, spi_size, len(self.spis)) + b"".join(self.spis)

    @classmethod
    def decode(cls, body: bytes) -> DeletePayload:
        reader = _Reader(body, "Delete payload")
        protocol_id = reader.u8()
        spi_size = reader.u8()
        count = reader.u16()
        if reader.remaining != spi_size * count:
            raise _malformed(f"Delete payload: {count} SPIs of {spi_size} octets do not fill {reader.remaining}")
        spis = tuple(reader.take(spi_size) for _ in range(count)) if spi_size else ()
        return cls(protocol_id, spis)


@dataclass(frozen=True)
class VendorPayload(Payload):
    payload_type: ClassVar[int] = PT_VENDOR
    vendor_id: bytes

    def encode_body(self) -> bytes:
        return self.vendor_id

    @classmethod
    def decode(cls, body: bytes) -> VendorPayload:
        return cls(body)


@dataclass(frozen=True)
class TsPayload(Payload):
    """TSi (responder=False) or TSr (responder=True)."""

    selectors: tuple[TrafficSelector, ...]
    responder: bool = False

    @property
    def type_code(self) -> int:
        return PT_TSR if self.responder else PT_TSI

    def encode_body(self) -> bytes:
        return bytes([len(self.selectors), 0, 0, 0]) + b"".join(s.encode() for s in self.selectors)

    @classmethod
    def decode(cls, body: bytes, responder: bool) -> TsPayload:
        reader = _Reader(body, "TS payload")
        count = reader.u8()
        reader.take(3)
        selectors: list[TrafficSelector] = []
        for _ in range(count):
            ts_type = reader.u8()
            ip_protocol = reader.u8()
            length = reader.u16()
            start_port = reader.u16()
            end_port = reader.u16()
            address_bytes = {TS_IPV4_ADDR_RANGE: 4, TS_IPV6_ADDR_RANGE: 16}.get(ts_type)
            if address_bytes is None:
                raise _malformed(f"traffic selector type {ts_type} unsupported")
            if length != 8 + 2 * address_bytes:
                raise _malformed(f"traffic selector of type {ts_type} with length {length}")
            start = ipaddress.ip_address(reader.take(address_bytes))
            end = ipaddress.ip_address(reader.take(address_bytes))
            selectors.append(TrafficSelector(start, end, ip_protocol, start_port, end_port))
        if reader.remaining:
            raise _malformed(f"TS payload has {reader.remaining} octets after its {count} selectors")
        if not selectors:
            raise _malformed("TS payload without selectors")
        return cls(tuple(selectors), responder)


@dataclass(frozen=True)
class UnknownPayload(Payload):
    """A non-critical payload of a type we do not know: kept, then ignored (RFC 7296 §2.5)."""

    unknown_type: int
    body: bytes
    #: only for building test messages: a decoded unknown payload is never critical (it is refused)
    critical: bool = False

    @property
    def type_code(self) -> int:
        return self.unknown_type

    def encode_body(self) -> bytes:
        return self.body


@dataclass(frozen=True)
class EncryptedPayload:
    """The SK payload as received: *aad* is the header through SK's generic header."""

    first_payload_type: int
    iv: bytes
    ciphertext: bytes  # includes the 16-octet ICV
    aad: bytes


_DECODERS = {
    PT_SA: SaPayload.decode,
    PT_KE: KePayload.decode,
    PT_NONCE: NoncePayload.decode,
    PT_IDI: lambda body: IdPayload.decode(body, responder=False),
    PT_IDR: lambda body: IdPayload.decode(body, responder=True),
    PT_AUTH: AuthPayload.decode,
    PT_CERT: CertPayload.decode,
    PT_CERTREQ: CertReqPayload.decode,
    PT_NOTIFY: NotifyPayload.decode,
    PT_DELETE: DeletePayload.decode,
    PT_VENDOR: VendorPayload.decode,
    PT_TSI: lambda body: TsPayload.decode(body, responder=False),
    PT_TSR: lambda body: TsPayload.decode(body, responder=True),
}


# --- Messages ---------------------------------------------------------------


@dataclass
class IkeMessage:
    """One IKE message: header fields and its (plaintext) payloads.

    A decoded message whose payloads are encrypted has them in *encrypted*
    until ``decrypt_message`` opens it.
    """

    spi_i: bytes
    spi_r: bytes
    exchange_type: int
    flags: int
    message_id: int
    payloads: list[Payload] = field(default_factory=list)
    encrypted: EncryptedPayload | None = None

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)

    def first(self, kind: type[Payload]) -> Payload | None:
        for payload in self.payloads:
            if isinstance(payload, kind):
                return payload
        return None

    def all(self, kind: type[Payload]) -> list[Payload]:
        return [p for p in self.payloads if isinstance(p, kind)]

    def notify(self, notify_type: int) -> NotifyPayload | None:
        for payload in self.payloads:
            if isinstance(payload, NotifyPayload) and payload.notify_type == notify_type:
                return payload
        return None

    def error_notifies(self) -> list[NotifyPayload]:
        return [p for p in self.payloads if isinstance(p, NotifyPayload) and p.is_error]


def _header(message: IkeMessage, first_payload: int, total_length: int) -> bytes:
    if len(message.spi_i) != 8 or len(message.spi_r) != 8:
        raise P3Error("INTERNAL", "IKE SPIs are 8 octets")
    return (message.spi_i + message.spi_r
            + struct.pack("!BBBBII", first_payload, IKE_VERSION, message.exchange_type, message.flags,
                          message.message_id, total_length))


def _encode_chain(payloads: list[Payload], trailing_type: int = PT_NONE) -> tuple[int, bytes]:
    """Chain payloads; returns (type of the first, the bytes). *trailing_type* follows the last."""
    out = bytearray()
    for index, payload in enumerate(payloads):
        next_type = payloads[index + 1].type_code if index + 1 < len(payloads) else trailing_type
        body = payload.encode_body()
        flags = 0x80 if isinstance(payload, UnknownPayload) and payload.critical else 0
        out += struct.pack("!BBH", next_type, flags, 4 + len(body)) + body
    first = payloads[0].type_code if payloads else trailing_type
    return first, bytes(out)


def encode_message(message: IkeMessage) -> bytes:
    """A message whose payloads all travel in the clear (IKE_SA_INIT)."""
    first, chain = _encode_chain(message.payloads)
    total = IKE_HEADER_BYTES + len(chain)
    if total > MAX_MESSAGE_BYTES:
        raise P3Error("INTERNAL", f"IKE message of {total} octets does not fit a datagram")
    return _header(message, first, total) + chain


def encode_encrypted_message(message: IkeMessage, key: bytes, salt: bytes, iv: bytes) -> bytes:
    """A message whose payloads all travel inside SK (RFC 5282, AES-GCM-16).

    Nonce = salt (4) ‖ IV (8); AAD = the IKE header through the SK generic
    header (RFC 5282 §5.1). Plaintext = payloads ‖ padding (none) ‖ Pad Length.
    *iv* must never repeat under *key*.
    """
    if len(salt) != SK_SALT_BYTES or len(iv) != SK_IV_BYTES:
        raise P3Error("INTERNAL", "AES-GCM SK needs a 4-octet salt and an 8-octet IV")
    inner_first, inner = _encode_chain(message.payloads)
    plaintext = inner + b"\x00"  # Pad Length 0
    sk_length = 4 + SK_IV_BYTES + len(plaintext) + SK_ICV_BYTES
    total = IKE_HEADER_BYTES + sk_length
    if total > MAX_MESSAGE_BYTES:
        raise P3Error("INTERNAL", f"IKE message of {total} octets does not fit a datagram")
    aad = _header(message, PT_SK, total) + struct.pack("!BBH", inner_first, 0, sk_length)
    ciphertext = AESGCM(key).encrypt(salt + iv, plaintext, aad)
    return aad + iv + ciphertext


def _decode_chain(data: bytes, first_type: int, what: str, allow_sk: bool, base_offset: int = 0,
                  ) -> tuple[list[Payload], tuple[int, int, int] | None, int]:
    """Walk a payload chain. Returns (payloads, SK (next type, body start, body end) or None, end offset)."""
    reader = _Reader(data, what)
    payloads: list[Payload] = []
    next_type = first_type
    while next_type != PT_NONE:
        current = next_type
        if reader.remaining == 0:
            raise _malformed(f"{what}: payload chain names type {current} but the data ends")
        next_type = reader.u8()
        critical = reader.u8() & 0x80
        length = reader.u16()
        if length < 4:
            raise _malformed(f"{what}: payload length {length} below the generic header")
        body_start = reader.at
        body = reader.take(length - 4)
        if current == PT_SK:
            if not allow_sk:
                raise _malformed(f"{what}: SK payload inside an SK payload")
            if reader.remaining:
                raise _malformed(f"{what}: SK payload is not the last payload")
            return payloads, (next_type, base_offset + body_start, base_offset + reader.at), reader.at
        decoder = _DECODERS.get(current)
        if decoder is not None:
            payloads.append(decoder(body))
        elif critical:
            raise UnsupportedCriticalPayload(current, f"{what}: unknown payload type {current} marked critical")
        else:
            payloads.append(UnknownPayload(current, body))
    return payloads, None, reader.at


def decode_header(data: bytes) -> IkeMessage | None:
    """The header fields of a datagram whose payloads may not decode, or None if it has no header.

    For answering a request that ``decode_message`` refused (RFC 7296 §2.5).
    """
    if len(data) < IKE_HEADER_BYTES:
        return None
    _, _, exchange_type, flags, message_id, _ = struct.unpack("!BBBBII", data[16:28])
    return IkeMessage(bytes(data[0:8]), bytes(data[8:16]), exchange_type, flags, message_id)


def invalid_major_version_reply(request: IkeMessage) -> bytes:
    """RFC 7296 §2.5: an unauthenticated INVALID_MAJOR_VERSION, in a version 2.0 header."""
    flags = FLAG_RESPONSE | (0 if request.from_initiator else FLAG_INITIATOR)
    return encode_message(IkeMessage(request.spi_i, request.spi_r, request.exchange_type, flags, request.message_id,
                                     [NotifyPayload(N_INVALID_MAJOR_VERSION)]))


def decode_message(data: bytes) -> IkeMessage:
    """Parse an IKE message (without the non-ESP marker). Strict: P3Error on any flaw."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _malformed("IKE message is not bytes")
    data = bytes(data)
    if len(data) < IKE_HEADER_BYTES:
        raise _malformed(f"IKE message of {len(data)} octets is shorter than its header")
    spi_i, spi_r = data[0:8], data[8:16]
    first_type, version, exchange_type, flags, message_id, length = struct.unpack("!BBBBII", data[16:28])
    if version >> 4 > 2:
        raise UnsupportedMajorVersion(version >> 4)
    if version >> 4 != 2:
        raise _malformed(f"IKE major version {version >> 4} (INVALID_MAJOR_VERSION)")
    if length != len(data):
        raise _malformed(f"IKE header says {length} octets, datagram has {len(data)}")
    if spi_i == bytes(8):
        raise _malformed("IKE initiator SPI is zero")
    message = IkeMessage(spi_i, spi_r, exchange_type, flags, message_id)
    payloads, sk, end = _decode_chain(data[IKE_HEADER_BYTES:], first_type, "IKE message", True, IKE_HEADER_BYTES)
    if sk is None and IKE_HEADER_BYTES + end != len(data):
        raise _malformed(f"{len(data) - IKE_HEADER_BYTES - end} octets after the last payload")
    message.payloads = payloads
    if sk is not None:
        inner_first, body_start, body_end = sk
        if body_end - body_start < SK_IV_BYTES + 1 + SK_ICV_BYTES:
            raise _malformed(f"SK payload of {body_end - body_start} octets cannot hold IV, pad length and ICV")
        message.encrypted = EncryptedPayload(
            first_payload_type=inner_first,
            iv=data[body_start:body_start + SK_IV_BYTES],
            ciphertext=data[body_start + SK_IV_BYTES:body_end],
            aad=data[:body_start],
        )
    return message


def decrypt_message(message: IkeMessage, key: bytes, salt: bytes) -> IkeMessage:
    """Open the SK payload: a new message with the inner payloads appended.

    A failed integrity check is P3-E307; a flawed inner chain P3-E300/E301.
    """
    sk = message.encrypted
    if sk is None:
        raise P3Error("IKE_UNEXPECTED", "expected an encrypted (SK) payload")
    try:
        plaintext = AESGCM(key).decrypt(salt + sk.iv, sk.ciphertext, sk.aad)
    except InvalidTag:
        raise P3Error("IKE_DECRYPT_FAILED", "the SK payload failed its AES-GCM integrity check") from None
    pad_length = plaintext[-1]
    if pad_length + 1 > len(plaintext):
        raise _malformed(f"SK pad length {pad_length} exceeds the plaintext")
    inner = plaintext[:len(plaintext) - 1 - pad_length]
    payloads, _, end = _decode_chain(inner, sk.first_payload_type, "SK payload", False)
    if end != len(inner):
        raise _malformed(f"{len(inner) - end} octets after the last encrypted payload")
    return IkeMessage(message.spi_i, message.spi_r, message.exchange_type, message.flags, message.message_id,
                      list(message.payloads) + payloads, None)
