"""A session facing bad or unexpected control traffic: it answers with a reason
code or drops the packet, and never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p3hw.crypto.keysource import SoftwareKeySource
from p3hw.protocol.control import ControlChannel, RequestReceived, ResponseReceived, SendControlPacket
from p3hw.protocol.rekey import InstallInboundSa
from p3hw.protocol.session import Session, SessionConfig
from p3hw.simulators.harness import make_initial_keys
from p3hw.wire.control import MsgType

P_ADDR, S_ADDR = "10.255.0.1", "10.255.0.2"
CIPHER = "aes-128-gcm"


def _secondary_and_fake_primary() -> tuple[Session, ControlChannel]:
    """A real secondary session, and a bare control channel holding the primary's keys."""
    keys_p, keys_s = make_initial_keys(CIPHER, SoftwareKeySource())
    secondary = Session(SessionConfig("secondary", CIPHER, S_ADDR, P_ADDR), keys_s, SoftwareKeySource(), now=0.0)
    fake_primary = ControlChannel(P_ADDR, S_ADDR, keys_p.control_out_key, keys_p.control_in_key)
    return secondary, fake_primary


def _exchange(session: Session, peer: ControlChannel, msg_type: MsgType, fields: dict[str, object]) -> list[object]:
    peer.send_request(msg_type, fields, now=1.0)  # type: ignore[arg-type]
    for packet in peer.events():
        session.receive_control_packet(packet.packet, now=1.0)
    actions = session.events()
    answers = []
    for action in actions:
        if isinstance(action, SendControlPacket):
            answers += peer.receive_packet(action.packet, now=1.0)
    return [*actions, *answers]


def test_rekey_with_wrong_key_length_is_refused_with_a_status_and_installs_nothing() -> None:
    secondary, primary = _secondary_and_fake_primary()
    results = _exchange(secondary, primary, MsgType.REKEY, {
        "rekey_id": 1, "new_inbound_id": 77, "data_material": b"\x01" * 10, "control_material": b"\x02" * 64,
    })
    assert not any(isinstance(r, InstallInboundSa) for r in results)
    [answer] = [r for r in results if isinstance(r, ResponseReceived)]
    assert answer.response.msg_type is MsgType.REKEY_STATUS and answer.response.int_field("status") == 400
    assert secondary.lost is None


def test_rekey_naming_a_missing_key_array_is_refused_with_404() -> None:
    secondary, primary = _secondary_and_fake_primary()
    results = _exchange(secondary, primary, MsgType.REKEY, {
        "rekey_id": 1, "new_inbound_id": 77, "control_material": b"\x02" * 64,
        "data_array_generation": 1, "data_index": 0, "data_nonce": b"\x00" * 32,
    })
    [answer] = [r for r in results if isinstance(r, ResponseReceived)]
    assert answer.response.int_field("status") == 404


def test_switch_without_a_pending_rekey_is_answered_with_error_406() -> None:
    secondary, primary = _secondary_and_fake_primary()
    results = _exchange(secondary, primary, MsgType.SWITCH, {"rekey_id": 9, "first_seq": 1})
    [answer] = [r for r in results if isinstance(r, ResponseReceived)]
    assert answer.response.msg_type is MsgType.ERROR and answer.response.int_field("reason") == 406
    assert secondary.lost is None


def test_primary_refuses_a_rekey_from_the_secondary() -> None:
    keys_p, keys_s = make_initial_keys(CIPHER, SoftwareKeySource())
    primary = Session(SessionConfig("primary", CIPHER, P_ADDR, S_ADDR), keys_p, SoftwareKeySource(), now=0.0)
    primary.events()  # its HELLO
    fake_secondary = ControlChannel(S_ADDR, P_ADDR, keys_s.control_out_key, keys_s.control_in_key)
    results = _exchange(primary, fake_secondary, MsgType.REKEY, {
        "rekey_id": 1, "new_inbound_id": 5, "data_material": b"\x01" * 72, "control_material": b"\x02" * 64,
    })
    [answer] = [r for r in results if isinstance(r, ResponseReceived)]
    assert answer.response.msg_type is MsgType.ERROR and answer.response.int_field("reason") == 406
    assert not any(isinstance(r, InstallInboundSa) for r in results)


def test_config_is_delivered_and_acknowledged() -> None:
    secondary, primary = _secondary_and_fake_primary()
    results = _exchange(secondary, primary, MsgType.CONFIG, {"settings": "heartbeat_time=20"})
    assert any(getattr(r, "settings", None) == "heartbeat_time=20" for r in results)
    assert any(isinstance(r, ResponseReceived) and r.response.msg_type is MsgType.ACK for r in results)


def test_the_primarys_heartbeat_timers_in_config_take_effect_at_the_secondary() -> None:
    secondary, primary = _secondary_and_fake_primary()
    results = _exchange(secondary, primary, MsgType.CONFIG, {"heartbeat_time_ms": 7000, "heartbeat_fail_ms": 45000})
    assert any(isinstance(r, ResponseReceived) and r.response.msg_type is MsgType.ACK for r in results)
    assert (secondary.liveness.heartbeat_time_s, secondary.liveness.heartbeat_fail_s) == (7.0, 45.0)
    assert secondary.liveness.get_timer() == 1.0 + 7.0  # heard at 1.0; the next heartbeat 7 s later


def test_config_with_a_zero_heartbeat_timer_is_refused_with_e400_and_changes_nothing() -> None:
    secondary, primary = _secondary_and_fake_primary()
    before = (secondary.liveness.heartbeat_time_s, secondary.liveness.heartbeat_fail_s)
    results = _exchange(secondary, primary, MsgType.CONFIG, {"heartbeat_time_ms": 0, "heartbeat_fail_ms": 45000})
    [answer] = [r for r in results if isinstance(r, ResponseReceived)]
    assert answer.response.msg_type is MsgType.ERROR and answer.response.int_field("reason") == 400
    assert (secondary.liveness.heartbeat_time_s, secondary.liveness.heartbeat_fail_s) == before
    assert secondary.lost is None and secondary.rejected_messages[0].code == "P3-E400"


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_garbage_on_the_control_queue_never_raises_and_never_kills_the_session(data: bytes) -> None:
    secondary, _ = _secondary_and_fake_primary()
    secondary.receive_control_packet(data, now=1.0)
    assert secondary.events() == []
    assert secondary.lost is None
    assert secondary.rejected_messages and secondary.rejected_messages[0].code in ("P3-E400", "P3-E401")


def test_request_received_events_reach_the_application_once() -> None:
    secondary, primary = _secondary_and_fake_primary()
    primary.send_request(MsgType.HEARTBEAT, {"echo": 3}, now=0.0)
    [packet] = primary.events()
    secondary.receive_control_packet(packet.packet, now=0.0)
    secondary.receive_control_packet(packet.packet, now=0.0)  # a replay: dropped by the control key layer
    answers = [a for a in secondary.events() if isinstance(a, SendControlPacket)]
    assert [a.msg_type for a in answers] == [MsgType.HEARTBEAT_ACK]
    assert secondary.rejected_messages[0].code == "P3-E401"
    assert not isinstance(primary.receive_packet(answers[0].packet, now=0.0)[0], RequestReceived)
