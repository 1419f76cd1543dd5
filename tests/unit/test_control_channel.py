"""The control channel machine: answers, retransmission, duplicate suppression."""

from __future__ import annotations

import os

from p3hw.protocol.control import (
    ControlChannel,
    MessageRejected,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from p3hw.wire.control import MsgType

P_ADDR, S_ADDR = "10.255.0.1", "10.255.0.2"


def _pair() -> tuple[ControlChannel, ControlChannel]:
    k_ps, k_sp = os.urandom(32), os.urandom(32)
    primary = ControlChannel(P_ADDR, S_ADDR, k_ps, k_sp, retransmit_s=2.0)
    secondary = ControlChannel(S_ADDR, P_ADDR, k_sp, k_ps, retransmit_s=2.0)
    return primary, secondary


def test_request_is_delivered_once_and_answered() -> None:
    primary, secondary = _pair()
    request = primary.send_request(MsgType.HEARTBEAT, {"echo": 7}, now=0.0)
    [packet] = primary.events()
    [event] = secondary.receive_packet(packet.packet, now=0.01)
    assert isinstance(event, RequestReceived) and event.message.int_field("echo") == 7
    secondary.send_response(event.message, MsgType.HEARTBEAT_ACK, {"echo": 7})
    [answer] = secondary.events()
    [event] = primary.receive_packet(answer.packet, now=0.02)
    assert isinstance(event, ResponseReceived) and event.request == request
    assert primary.get_timer() is None  # nothing left to retransmit


def test_unanswered_request_is_retried_four_times_then_reported_failed() -> None:
    primary, _ = _pair()
    primary.send_request(MsgType.CONFIG, {"settings": "rekey_wait=60"}, now=0.0)
    sent = len(primary.events())
    failures = []
    now = 0.0
    while (timer := primary.get_timer()) is not None:
        now = timer
        failures += primary.handle_timer(now)
        sent += len(primary.events())
    assert sent == 5  # the first try and four retries (spec §2.1.6)
    assert len(failures) == 1 and isinstance(failures[0], RequestFailed) and failures[0].attempts == 5
    assert now == 10.0


def test_retransmitted_request_is_answered_from_cache_not_redelivered() -> None:
    primary, secondary = _pair()
    primary.send_request(MsgType.CONFIG, {"settings": "a=1"}, now=0.0)
    [first] = primary.events()
    [event] = secondary.receive_packet(first.packet, now=0.01)
    assert isinstance(event, RequestReceived)
    secondary.send_response(event.message, MsgType.ACK, {})
    secondary.events()  # this answer is lost
    primary.handle_timer(2.0)
    [again] = primary.events()
    assert again.retransmission and again.msg_id == first.msg_id
    assert secondary.receive_packet(again.packet, now=2.01) == []  # not delivered twice
    [cached] = secondary.events()
    assert cached.msg_type is MsgType.ACK
    [event] = primary.receive_packet(cached.packet, now=2.02)
    assert isinstance(event, ResponseReceived)
    assert secondary.duplicates_suppressed == 1


def test_duplicated_answer_is_ignored() -> None:
    primary, secondary = _pair()
    primary.send_request(MsgType.HELLO, {"protocol_version": 1, "role": 1}, now=0.0)
    [request] = primary.events()
    [event] = secondary.receive_packet(request.packet, now=0.0)
    assert isinstance(event, RequestReceived)
    secondary.send_response(event.message, MsgType.ACK, {})
    [answer] = secondary.events()
    assert len(primary.receive_packet(answer.packet, now=0.0)) == 1
    # The same bytes again are a replay at the control-key layer.
    [rejected] = primary.receive_packet(answer.packet, now=0.0)
    assert isinstance(rejected, MessageRejected) and rejected.error.code == "P3-E401"


def test_control_packet_from_a_stranger_address_is_rejected() -> None:
    primary, secondary = _pair()
    stranger = ControlChannel("10.255.0.99", S_ADDR, os.urandom(32), os.urandom(32))
    stranger.send_request(MsgType.HEARTBEAT, {"echo": 1}, now=0.0)
    [packet] = stranger.events()
    [event] = secondary.receive_packet(packet.packet, now=0.0)
    assert isinstance(event, MessageRejected) and event.error.code == "P3-E400"


def test_retransmission_after_a_control_key_switch_uses_the_new_key() -> None:
    primary, secondary = _pair()
    new_key = os.urandom(32)
    secondary.add_in_key(new_key, 1)
    primary.send_request(MsgType.CONFIG, {"settings": "x=1"}, now=0.0)
    primary.events()  # lost
    primary.switch_out_key(new_key, 1)
    secondary.remove_in_key(0)  # only the new key is left at the receiver
    primary.handle_timer(2.0)
    [again] = primary.events()
    [event] = secondary.receive_packet(again.packet, now=2.0)
    assert isinstance(event, RequestReceived)
