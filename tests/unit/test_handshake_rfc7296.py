"""RFC 7296 cases a standard IKEv2 peer sends (issue 15 item 5): each message built with the codec.

A hand-written ``StandardInitiator`` plays the strongSwan side toward the
primary's ResponderHandshake; toward the secondary's InitiatorHandshake the
test plays the responder with the IKE SA keys of a real exchange.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from p3hw.crypto.prf import PRF_HMAC_SHA2_256, prf_by_id
from p3hw.crypto.schedule import IkeSaKeys, derive_ike_sa_keys
from p3hw.protocol.handshake import (
    HandshakeEstablished,
    HandshakeFailed,
    InitiatorHandshake,
    InitiatorState,
    MessageDropped,
    PeerDeletedSa,
    PeerPolicy,
    ResponderHandshake,
    psk_auth_data,
    secondary_selectors,
)
from p3hw.wire.ike import (
    AUTH_SHARED_KEY_MIC,
    CREATE_CHILD_SA,
    DH_CURVE25519,
    ENCR_AES_CCM_16,
    ENCR_AES_GCM_16,
    ESN_NONE,
    ESN_YES,
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    IKE_AUTH,
    IKE_SA_INIT,
    INFORMATIONAL,
    N_INVALID_MAJOR_VERSION,
    N_NAT_DETECTION_DESTINATION_IP,
    N_NAT_DETECTION_SOURCE_IP,
    N_NO_ADDITIONAL_SAS,
    N_NO_PROPOSAL_CHOSEN,
    N_TS_UNACCEPTABLE,
    N_UNSUPPORTED_CRITICAL_PAYLOAD,
    PROTO_ESP,
    PROTO_IKE,
    TRANSFORM_DH,
    TRANSFORM_ENCR,
    TRANSFORM_ESN,
    TRANSFORM_PRF,
    AuthPayload,
    DeletePayload,
    Identity,
    IdPayload,
    IkeMessage,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnknownPayload,
    decode_message,
    decrypt_message,
    encode_encrypted_message,
    encode_message,
    nat_detection_hash,
)

SECONDARY_ADDR = ("198.51.100.7", 5653)
SECONDARY_ID = Identity.ip("198.51.100.7")
PRIMARY_ID = Identity.ip("203.0.113.1")
PSK = b"correct horse battery staple"
#: RFC 9370 §2.2: "Additional Key Exchange 1", transform type 6.
TRANSFORM_ADDKE1 = 6
#: A payload type from the private-use range (RFC 7296 §3.2): nobody knows it.
PT_PRIVATE = 200


def ike_proposal(number: int = 1, *extra: Transform) -> Proposal:
    return Proposal(number, PROTO_IKE, b"", (Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, 256),
                                             Transform(TRANSFORM_PRF, PRF_HMAC_SHA2_256),
                                             Transform(TRANSFORM_DH, DH_CURVE25519), *extra))


def esp_proposal(spi: bytes = b"\x5e\xc0\x00\x01", encr: int = ENCR_AES_GCM_16, *extra: Transform,
                 esn: tuple[int, ...] = (ESN_YES,)) -> Proposal:
    return Proposal(1, PROTO_ESP, spi, (Transform(TRANSFORM_ENCR, encr, 256), *extra,
                                        *(Transform(TRANSFORM_ESN, value) for value in esn)))


ANY = (TrafficSelector.any_ipv4(), TrafficSelector.any_ipv6())


class StandardInitiator:
    """The initiator side of RFC 7296 as strongSwan sends it, message by message."""

    def __init__(self, responder: ResponderHandshake, spi_i: bytes = b"\x11" * 8) -> None:
        self.responder = responder
        self.spi_i = spi_i
        self.spi_r = bytes(8)
        self.dh = x25519.X25519PrivateKey.generate()
        self.next_iv = 0
        self.keys: IkeSaKeys | None = None
        self.init_request = b""
        self.nonce_r = b""

    def public(self) -> bytes:
        return self.dh.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sa_init(self, *payloads: Payload, nonce: bytes = bytes(range(32))) -> IkeMessage:
        """IKE_SA_INIT request: SAi1 KEi Ni plus *payloads*; returns the decoded answer."""
        self.nonce_i = nonce
        request = IkeMessage(self.spi_i, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [
            SaPayload((ike_proposal(),)), KePayload(DH_CURVE25519, self.public()), NoncePayload(nonce), *payloads])
        self.init_request = encode_message(request)
        answer = decode_message(self.send(self.init_request)[0])
        ke, nonce_r = answer.first(KePayload), answer.first(NoncePayload)
        if isinstance(ke, KePayload) and isinstance(nonce_r, NoncePayload):
            self.spi_r, self.nonce_r = answer.spi_r, nonce_r.nonce
            shared = self.dh.exchange(x25519.X25519PublicKey.from_public_bytes(ke.key_data))
            self.keys = derive_ike_sa_keys(PRF_HMAC_SHA2_256, 32, shared, nonce, nonce_r.nonce, self.spi_i, self.spi_r)
        return answer

    def auth(self, sa: SaPayload, ts_i: tuple[TrafficSelector, ...] = ANY,
             ts_r: tuple[TrafficSelector, ...] = ANY, *extra: Payload) -> IkeMessage:
        assert self.keys is not None
        auth = psk_auth_data(prf_by_id(PRF_HMAC_SHA2_256), PSK, self.init_request, self.nonce_r, self.keys.sk_pi,
                             SECONDARY_ID)
        return self.request(IKE_AUTH, 1, [IdPayload(SECONDARY_ID), AuthPayload(AUTH_SHARED_KEY_MIC, auth), sa,
                                          TsPayload(ts_i), TsPayload(ts_r, responder=True), *extra])

    def seal(self, exchange_type: int, message_id: int, payloads: list[Payload]) -> bytes:
        assert self.keys is not None
        iv = self.next_iv.to_bytes(8, "big")
        self.next_iv += 1
        message = IkeMessage(self.spi_i, self.spi_r, exchange_type, FLAG_INITIATOR, message_id, payloads)
        return encode_encrypted_message(message, self.keys.encryption_key_i, self.keys.salt_i, iv)

    def request(self, exchange_type: int, message_id: int, payloads: list[Payload], now: float = 0.0,
                ) -> IkeMessage:
        """Send a sealed request and open the single answer (fails if there is none)."""
        answers = self.send(self.seal(exchange_type, message_id, payloads), now)
        assert len(answers) == 1, "the request was not answered"
        return self.open(answers[0])

    def open(self, data: bytes) -> IkeMessage:
        assert self.keys is not None
        return decrypt_message(decode_message(data), self.keys.encryption_key_r, self.keys.salt_r)

    def send(self, data: bytes, now: float = 0.0) -> list[bytes]:
        return self.responder.receive(data, now, SECONDARY_ADDR)

    def verify_responder_auth(self, answer: IkeMessage) -> bool:
        assert self.keys is not None
        auth, id_r = answer.first(AuthPayload), answer.first(IdPayload)
        assert isinstance(auth, AuthPayload) and isinstance(id_r, IdPayload)
        init_response = self.responder._by_spi_r[self.spi_r].init_response
        expected = psk_auth_data(prf_by_id(PRF_HMAC_SHA2_256), PSK, init_response, self.nonce_i, self.keys.sk_pr,
                                 id_r.identity)
        return auth.auth_data == expected


def responder(policy: PeerPolicy | None = None) -> ResponderHandshake:
    return ResponderHandshake(PRIMARY_ID, {SECONDARY_ID: policy or PeerPolicy(psk=PSK)}.get,
                              allocate_p3_id=lambda: 0x9121_0001)


def events(machine: ResponderHandshake | InitiatorHandshake) -> list:
    return machine.events()


def established_with_standard_initiator() -> tuple[StandardInitiator, ResponderHandshake]:
    primary = responder()
    peer = StandardInitiator(primary)
    peer.sa_init()
    answer = peer.auth(SaPayload((esp_proposal(),)))
    assert answer.first(SaPayload) is not None and peer.verify_responder_auth(answer)
    assert [type(e) for e in events(primary)] == [HandshakeEstablished]
    return peer, primary


# --- (a) a child SA failure in IKE_AUTH still sets up the IKE SA (RFC 7296 §1.2, §2.21.2) ---------


@pytest.mark.parametrize(("offer", "ts_i", "notify", "code"), [
    (esp_proposal(encr=ENCR_AES_CCM_16), ANY, N_NO_PROPOSAL_CHOSEN, "P3-E302"),
    (esp_proposal(), (TrafficSelector.subnet("172.16.0.0/12"),), N_TS_UNACCEPTABLE, "P3-E309"),
])
def test_child_sa_failure_in_ike_auth_is_notified_next_to_idr_and_auth(
        offer: Proposal, ts_i: tuple[TrafficSelector, ...], notify: int, code: str) -> None:
    policy = PeerPolicy(psk=PSK, data_ciphers=("aes-256-gcm",),
                        remote_selectors=(TrafficSelector.subnet("10.7.0.0/16"),))
    primary = responder(policy)
    peer = StandardInitiator(primary)
    peer.sa_init()
    answer = peer.auth(SaPayload((offer,)), ts_i)
    # The IKE SA is set up: IDr and a valid AUTH, the child's error notified beside them.
    assert isinstance(answer.first(IdPayload), IdPayload) and peer.verify_responder_auth(answer)
    assert answer.notify(notify) is not None
    assert answer.first(SaPayload) is None and answer.first(TsPayload) is None
    failed = [e for e in events(primary) if isinstance(e, HandshakeFailed)]
    assert [f.reason_code for f in failed] == [code]
    # ... and it lives: the standard peer's liveness check is answered.
    assert peer.request(INFORMATIONAL, 2, [], now=90.0).payloads == []


# --- (b) an unknown payload marked critical is refused with UNSUPPORTED_CRITICAL_PAYLOAD (§2.5) ----


def test_unknown_critical_payload_in_ike_sa_init_is_answered_with_unsupported_critical_payload() -> None:
    primary = responder()
    answer = StandardInitiator(primary).sa_init(UnknownPayload(PT_PRIVATE, b"new", critical=True))
    refusal = answer.notify(N_UNSUPPORTED_CRITICAL_PAYLOAD)
    assert refusal is not None and refusal.notification_data == bytes([PT_PRIVATE])
    assert answer.is_response and answer.first(SaPayload) is None and answer.spi_r == bytes(8)
    assert primary.half_open_count == 0


def test_unknown_critical_payload_in_ike_auth_is_answered_with_unsupported_critical_payload() -> None:
    primary = responder()
    peer = StandardInitiator(primary)
    peer.sa_init()
    answer = peer.auth(SaPayload((esp_proposal(),)), ANY, ANY, UnknownPayload(PT_PRIVATE, b"new", critical=True))
    refusal = answer.notify(N_UNSUPPORTED_CRITICAL_PAYLOAD)
    assert refusal is not None and refusal.notification_data == bytes([PT_PRIVATE])
    assert not any(isinstance(e, HandshakeEstablished) for e in events(primary))


def test_unknown_non_critical_payload_is_ignored() -> None:
    primary = responder()
    answer = StandardInitiator(primary).sa_init(UnknownPayload(PT_PRIVATE, b"new"))
    assert answer.first(SaPayload) is not None and primary.half_open_count == 1


# --- (c) a proposal with an unknown transform type is unacceptable as a whole (§3.3.6) -------------


def test_ike_proposal_with_an_unknown_transform_type_is_not_chosen() -> None:
    primary = responder()
    peer = StandardInitiator(primary)
    with_addke = ike_proposal(1, Transform(TRANSFORM_ADDKE1, DH_CURVE25519))
    request = IkeMessage(peer.spi_i, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [
        SaPayload((with_addke, ike_proposal(2))), KePayload(DH_CURVE25519, peer.public()),
        NoncePayload(bytes(32))])
    answer = decode_message(peer.send(encode_message(request))[0])
    sa = answer.first(SaPayload)
    assert isinstance(sa, SaPayload) and [p.number for p in sa.proposals] == [2]
    assert all(t.transform_type != TRANSFORM_ADDKE1 for t in sa.proposals[0].transforms)
    # Offered alone, it is refused.
    alone = IkeMessage(b"\x22" * 8, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [
        SaPayload((with_addke,)), KePayload(DH_CURVE25519, peer.public()), NoncePayload(bytes(32))])
    refused = decode_message(peer.send(encode_message(alone))[0])
    assert refused.notify(N_NO_PROPOSAL_CHOSEN) is not None


def test_esp_proposal_with_an_unknown_transform_type_is_not_chosen() -> None:
    primary = responder()
    peer = StandardInitiator(primary)
    peer.sa_init()
    answer = peer.auth(SaPayload((esp_proposal(b"\x5e\xc0\x00\x01", ENCR_AES_GCM_16,
                                               Transform(TRANSFORM_ADDKE1, DH_CURVE25519)),)))
    assert answer.notify(N_NO_PROPOSAL_CHOSEN) is not None and answer.first(SaPayload) is None


# --- (d) 16-octet nonces are allowed (§2.10) ----------------------------------------------------


def test_sixteen_octet_nonce_is_accepted() -> None:
    primary = responder()
    peer = StandardInitiator(primary)
    answer = peer.sa_init(nonce=bytes(range(16)))
    assert answer.first(SaPayload) is not None and answer.error_notifies() == []
    assert peer.auth(SaPayload((esp_proposal(),))).first(SaPayload) is not None
    assert any(isinstance(e, HandshakeEstablished) for e in events(primary))


# --- (e) INFORMATIONAL requests are answered for the IKE SA's life (§1.4) ----------------------


def test_liveness_checks_are_answered_long_after_the_first_minute() -> None:
    peer, primary = established_with_standard_initiator()
    for message_id, now in ((2, 61.0), (3, 600.0), (4, 86_400.0)):
        answer = peer.request(INFORMATIONAL, message_id, [], now=now)
        assert answer.is_response and not answer.from_initiator
        assert (answer.exchange_type, answer.message_id, answer.payloads) == (INFORMATIONAL, message_id, [])
    assert primary.informational_answered == 3
    assert primary.get_timer() is None  # nothing times the established IKE SA out


def test_retransmitted_liveness_check_gets_the_same_answer() -> None:
    peer, primary = established_with_standard_initiator()
    request = peer.seal(INFORMATIONAL, 2, [])
    first = peer.send(request, 100.0)
    assert peer.send(request, 101.0) == first
    assert primary.informational_answered == 1
    # A message id outside the window of one is not answered (RFC 7296 §2.3).
    assert peer.send(peer.seal(INFORMATIONAL, 9, []), 102.0) == []


def test_delete_of_the_child_sa_is_answered_with_the_paired_spi() -> None:
    peer, primary = established_with_standard_initiator()
    answer = peer.request(INFORMATIONAL, 2, [DeletePayload(PROTO_ESP, (b"\x5e\xc0\x00\x01",))], now=300.0)
    delete = answer.first(DeletePayload)
    assert isinstance(delete, DeletePayload) and delete.protocol_id == PROTO_ESP
    assert delete.spis == ((0x9121_0001).to_bytes(4, "big"),)
    assert [e for e in events(primary) if isinstance(e, PeerDeletedSa)] == [
        PeerDeletedSa(False, SECONDARY_ID, SECONDARY_ADDR)]
    assert peer.request(INFORMATIONAL, 3, [], now=310.0).payloads == []  # the IKE SA stays


def test_delete_of_the_ike_sa_is_answered_and_closes_it() -> None:
    peer, primary = established_with_standard_initiator()
    answer = peer.request(INFORMATIONAL, 2, [DeletePayload(PROTO_IKE)], now=300.0)
    assert answer.payloads == []
    assert [e for e in events(primary) if isinstance(e, PeerDeletedSa)] == [
        PeerDeletedSa(True, SECONDARY_ID, SECONDARY_ADDR)]
    assert peer.send(peer.seal(INFORMATIONAL, 3, []), 301.0) == []


def test_create_child_sa_is_refused_with_no_additional_sas() -> None:
    peer, _ = established_with_standard_initiator()
    answer = peer.request(CREATE_CHILD_SA, 2, [SaPayload((esp_proposal(b"\x5e\xc0\x00\x02"),)),
                                               NoncePayload(bytes(32)), TsPayload(ANY), TsPayload(ANY, True)])
    assert answer.notify(N_NO_ADDITIONAL_SAS) is not None
    assert peer.request(INFORMATIONAL, 3, []).payloads == []


def test_secondary_answers_the_primarys_liveness_checks_after_the_exchange() -> None:
    initiator = InitiatorHandshake(SECONDARY_ID, PSK, remote_identity=PRIMARY_ID, inbound_p3_id=0x5EC0_0001)
    primary = responder()
    answer = primary.receive(initiator.start(0.0)[0], 0.0, SECONDARY_ADDR)[0]
    answer = primary.receive(initiator.receive(answer, 0.0)[0], 0.0, SECONDARY_ADDR)[0]
    assert initiator.receive(answer, 0.0) == [] and initiator.state is InitiatorState.ESTABLISHED
    established = next(e for e in events(primary) if isinstance(e, HandshakeEstablished))
    keys = established.ike_keys
    # The responder's requests: its own message ids from 0, no Initiator flag, sealed with SK_er.
    for message_id, now in ((0, 61.0), (1, 3600.0)):
        request = encode_encrypted_message(
            IkeMessage(established.spi_i, established.spi_r, INFORMATIONAL, 0, message_id, []),
            keys.encryption_key_r, keys.salt_r, (1000 + message_id).to_bytes(8, "big"))
        answers = initiator.receive(request, now)
        assert len(answers) == 1
        reply = decrypt_message(decode_message(answers[0]), keys.encryption_key_i, keys.salt_i)
        assert reply.is_response and reply.from_initiator and reply.message_id == message_id
    assert initiator.ike_sa is not None and initiator.ike_sa.informational_answered == 2
    assert not [e for e in events(initiator) if isinstance(e, MessageDropped)]


def test_secondary_that_starts_over_deletes_its_old_ike_sa_at_the_primary() -> None:
    initiator = InitiatorHandshake(SECONDARY_ID, PSK, remote_identity=PRIMARY_ID, inbound_p3_id=0x5EC0_0001)
    primary = responder()
    answer = primary.receive(initiator.start(0.0)[0], 0.0, SECONDARY_ADDR)[0]
    answer = primary.receive(initiator.receive(answer, 0.0)[0], 0.0, SECONDARY_ADDR)[0]
    initiator.receive(answer, 0.0)
    events(primary)
    (delete,) = initiator.close()
    assert len(primary.receive(delete, 500.0, SECONDARY_ADDR)) == 1  # answered, empty
    assert [e for e in events(primary) if isinstance(e, PeerDeletedSa)] == [
        PeerDeletedSa(True, SECONDARY_ID, SECONDARY_ADDR)]
    assert initiator.close() == []


# --- (f) a higher major version gets INVALID_MAJOR_VERSION (§2.5) ------------------------------


def test_higher_major_version_is_answered_with_invalid_major_version() -> None:
    primary = responder()
    peer = StandardInitiator(primary)
    request = bytearray(encode_message(IkeMessage(peer.spi_i, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, [
        SaPayload((ike_proposal(),)), KePayload(DH_CURVE25519, peer.public()), NoncePayload(bytes(32))])))
    request[17] = 0x30  # version 3.0
    answers = peer.send(bytes(request))
    assert len(answers) == 1
    answer = decode_message(answers[0])
    assert answers[0][17] == 0x20  # the closest version we support, in the header
    assert answer.notify(N_INVALID_MAJOR_VERSION) is not None
    assert answer.is_response and answer.spi_i == peer.spi_i and answer.message_id == 0
    assert primary.half_open_count == 0


def test_a_response_with_a_higher_major_version_is_not_answered() -> None:
    primary = responder()
    message = bytearray(encode_message(IkeMessage(b"\x33" * 8, b"\x44" * 8, INFORMATIONAL, FLAG_RESPONSE, 5, [])))
    message[17] = 0x30
    assert primary.receive(bytes(message), 0.0, SECONDARY_ADDR) == []


# --- (g) the primary narrows the secondary's selectors to its subnets (§2.9) -------------------


def test_primary_narrows_the_secondarys_selectors_to_its_subnets_and_address() -> None:
    selectors = secondary_selectors("198.51.100.7", ["10.7.0.0/16", "2001:db8:7::/48"])
    primary = responder(PeerPolicy(psk=PSK, remote_selectors=selectors))
    peer = StandardInitiator(primary)
    peer.sa_init()
    answer = peer.auth(SaPayload((esp_proposal(),)))  # TSi 0.0.0.0/0 and ::/0, as strongSwan sends by default
    ts_i = [t for t in answer.all(TsPayload) if isinstance(t, TsPayload) and not t.responder][0]
    assert set(ts_i.selectors) == {TrafficSelector.subnet("10.7.0.0/16"), TrafficSelector.subnet("2001:db8:7::/48"),
                                   TrafficSelector.subnet("198.51.100.7/32")}


# --- ESN: offered both ways, ESN preferred ------------------------------------------------------


@pytest.mark.parametrize(("offered", "chosen"), [((ESN_NONE,), ESN_NONE), ((ESN_NONE, ESN_YES), ESN_YES)])
def test_primary_takes_esn_when_offered_and_no_esn_otherwise(offered: tuple[int, ...], chosen: int) -> None:
    primary = responder()
    peer = StandardInitiator(primary)
    peer.sa_init()
    sa = peer.auth(SaPayload((esp_proposal(esn=offered),))).first(SaPayload)
    assert isinstance(sa, SaPayload)
    assert [t.transform_id for t in sa.proposals[0].of_type(TRANSFORM_ESN)] == [chosen]
    established = next(e for e in events(primary) if isinstance(e, HandshakeEstablished))
    assert established.esn is (chosen == ESN_YES)


# --- NAT detection (RFC 7296 §2.23): what a NAT-T peer needs to encapsulate ESP in UDP ----------


def test_primary_answers_nat_detection_with_hashes_of_both_endpoints() -> None:
    primary = responder()
    peer = StandardInitiator(primary)
    answer = peer.sa_init(NotifyPayload(N_NAT_DETECTION_SOURCE_IP, nat_detection_hash(peer.spi_i, bytes(8),
                                                                                     *SECONDARY_ADDR)),
                          NotifyPayload(N_NAT_DETECTION_DESTINATION_IP, nat_detection_hash(peer.spi_i, bytes(8),
                                                                                          "203.0.113.1", 5653)))
    source, destination = answer.notify(N_NAT_DETECTION_SOURCE_IP), answer.notify(N_NAT_DETECTION_DESTINATION_IP)
    assert source is not None and destination is not None
    assert source.notification_data == nat_detection_hash(peer.spi_i, answer.spi_r, "203.0.113.1", 5653)
    assert destination.notification_data == nat_detection_hash(peer.spi_i, answer.spi_r, *SECONDARY_ADDR)


def test_primary_sends_no_nat_detection_unasked() -> None:
    answer = StandardInitiator(responder()).sa_init()
    assert answer.notify(N_NAT_DETECTION_SOURCE_IP) is None


def test_secondary_offers_nat_detection_for_its_address_and_the_primarys() -> None:
    initiator = InitiatorHandshake(SECONDARY_ID, PSK, remote_identity=PRIMARY_ID)
    request = decode_message(initiator.start(0.0)[0])
    source = request.notify(N_NAT_DETECTION_SOURCE_IP)
    destination = request.notify(N_NAT_DETECTION_DESTINATION_IP)
    assert source is not None and destination is not None
    assert source.notification_data == nat_detection_hash(initiator.spi_i, bytes(8), "198.51.100.7", 5653)
    assert destination.notification_data == nat_detection_hash(initiator.spi_i, bytes(8), "203.0.113.1", 5653)
