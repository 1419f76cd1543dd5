"""Control messages on the wire: TLV codec, control-key sealing, predefined IP+TCP headers."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p3hw.reasons import P3Error
from p3hw.wire.control import (
    FIELDS,
    RESPONSE_TYPES,
    SCHEMA,
    ControlMessage,
    ControlOpener,
    ControlSealer,
    MsgType,
    SessionSettings,
    decode_message,
    encode_message,
    unwrap_packet,
    wrap_packet,
)

KEY = bytes(range(32))


def _sample_value(name: str) -> int | bytes | str:
    kind = FIELDS[name][1]
    return {"u8": 7, "u16": 513, "u32": 0xDEADBEEF, "u64": 1 << 40, "bytes": b"\x01\x02" * 20, "text": "dönerstag"}[kind]


def _full_message(msg_type: MsgType) -> ControlMessage:
    required, optional = SCHEMA[msg_type]
    fields = {name: _sample_value(name) for name in required | optional}
    return ControlMessage(msg_type, 42, 41 if msg_type in RESPONSE_TYPES else 0, fields)


@pytest.mark.parametrize("msg_type", list(MsgType))
def test_every_message_type_survives_encode_seal_wrap_and_back(msg_type: MsgType) -> None:
    message = _full_message(msg_type)
    sealer, opener = ControlSealer(KEY, 9), ControlOpener()
    opener.add_key(9, KEY)
    packet = wrap_packet(sealer.seal(encode_message(message)), "192.0.2.1", "198.51.100.7")
    unwrapped = unwrap_packet(packet)
    assert (unwrapped.src, unwrapped.dst) == ("192.0.2.1", "198.51.100.7")
    assert decode_message(opener.open(unwrapped.sealed)) == message


def test_control_packet_is_a_valid_ipv4_tcp_segment() -> None:
    sealed = ControlSealer(KEY, 0).seal(encode_message(_full_message(MsgType.HEARTBEAT)))
    packet = wrap_packet(sealed, "10.1.2.3", "10.9.8.7")
    ip, tcp = packet[:20], packet[20:]
    assert ip[0] == 0x45 and ip[9] == 6 and struct.unpack("!H", ip[2:4])[0] == len(packet)
    assert _ones_complement(ip) == 0xFFFF  # a valid header sums to all ones
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp))
    assert _ones_complement(pseudo + tcp) == 0xFFFF
    assert struct.unpack("!HH", tcp[:4]) == (5653, 5653)


def test_control_packet_is_a_valid_ipv6_tcp_segment() -> None:
    sealed = ControlSealer(KEY, 0).seal(encode_message(_full_message(MsgType.HEARTBEAT)))
    packet = wrap_packet(sealed, "fd00::1", "fd00::2")
    assert packet[0] >> 4 == 6 and packet[6] == 6
    tcp = packet[40:]
    pseudo = packet[8:40] + struct.pack("!I3xB", len(tcp), 6)
    assert _ones_complement(pseudo + tcp) == 0xFFFF
    assert str(ipaddress.ip_address(packet[24:40])) == "fd00::2"


def _ones_complement(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_tampered_control_message_fails_authentication_with_e401() -> None:
    sealer, opener = ControlSealer(KEY, 1), ControlOpener()
    opener.add_key(1, KEY)
    sealed = bytearray(sealer.seal(encode_message(_full_message(MsgType.SWITCH))))
    sealed[20] ^= 0x01
    with pytest.raises(P3Error) as caught:
        opener.open(bytes(sealed))
    assert caught.value.code == "P3-E401"


def test_replayed_control_message_is_refused_with_e401() -> None:
    sealer, opener = ControlSealer(KEY, 1), ControlOpener()
    opener.add_key(1, KEY)
    sealed = sealer.seal(encode_message(_full_message(MsgType.SWITCH)))
    opener.open(sealed)
    with pytest.raises(P3Error) as caught:
        opener.open(sealed)
    assert caught.value.code == "P3-E401"


def test_control_messages_reordered_within_the_window_are_accepted() -> None:
    sealer, opener = ControlSealer(KEY, 1), ControlOpener()
    opener.add_key(1, KEY)
    sealed = [sealer.seal(encode_message(ControlMessage(MsgType.HEARTBEAT, i, 0, {"echo": i}))) for i in range(1, 6)]
    opened = [decode_message(opener.open(s)).int_field("echo") for s in reversed(sealed)]
    assert opened == [5, 4, 3, 2, 1]


def test_message_sealed_with_another_control_key_is_refused() -> None:
    opener = ControlOpener()
    opener.add_key(1, KEY)
    sealed = ControlSealer(os.urandom(32), 1).seal(encode_message(_full_message(MsgType.HEARTBEAT)))
    with pytest.raises(P3Error) as caught:
        opener.open(sealed)
    assert caught.value.code == "P3-E401"


def test_message_of_a_removed_key_epoch_is_refused() -> None:
    opener = ControlOpener()
    opener.add_key(1, KEY)
    opener.remove_key(1)
    with pytest.raises(P3Error) as caught:
        opener.open(ControlSealer(KEY, 1).seal(encode_message(_full_message(MsgType.HEARTBEAT))))
    assert caught.value.code == "P3-E401"


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty"),
        (bytes([2, 6, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), "unknown version"),
        (bytes([1, 99, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), "unknown type"),
        (bytes([1, 6, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 13]) + b"\x00\x0e\x00\x08" + bytes(8), "body length too long"),
        (bytes([1, 6, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 12]) + b"\x00\x0e\x00\x08" + bytes(8), "reserved bits set"),
        (bytes([1, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12]) + b"\x00\x0e\x00\x08" + bytes(8), "message id 0"),
    ],
)
def test_malformed_headers_are_e400(data: bytes, why: str) -> None:
    with pytest.raises(P3Error) as caught:
        decode_message(data)
    assert caught.value.code == "P3-E400"


def test_missing_required_field_unknown_tag_and_duplicate_tag_are_e400() -> None:
    header = bytes([1, MsgType.HEARTBEAT, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    cases = [
        b"",  # HEARTBEAT without echo
        b"\x00\x63\x00\x00",  # unknown tag 99
        b"\x00\x0e\x00\x08" + bytes(8) + b"\x00\x0e\x00\x08" + bytes(8),  # echo twice
        b"\x00\x0e\x00\x04" + bytes(4),  # echo of the wrong width
        b"\x00\x01\x00\x04" + bytes(4) + b"\x00\x0e\x00\x08" + bytes(8),  # a field HEARTBEAT does not carry
    ]
    for body in cases:
        with pytest.raises(P3Error) as caught:
            decode_message(header + struct.pack("!H", len(body)) + body)
        assert caught.value.code == "P3-E400", body


def test_response_without_reply_to_is_e400() -> None:
    body = b"\x00\x0e\x00\x08" + bytes(8)
    data = bytes([1, MsgType.HEARTBEAT_ACK, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]) + struct.pack("!H", len(body)) + body
    with pytest.raises(P3Error) as caught:
        decode_message(data)
    assert caught.value.code == "P3-E400"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_a_reason_coded_error(data: bytes) -> None:
    opener = ControlOpener()
    opener.add_key(0, KEY)
    for parse in (decode_message, opener.open, unwrap_packet):
        try:
            parse(data)
        except P3Error as error:
            assert error.code in ("P3-E400", "P3-E401")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(MsgType)), st.data())
def test_mutated_valid_messages_never_raise_anything_but_e400(msg_type: MsgType, data: st.DataObject) -> None:
    encoded = bytearray(encode_message(_full_message(msg_type)))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for candidate in (bytes(encoded), bytes(encoded[:cut])):
        try:
            decode_message(candidate)
        except P3Error as error:
            assert error.code == "P3-E400"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_control_packets_are_refused_with_a_reason_code(data: st.DataObject) -> None:
    sealer, opener = ControlSealer(KEY, 0), ControlOpener()
    opener.add_key(0, KEY)
    packet = bytearray(wrap_packet(sealer.seal(encode_message(_full_message(MsgType.REKEY))), "10.0.0.1", "10.0.0.2"))
    position = data.draw(st.integers(40, len(packet) - 1))  # inside the sealed part
    packet[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(P3Error) as caught:
        decode_message(opener.open(unwrap_packet(bytes(packet)).sealed))
    assert caught.value.code in ("P3-E400", "P3-E401")


def test_oversized_message_is_refused_when_encoding() -> None:
    message = ControlMessage(MsgType.CONFIG, 1, 0, {"settings": "x" * 5000})
    with pytest.raises(P3Error) as caught:
        encode_message(message)
    assert caught.value.code == "P3-E400"


def test_session_settings_travel_in_config_as_whole_milliseconds() -> None:
    message = ControlMessage(MsgType.CONFIG, 3, 0, SessionSettings(7.5, 45.0).to_fields())
    decoded = decode_message(encode_message(message))
    assert decoded.fields == {"heartbeat_time_ms": 7500, "heartbeat_fail_ms": 45000}
    assert SessionSettings.from_message(decoded) == SessionSettings(7.5, 45.0)
    assert SessionSettings.from_message(ControlMessage(MsgType.CONFIG, 4, 0, {"settings": "x"})) is None


@pytest.mark.parametrize("fields", [{"heartbeat_time_ms": 7000}, {"heartbeat_time_ms": 0, "heartbeat_fail_ms": 1},
                                    {"heartbeat_time_ms": 1, "heartbeat_fail_ms": 86_400_001}])
def test_unusable_session_settings_are_malformed(fields: dict[str, int]) -> None:
    with pytest.raises(P3Error) as caught:
        SessionSettings.from_message(ControlMessage(MsgType.CONFIG, 3, 0, dict(fields)))
    assert caught.value.code == "P3-E400"
