"""The IKEv2 codec: round trips, the SK payload (RFC 5282) and strict decoding."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p3hw.reasons import P3Error
from p3hw.wire.ike import (
    AUTH_SHARED_KEY_MIC,
    DH_CURVE25519,
    ENCR_AES_GCM_16,
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    IKE_AUTH,
    IKE_SA_INIT,
    N_COOKIE,
    N_NO_PROPOSAL_CHOSEN,
    PROTO_ESP,
    PROTO_IKE,
    PT_IDI,
    PT_NONE,
    PT_SK,
    TRANSFORM_DH,
    TRANSFORM_ENCR,
    TRANSFORM_PRF,
    AuthPayload,
    CertPayload,
    DeletePayload,
    Identity,
    IdPayload,
    IkeMessage,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnknownPayload,
    VendorPayload,
    decode_message,
    decrypt_message,
    encode_encrypted_message,
    encode_message,
)

SPI_I = bytes.fromhex("a1a2a3a4a5a6a7a8")
SPI_R = bytes.fromhex("b1b2b3b4b5b6b7b8")
KEY = bytes(range(32))
SALT = b"salt"


def _sa_init() -> IkeMessage:
    proposal = Proposal(1, PROTO_IKE, b"", (
        Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, 256),
        Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, 128),
        Transform(TRANSFORM_PRF, 5),
        Transform(TRANSFORM_DH, DH_CURVE25519),
    ))
    return IkeMessage(SPI_I, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [
        SaPayload((proposal,)),
        KePayload(DH_CURVE25519, bytes(range(32))),
        NoncePayload(bytes(range(32))),
        VendorPayload(b"p3hw"),
    ])


def _auth_payloads() -> list:
    return [
        IdPayload(Identity.ip("192.0.2.7")),
        AuthPayload(AUTH_SHARED_KEY_MIC, bytes(32)),
        SaPayload((Proposal(1, PROTO_ESP, b"\x00\x00\x12\x34", (Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, 128),)),)),
        TsPayload((TrafficSelector.any_ipv4(), TrafficSelector.subnet("2001:db8::/32"))),
        TsPayload((TrafficSelector.subnet("10.1.0.0/16"),), responder=True),
        NotifyPayload(N_COOKIE, b"cookie-data"),
        DeletePayload(PROTO_ESP, (b"\x00\x00\x00\x01", b"\x00\x00\x00\x02")),
        CertPayload(4, b"\x30\x03\x02\x01\x01"),
    ]


def test_ike_sa_init_round_trips() -> None:
    message = _sa_init()
    wire = encode_message(message)
    decoded = decode_message(wire)
    assert decoded.payloads == message.payloads
    assert (decoded.spi_i, decoded.spi_r, decoded.exchange_type, decoded.message_id) == (SPI_I, bytes(8), 34, 0)
    assert decoded.from_initiator and not decoded.is_response
    assert wire[17] == 0x20  # version 2.0
    assert struct.unpack("!I", wire[24:28])[0] == len(wire)


def test_transform_key_length_is_a_tv_attribute() -> None:
    wire = Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, 256).encode(last=True)
    # last(0) reserved length(12) type(1) reserved id(20) | AF|14, 256
    assert wire == bytes.fromhex("0000000c01000014800e0100")


def test_encrypted_payloads_round_trip_and_carry_the_sk_header() -> None:
    message = IkeMessage(SPI_I, SPI_R, IKE_AUTH, FLAG_INITIATOR, 1, _auth_payloads())
    wire = encode_encrypted_message(message, KEY, SALT, b"\x00" * 7 + b"\x01")
    decoded = decode_message(wire)
    assert decoded.payloads == [] and decoded.encrypted is not None
    assert wire[16] == PT_SK and decoded.encrypted.first_payload_type == PT_IDI
    opened = decrypt_message(decoded, KEY, SALT)
    assert opened.payloads == message.payloads


def test_tampered_encrypted_message_fails_integrity() -> None:
    message = IkeMessage(SPI_I, SPI_R, IKE_AUTH, FLAG_RESPONSE, 1, _auth_payloads())
    wire = bytearray(encode_encrypted_message(message, KEY, SALT, bytes(8)))
    wire[20] ^= 0x01  # the message id: part of the AAD
    with pytest.raises(P3Error) as failure:
        decrypt_message(decode_message(bytes(wire)), KEY, SALT)
    assert failure.value.code == "P3-E307"
    good = encode_encrypted_message(message, KEY, SALT, bytes(8))
    with pytest.raises(P3Error) as failure:
        decrypt_message(decode_message(good), bytes(32), SALT)
    assert failure.value.code == "P3-E307"


def test_unknown_critical_payload_is_refused() -> None:
    message = IkeMessage(SPI_I, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [UnknownPayload(200, b"x")])
    wire = bytearray(encode_message(message))
    assert decode_message(bytes(wire)).payloads == [UnknownPayload(200, b"x")]  # non-critical: kept
    wire[28 + 1] |= 0x80  # the critical bit of the first generic payload header
    with pytest.raises(P3Error) as failure:
        decode_message(bytes(wire))
    assert failure.value.code == "P3-E301"


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda w: w[:-1], "truncated"),
        (lambda w: w + b"\x00", "trailing octet"),
        (lambda w: w[:27], "shorter than the header"),
        (lambda w: w[:17] + b"\x10" + w[18:], "major version 1"),
        (lambda w: bytes(8) + w[8:], "zero initiator SPI"),
        (lambda w: w[:30] + b"\x00\x03" + w[32:], "payload length below 4"),
        (lambda w: w[:30] + b"\xff\xff" + w[32:], "payload length past the end"),
    ],
)
def test_malformed_messages_are_reason_coded(mutate, why: str) -> None:  # type: ignore[no-untyped-def]
    wire = encode_message(_sa_init())
    with pytest.raises(P3Error) as failure:
        decode_message(mutate(wire))
    assert failure.value.code == "P3-E300", why


def test_transform_count_must_match_the_proposal() -> None:
    wire = bytearray(encode_message(_sa_init()))
    # Proposal header: generic(4) then last, res, len(2), num, proto, spi size, count.
    wire[28 + 4 + 7] = 5
    with pytest.raises(P3Error) as failure:
        decode_message(bytes(wire))
    assert failure.value.code == "P3-E300"


def test_nonce_out_of_rfc_range_is_malformed() -> None:
    message = IkeMessage(SPI_I, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [NoncePayload(b"short")])
    with pytest.raises(P3Error) as failure:
        decode_message(encode_message(message))
    assert failure.value.code == "P3-E300"


def test_notify_and_identity_helpers() -> None:
    message = IkeMessage(SPI_I, SPI_R, IKE_SA_INIT, FLAG_RESPONSE, 0, [NotifyPayload(N_NO_PROPOSAL_CHOSEN)])
    decoded = decode_message(encode_message(message))
    assert decoded.notify(N_NO_PROPOSAL_CHOSEN) is not None and decoded.error_notifies()
    assert str(Identity.ip("2001:db8::1")) == "2001:db8::1"
    assert str(Identity.fqdn("gw.example")) == "gw.example"
    with pytest.raises(P3Error):
        Identity.ip("300.1.1.1")


def test_traffic_selector_narrowing() -> None:
    wide = TrafficSelector.any_ipv4()
    narrow = TrafficSelector.subnet("10.0.0.0/8")
    assert wide.intersect(narrow) == narrow
    assert narrow.intersect(TrafficSelector.subnet("192.168.0.0/16")) is None
    assert narrow.intersect(TrafficSelector.any_ipv6()) is None
    assert narrow.end == ipaddress.IPv4Address("10.255.255.255")


# --- Hypothesis: nothing but P3Error ever escapes the parser ------------------

_VALID_WIRES = [
    encode_message(_sa_init()),
    encode_message(IkeMessage(SPI_I, SPI_R, IKE_AUTH, FLAG_INITIATOR, 1, _auth_payloads())),
]
_ENCRYPTED_WIRE = encode_encrypted_message(
    IkeMessage(SPI_I, SPI_R, IKE_AUTH, FLAG_INITIATOR, 1, _auth_payloads()), KEY, SALT, bytes(8))


def _decode_quietly(data: bytes) -> None:
    try:
        message = decode_message(data)
        if message.encrypted is not None:
            decrypt_message(message, KEY, SALT)
    except P3Error as error:
        assert error.code in {"P3-E300", "P3-E301", "P3-E307"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_p3error(data: bytes) -> None:
    _decode_quietly(data)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(_VALID_WIRES + [_ENCRYPTED_WIRE]),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 2000),
)
def test_mutated_messages_never_raise_anything_but_p3error(wire: bytes, flips: list, cut: int) -> None:
    data = bytearray(wire)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    _decode_quietly(bytes(data[:cut]) if cut < len(data) else bytes(data))


def _seal_raw_inner(first_type: int, inner_plaintext: bytes) -> bytes:
    """An SK message whose decrypted content is arbitrary (to fuzz the inner parser)."""
    sk_length = 4 + 8 + len(inner_plaintext) + 16
    total = 28 + sk_length
    header = SPI_I + SPI_R + struct.pack("!BBBBII", PT_SK, 0x20, IKE_AUTH, FLAG_INITIATOR, 1, total)
    aad = header + struct.pack("!BBH", first_type, 0, sk_length)
    return aad + bytes(8) + AESGCM(KEY).encrypt(SALT + bytes(8), inner_plaintext, aad)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([PT_NONE, 33, 34, 35, 39, 41, 42, 44, 46, 99, 200]), st.binary(min_size=1, max_size=200))
def test_fuzzed_encrypted_contents_never_raise_anything_but_p3error(first_type: int, plaintext: bytes) -> None:
    _decode_quietly(_seal_raw_inner(first_type, plaintext))
