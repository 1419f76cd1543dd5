"""The initial exchange between a secondary (initiator) and the primary (responder), in virtual time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from p3hw.crypto.keys import CIPHERS
from p3hw.crypto.prf import PRF_AES128_CMAC, PRF_AES128_XCBC, PRF_HMAC_SHA2_256
from p3hw.protocol.handshake import (
    IKE_RETRANSMIT_TIMEOUTS_S,
    HandshakeEstablished,
    HandshakeFailed,
    IkeProposalConfig,
    InitiatorHandshake,
    InitiatorState,
    MessageDropped,
    PeerDeletedSa,
    PeerPolicy,
    ResponderHandshake,
)
from p3hw.reasons import P3Error
from p3hw.wire.ike import (
    DH_CURVE25519,
    DH_ECP_256,
    ENCR_AES_GCM_16,
    FLAG_INITIATOR,
    IKE_SA_INIT,
    N_AUTHENTICATION_FAILED,
    N_NO_PROPOSAL_CHOSEN,
    PROTO_IKE,
    TRANSFORM_DH,
    TRANSFORM_ENCR,
    TRANSFORM_PRF,
    Identity,
    IkeMessage,
    KePayload,
    NoncePayload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    decode_message,
    encode_message,
)

SECONDARY_ADDR = ("198.51.100.7", 5653)
SECONDARY_ID = Identity.ip("198.51.100.7")
PRIMARY_ID = Identity.ip("203.0.113.1")
PSK = b"correct horse battery staple"


def _events(machine: InitiatorHandshake | ResponderHandshake) -> list:
    return machine.events()


@dataclass
class Run:
    initiator_events: list = field(default_factory=list)
    responder_events: list = field(default_factory=list)
    now: float = 0.0
    sent_by_initiator: list[bytes] = field(default_factory=list)
    sent_by_responder: list[bytes] = field(default_factory=list)

    def outcome(self, events: list) -> HandshakeEstablished | HandshakeFailed | None:
        final = [e for e in events if not isinstance(e, (MessageDropped, PeerDeletedSa))]
        assert len(final) <= 1, final
        return final[0] if final else None

    @property
    def initiator_result(self) -> HandshakeEstablished | HandshakeFailed | None:
        return self.outcome(self.initiator_events)

    @property
    def responder_result(self) -> HandshakeEstablished | HandshakeFailed | None:
        return self.outcome(self.responder_events)


def run_handshake(
    initiator: InitiatorHandshake,
    responder: ResponderHandshake,
    drop_to_responder: Callable[[int], bool] = lambda n: False,
    drop_to_initiator: Callable[[int], bool] = lambda n: False,
) -> Run:
    """Carry datagrams both ways; when nothing is in flight, jump to the next timer."""
    run = Run()
    in_flight = [("r", d) for d in initiator.start(run.now)]
    for _ in range(200):
        if not in_flight:
            if initiator.state in (InitiatorState.ESTABLISHED, InitiatorState.FAILED):
                break
            deadline = initiator.get_timer()
            assert deadline is not None
            run.now = deadline
            in_flight = [("r", d) for d in initiator.handle_timer(run.now)]
            continue
        destination, datagram = in_flight.pop(0)
        if destination == "r":
            run.sent_by_initiator.append(datagram)
            if drop_to_responder(len(run.sent_by_initiator)):
                continue
            in_flight += [("i", d) for d in responder.receive(datagram, run.now, SECONDARY_ADDR)]
        else:
            run.sent_by_responder.append(datagram)
            if drop_to_initiator(len(run.sent_by_responder)):
                continue
            in_flight += [("r", d) for d in initiator.receive(datagram, run.now)]
    run.initiator_events = _events(initiator)
    run.responder_events = _events(responder)
    return run


def make_pair(
    *,
    initiator_psk: bytes = PSK,
    policy: PeerPolicy | None = None,
    initiator_proposals: IkeProposalConfig | None = None,
    responder_proposals: IkeProposalConfig | None = None,
    data_ciphers: tuple[str, ...] = ("aes-256-gcm",),
    cookie_threshold: int = 32,
    known_peers: dict[Identity, PeerPolicy] | None = None,
    remote_identity: Identity | None = PRIMARY_ID,
) -> tuple[InitiatorHandshake, ResponderHandshake]:
    peers = known_peers if known_peers is not None else {SECONDARY_ID: policy or PeerPolicy(psk=PSK)}
    initiator = InitiatorHandshake(SECONDARY_ID, initiator_psk, data_ciphers=data_ciphers,
                                   proposals=initiator_proposals, remote_identity=remote_identity,
                                   inbound_p3_id=0x5EC0_0001)
    responder = ResponderHandshake(PRIMARY_ID, peers.get, proposals=responder_proposals,
                                   allocate_p3_id=lambda: 0x9121_0001, cookie_threshold=cookie_threshold)
    return initiator, responder


def assert_matching_keys(run: Run) -> tuple[HandshakeEstablished, HandshakeEstablished]:
    ini, res = run.initiator_result, run.responder_result
    assert isinstance(ini, HandshakeEstablished), ini
    assert isinstance(res, HandshakeEstablished), res
    assert ini.keys.outbound == res.keys.inbound
    assert ini.keys.inbound == res.keys.outbound
    assert ini.keys.control_out_key == res.keys.control_in_key
    assert ini.keys.control_in_key == res.keys.control_out_key
    assert ini.keys.hp_out_key == res.keys.hp_in_key
    assert ini.keys.hp_in_key == res.keys.hp_out_key
    # Each side's inbound P3 ID is the one it allocated itself.
    assert ini.keys.inbound.p3_id == 0x5EC0_0001 and res.keys.inbound.p3_id == 0x9121_0001
    assert ini.peer_identity == PRIMARY_ID and res.peer_identity == SECONDARY_ID
    assert res.peer_addr == SECONDARY_ADDR
    assert (ini.spi_i, ini.spi_r) == (res.spi_i, res.spi_r)
    return ini, res


# --- success -------------------------------------------------------------------


@pytest.mark.parametrize("key_bits", [128, 256])
@pytest.mark.parametrize("prf_id", [PRF_HMAC_SHA2_256, PRF_AES128_XCBC, PRF_AES128_CMAC])
@pytest.mark.parametrize("dh_group", [DH_CURVE25519, DH_ECP_256])
def test_handshake_establishes_matching_keys(dh_group: int, prf_id: int, key_bits: int) -> None:
    proposals = IkeProposalConfig(dh_groups=(dh_group,), prf_ids=(prf_id,), ike_key_bits=(key_bits,))
    run = run_handshake(*make_pair(initiator_proposals=proposals, responder_proposals=proposals))
    ini, res = assert_matching_keys(run)
    assert (ini.dh_group, ini.prf_id, ini.ike_key_bits) == (dh_group, prf_id, key_bits)
    assert (res.dh_group, res.prf_id, res.ike_key_bits) == (dh_group, prf_id, key_bits)
    assert len(run.sent_by_initiator) == 2 and len(run.sent_by_responder) == 2


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
def test_each_data_cipher_is_negotiated_for_the_child_sa(cipher: str) -> None:
    run = run_handshake(*make_pair(data_ciphers=(cipher,), policy=PeerPolicy(psk=PSK, data_ciphers=(cipher,))))
    ini, res = assert_matching_keys(run)
    assert ini.data_cipher == res.data_cipher == cipher
    assert ini.keys.outbound.cipher == cipher


def test_responder_preference_picks_among_offered_groups_and_prfs() -> None:
    # The initiator offers everything; the primary prefers CMAC and AES-128.
    responder_config = IkeProposalConfig(prf_ids=(PRF_AES128_CMAC, PRF_HMAC_SHA2_256), ike_key_bits=(128, 256))
    run = run_handshake(*make_pair(responder_proposals=responder_config))
    ini, _ = assert_matching_keys(run)
    assert (ini.prf_id, ini.ike_key_bits, ini.dh_group) == (PRF_AES128_CMAC, 128, DH_CURVE25519)


def test_invalid_ke_payload_round_trip_switches_group() -> None:
    # The secondary guesses X25519 first; the primary only does ECP-256.
    run = run_handshake(*make_pair(responder_proposals=IkeProposalConfig(dh_groups=(DH_ECP_256,))))
    ini, _ = assert_matching_keys(run)
    assert ini.dh_group == DH_ECP_256
    assert len(run.sent_by_initiator) == 3  # SA_INIT(31), SA_INIT(19), AUTH


def test_traffic_selectors_are_narrowed_to_the_configured_subnets() -> None:
    policy = PeerPolicy(psk=PSK, remote_selectors=(TrafficSelector.subnet("10.7.0.0/16"),),
                        local_selectors=(TrafficSelector.subnet("10.1.0.0/16"),))
    ini, res = assert_matching_keys(run_handshake(*make_pair(policy=policy)))
    assert ini.ts_i == res.ts_i == (TrafficSelector.subnet("10.7.0.0/16"),)
    assert ini.ts_r == res.ts_r == (TrafficSelector.subnet("10.1.0.0/16"),)


# --- failures --------------------------------------------------------------------


def test_wrong_psk_fails_with_authentication_failed_on_both_sides() -> None:
    run = run_handshake(*make_pair(initiator_psk=b"not the key"))
    ini, res = run.initiator_result, run.responder_result
    assert isinstance(ini, HandshakeFailed) and isinstance(res, HandshakeFailed)
    assert ini.reason_code == res.reason_code == "P3-E303"
    assert ini.notify_type == res.notify_type == N_AUTHENTICATION_FAILED


def test_unknown_secondary_is_refused_and_named_unknown_locally() -> None:
    run = run_handshake(*make_pair(known_peers={}))
    ini, res = run.initiator_result, run.responder_result
    assert isinstance(ini, HandshakeFailed) and ini.reason_code == "P3-E303"
    assert isinstance(res, HandshakeFailed) and res.reason_code == "P3-E310"
    assert "198.51.100.7" in res.detail


def test_no_common_ike_proposal_fails_with_no_proposal_chosen_on_both_sides() -> None:
    run = run_handshake(*make_pair(initiator_proposals=IkeProposalConfig(prf_ids=(PRF_AES128_XCBC,)),
                                   responder_proposals=IkeProposalConfig(prf_ids=(PRF_HMAC_SHA2_256,))))
    ini, res = run.initiator_result, run.responder_result
    assert isinstance(ini, HandshakeFailed) and isinstance(res, HandshakeFailed)
    assert ini.reason_code == res.reason_code == "P3-E302"
    assert ini.notify_type == res.notify_type == N_NO_PROPOSAL_CHOSEN
    assert len(run.sent_by_initiator) == 1  # no retransmission after a definite answer


def test_no_common_data_cipher_fails_with_no_proposal_chosen_on_both_sides() -> None:
    run = run_handshake(*make_pair(data_ciphers=("aes-128-ccm",), policy=PeerPolicy(psk=PSK)))
    ini, res = run.initiator_result, run.responder_result
    assert isinstance(ini, HandshakeFailed) and isinstance(res, HandshakeFailed)
    assert ini.reason_code == res.reason_code == "P3-E302"
    # The IKE SA stood without its child (RFC 7296 §2.21.2); the secondary, which has no use for it, deleted it.
    assert [e.ike_sa for e in run.responder_events if isinstance(e, PeerDeletedSa)] == [True]


def test_initiator_rejects_an_impostor_primary_and_tells_it() -> None:
    run = run_handshake(*make_pair(remote_identity=Identity.fqdn("primary.example")))
    ini, res = run.initiator_result, run.responder_events
    assert isinstance(ini, HandshakeFailed) and ini.reason_code == "P3-E303"
    # The responder first completed, then heard the initiator's AUTHENTICATION_FAILED.
    finals = [e for e in res if not isinstance(e, MessageDropped)]
    assert isinstance(finals[0], HandshakeEstablished)
    assert isinstance(finals[1], HandshakeFailed) and finals[1].reason_code == "P3-E303"


def test_initiator_gives_up_after_the_retransmission_schedule() -> None:
    run = run_handshake(*make_pair(), drop_to_responder=lambda n: True)
    ini = run.initiator_result
    assert isinstance(ini, HandshakeFailed) and ini.reason_code == "P3-E305"
    assert len(run.sent_by_initiator) == 4
    assert len(set(run.sent_by_initiator)) == 1  # retransmits are the identical message
    assert run.now == 1 + 2 + 4 + 8


# --- retransmission and the responder's cache ---------------------------------------


def test_lost_ike_sa_init_response_is_answered_from_the_cache() -> None:
    initiator, responder = make_pair()
    run = run_handshake(initiator, responder, drop_to_initiator=lambda n: n == 1)
    assert_matching_keys(run)
    assert run.sent_by_initiator[0] == run.sent_by_initiator[1]
    assert run.sent_by_responder[0] == run.sent_by_responder[1]  # same SPIr, nonce, KE: not re-processed
    assert responder.retransmits_answered == 1
    assert run.now == 1.0


def test_lost_ike_auth_request_is_retransmitted() -> None:
    run = run_handshake(*make_pair(), drop_to_responder=lambda n: n == 2)
    assert_matching_keys(run)
    assert run.sent_by_initiator[1] == run.sent_by_initiator[2]


def test_lost_ike_auth_response_is_answered_from_the_cache_once() -> None:
    initiator, responder = make_pair()
    run = run_handshake(initiator, responder, drop_to_initiator=lambda n: n == 2)
    assert_matching_keys(run)  # asserts exactly one Established on the responder
    assert run.sent_by_responder[1] == run.sent_by_responder[2]
    assert responder.retransmits_answered == 1


# --- cookies (RFC 7296 §2.6) -------------------------------------------------------------


def test_loaded_responder_demands_a_cookie_and_the_handshake_still_completes() -> None:
    initiator, responder = make_pair(cookie_threshold=0)
    run = run_handshake(initiator, responder)
    assert_matching_keys(run)
    assert responder.cookies_sent == 1
    assert len(run.sent_by_initiator) == 3
    retry = decode_message(run.sent_by_initiator[1])
    assert retry.payloads[0].notify_type == 16390  # COOKIE first, RFC 7296 §2.6


def test_cookies_start_when_half_open_exchanges_reach_the_threshold() -> None:
    responder = ResponderHandshake(PRIMARY_ID, {SECONDARY_ID: PeerPolicy(psk=PSK)}.get, cookie_threshold=2)
    for n in range(2):  # two secondaries that never finish
        stray = InitiatorHandshake(Identity.ip(f"192.0.2.{n + 1}"), PSK)
        assert len(responder.receive(stray.start(0.0)[0], 0.0, (f"192.0.2.{n + 1}", 5653))) == 1
    assert responder.half_open_count == 2 and responder.cookies_sent == 0
    initiator = InitiatorHandshake(SECONDARY_ID, PSK)
    answer = decode_message(responder.receive(initiator.start(0.0)[0], 0.0, SECONDARY_ADDR)[0])
    assert answer.notify(16390) is not None and responder.cookies_sent == 1
    # Half-open exchanges expire; then no cookie is needed.
    responder.handle_timer(responder.get_timer() or 0.0)
    assert responder.half_open_count == 0


def test_a_forged_cookie_is_not_accepted() -> None:
    initiator, responder = make_pair(cookie_threshold=0)
    first = initiator.start(0.0)[0]
    cookie_reply = responder.receive(first, 0.0, SECONDARY_ADDR)[0]
    retry = initiator.receive(cookie_reply, 0.0)[0]
    # The same retry from another address carries a cookie that is not its own.
    again = decode_message(responder.receive(retry, 0.0, ("192.0.2.99", 5653))[0])
    assert again.notify(16390) is not None and responder.half_open_count == 0


# --- robustness ------------------------------------------------------------------------


def test_secondary_accepts_no_requests_and_primary_no_responses() -> None:
    initiator, responder = make_pair()
    request = initiator.start(0.0)[0]
    assert initiator.receive(request, 0.0) == []
    answer = responder.receive(request, 0.0, SECONDARY_ADDR)[0]
    assert responder.receive(answer, 0.0, SECONDARY_ADDR) == []
    assert any(isinstance(e, MessageDropped) and e.reason_code == "P3-E308" for e in _events(responder))


def test_garbage_does_not_derail_an_exchange_in_progress() -> None:
    initiator, responder = make_pair()
    request = initiator.start(0.0)[0]
    answer = responder.receive(request, 0.0, SECONDARY_ADDR)[0]
    assert initiator.receive(answer[:40], 0.0) == []  # truncated: dropped
    auth = initiator.receive(answer, 0.0)[0]
    tampered = auth[:-1] + bytes([auth[-1] ^ 1])
    assert responder.receive(tampered, 0.0, SECONDARY_ADDR) == []  # fails integrity: dropped
    auth_answer = responder.receive(auth, 0.0, SECONDARY_ADDR)[0]
    assert initiator.receive(auth_answer, 0.0) == []
    assert initiator.state is InitiatorState.ESTABLISHED
    drops = [e for e in _events(responder) if isinstance(e, MessageDropped)]
    assert [d.reason_code for d in drops] == ["P3-E307"]


def test_initiator_cannot_start_twice() -> None:
    initiator, _ = make_pair()
    initiator.start(0.0)
    with pytest.raises(P3Error):
        initiator.start(0.0)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=0, max_size=3),
    st.integers(0, 4000),
)
def test_mangled_messages_never_raise_out_of_either_machine(which: int, flips: list, cut: int) -> None:
    initiator, responder = make_pair(remote_identity=None)
    m1 = initiator.start(0.0)[0]
    m2 = responder.receive(m1, 0.0, SECONDARY_ADDR)[0]
    m3 = initiator.receive(m2, 0.0)[0]
    m4 = responder.receive(m3, 0.0, SECONDARY_ADDR)[0]
    target = bytearray([m1, m2, m3, m4][which])
    for position, value in flips:
        target[position % len(target)] = value
    mangled = bytes(target[:cut]) if cut < len(target) else bytes(target)
    # Fresh machines at the matching step receive the mangled datagram.
    initiator2, responder2 = make_pair(remote_identity=None)
    n1 = initiator2.start(0.0)[0]
    if which in (0, 2):
        responder2.receive(mangled, 0.0, SECONDARY_ADDR)
        if which == 2:
            n2 = responder2.receive(n1, 0.0, SECONDARY_ADDR)[0]
            initiator2.receive(n2, 0.0)
            responder2.receive(mangled, 0.0, SECONDARY_ADDR)
    else:
        if which == 3:
            n2 = responder2.receive(n1, 0.0, SECONDARY_ADDR)[0]
            initiator2.receive(n2, 0.0)
        initiator2.receive(mangled, 0.0)
    _events(initiator2)
    _events(responder2)


def test_selectors_outside_the_policy_fail_with_ts_unacceptable_on_both_sides() -> None:
    policy = PeerPolicy(psk=PSK, remote_selectors=(TrafficSelector.subnet("10.7.0.0/16"),))
    initiator = InitiatorHandshake(SECONDARY_ID, PSK, ts_i=(TrafficSelector.subnet("172.16.0.0/12"),))
    responder = ResponderHandshake(PRIMARY_ID, {SECONDARY_ID: policy}.get)
    run = run_handshake(initiator, responder)
    ini, res = run.initiator_result, run.responder_result
    assert isinstance(ini, HandshakeFailed) and isinstance(res, HandshakeFailed)
    assert ini.reason_code == res.reason_code == "P3-E309"


@pytest.mark.parametrize(("group", "share"), [(DH_CURVE25519, bytes(32)), (DH_ECP_256, bytes(64)),
                                              (DH_ECP_256, b"\x01" * 63)])
def test_invalid_key_share_is_refused(group: int, share: bytes) -> None:
    proposal = Proposal(1, PROTO_IKE, b"", (Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, 256),
                                            Transform(TRANSFORM_PRF, PRF_HMAC_SHA2_256),
                                            Transform(TRANSFORM_DH, group)))
    request = encode_message(IkeMessage(b"\x01" * 8, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [
        SaPayload((proposal,)), KePayload(group, share), NoncePayload(bytes(32))]))
    _, responder = make_pair()
    answer = decode_message(responder.receive(request, 0.0, SECONDARY_ADDR)[0])
    assert answer.notify(7) is not None  # INVALID_SYNTAX
    failed = [e for e in _events(responder) if isinstance(e, HandshakeFailed)]
    assert failed and failed[0].reason_code == "P3-E304"
    assert responder.half_open_count == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["deliver", "drop", "duplicate", "delay"]), min_size=1, max_size=40))
def test_lossy_link_either_establishes_matching_keys_or_times_out(fates: list[str]) -> None:
    """Loss, duplication and reordering (delay) in virtual time: never an inconsistent outcome."""
    initiator, responder = make_pair()
    queue: list[tuple[float, int, str, bytes]] = []  # (arrival time, order, destination, datagram)
    counter = 0
    now = 0.0

    def send(destination: str, datagrams: list[bytes]) -> None:
        nonlocal counter
        for datagram in datagrams:
            fate = fates[counter % len(fates)]
            counter += 1
            if fate == "drop":
                continue
            delay = 1.5 if fate == "delay" else 0.05  # a delayed datagram arrives after a retransmit
            queue.append((now + delay, counter, destination, datagram))
            if fate == "duplicate":
                queue.append((now + 0.1, counter, destination, datagram))

    send("r", initiator.start(now))
    while initiator.state not in (InitiatorState.ESTABLISHED, InitiatorState.FAILED):
        queue.sort()
        timer = initiator.get_timer()
        if queue and (timer is None or queue[0][0] <= timer):
            now, _, destination, datagram = queue.pop(0)
            if destination == "r":
                send("i", responder.receive(datagram, now, SECONDARY_ADDR))
            else:
                send("r", initiator.receive(datagram, now))
        else:
            assert timer is not None
            now = timer
            send("r", initiator.handle_timer(now))
    for arrival, _, destination, datagram in sorted(queue):  # late stragglers change nothing
        if destination == "r":
            responder.receive(datagram, arrival, SECONDARY_ADDR)
    ini_events = [e for e in _events(initiator) if not isinstance(e, MessageDropped)]
    res_events = [e for e in _events(responder) if not isinstance(e, MessageDropped)]
    assert len(ini_events) == 1 and len(res_events) <= 1
    event(type(ini_events[0]).__name__)
    if isinstance(ini_events[0], HandshakeEstablished):
        assert isinstance(res_events[0], HandshakeEstablished)
        assert ini_events[0].keys.outbound == res_events[0].keys.inbound
        assert ini_events[0].keys.inbound == res_events[0].keys.outbound
    else:
        assert ini_events[0].reason_code == "P3-E305"
        assert now <= sum(IKE_RETRANSMIT_TIMEOUTS_S) * 2
