"""Certificate authentication in the initial exchange (ECDSA P-256, AUTH method 14, RFC 7427)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from p3hw.protocol.handshake import (
    CertificateCredentials,
    HandshakeEstablished,
    HandshakeFailed,
    InitiatorHandshake,
    MessageDropped,
    PeerPolicy,
    ResponderHandshake,
    _Failure,
    _verify_signature_auth,
)
from p3hw.reasons import P3Error
from p3hw.wire.ike import AUTH_DIGITAL_SIGNATURE, N_AUTHENTICATION_FAILED, AuthPayload, CertPayload, Identity

SECONDARY_ADDR = ("198.51.100.7", 5653)
SECONDARY_ID = Identity.ip("198.51.100.7")
PRIMARY_ID = Identity.fqdn("primary.example")
NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def _leaf(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], name: x509.GeneralName,
          valid_days: int = 30) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder().subject_name(_name("gateway")).issuer_name(ca[0].subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    return certificate, key


_GARBAGE_CA = _ca("garbage test CA")


@pytest.fixture(scope="module")
def fleet_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return _ca("p3 fleet CA")


def _credentials(ca, leaf, anchors=None) -> CertificateCredentials:  # type: ignore[no-untyped-def]
    return CertificateCredentials(leaf[0], leaf[1], anchors or (ca[0],))


def _run(initiator: InitiatorHandshake, responder: ResponderHandshake) -> tuple[list, list, list[bytes]]:
    sent: list[bytes] = []
    requests = initiator.start(0.0)
    while requests:
        request = requests.pop(0)
        sent.append(request)
        for answer in responder.receive(request, 0.0, SECONDARY_ADDR):
            requests += initiator.receive(answer, 0.0)

    def drain(machine):  # type: ignore[no-untyped-def]
        return [event for event in machine.events() if not isinstance(event, MessageDropped)]

    return drain(initiator), drain(responder), sent


def _pair(ca, secondary_leaf, primary_leaf, *, secondary_anchors=None, primary_anchors=None,  # type: ignore[no-untyped-def]
          policy=None, secondary_clock=NOW):
    initiator = InitiatorHandshake(SECONDARY_ID, None, remote_identity=PRIMARY_ID,
                                   credentials=_credentials(ca, secondary_leaf, secondary_anchors),
                                   wall_clock=lambda: secondary_clock, inbound_p3_id=0x10)
    responder = ResponderHandshake(PRIMARY_ID, {SECONDARY_ID: policy or PeerPolicy(psk=None)}.get,
                                   credentials=_credentials(ca, primary_leaf, primary_anchors),
                                   wall_clock=lambda: NOW, allocate_p3_id=lambda: 0x20)
    return initiator, responder


def test_certificate_authentication_establishes_matching_keys(fleet_ca) -> None:  # type: ignore[no-untyped-def]
    secondary = _leaf(fleet_ca, x509.IPAddress(ipaddress.ip_address("198.51.100.7")))
    primary = _leaf(fleet_ca, x509.DNSName("primary.example"))
    ini_events, res_events, _ = _run(*_pair(fleet_ca, secondary, primary))
    assert len(ini_events) == 1 and len(res_events) == 1
    ini, res = ini_events[0], res_events[0]
    assert isinstance(ini, HandshakeEstablished) and isinstance(res, HandshakeEstablished)
    assert ini.keys.outbound == res.keys.inbound and ini.keys.inbound == res.keys.outbound
    assert ini.keys.control_out_key == res.keys.control_in_key and ini.keys.hp_out_key == res.keys.hp_in_key
    assert res.peer_identity == SECONDARY_ID and ini.peer_identity == PRIMARY_ID


def test_certificate_from_an_untrusted_ca_is_refused_on_both_sides(fleet_ca) -> None:  # type: ignore[no-untyped-def]
    rogue = _ca("rogue CA")
    secondary = _leaf(rogue, x509.IPAddress(ipaddress.ip_address("198.51.100.7")))
    primary = _leaf(fleet_ca, x509.DNSName("primary.example"))
    ini_events, res_events, _ = _run(*_pair(fleet_ca, secondary, primary, secondary_anchors=(fleet_ca[0],)))
    assert isinstance(res_events[0], HandshakeFailed) and res_events[0].reason_code == "P3-E303"
    assert "trusted CA" in res_events[0].detail
    assert isinstance(ini_events[0], HandshakeFailed) and ini_events[0].reason_code == "P3-E303"
    assert ini_events[0].notify_type == N_AUTHENTICATION_FAILED


def test_certificate_for_another_identity_is_refused(fleet_ca) -> None:  # type: ignore[no-untyped-def]
    secondary = _leaf(fleet_ca, x509.IPAddress(ipaddress.ip_address("198.51.100.99")))  # not our address
    primary = _leaf(fleet_ca, x509.DNSName("primary.example"))
    _, res_events, _ = _run(*_pair(fleet_ca, secondary, primary))
    assert isinstance(res_events[0], HandshakeFailed) and res_events[0].reason_code == "P3-E303"
    assert "subjectAltName" in res_events[0].detail


def test_expired_primary_certificate_is_refused_by_the_secondary(fleet_ca) -> None:  # type: ignore[no-untyped-def]
    secondary = _leaf(fleet_ca, x509.IPAddress(ipaddress.ip_address("198.51.100.7")))
    primary = _leaf(fleet_ca, x509.DNSName("primary.example"), valid_days=1)
    # Two days on, by the secondary's clock, the primary's certificate has expired.
    ini_events, res_events, sent = _run(*_pair(fleet_ca, secondary, primary,
                                               secondary_clock=NOW + timedelta(days=2)))
    assert isinstance(ini_events[0], HandshakeFailed) and ini_events[0].reason_code == "P3-E303"
    assert "not valid" in ini_events[0].detail
    # The secondary told the primary, which withdraws the session it had reported.
    assert [type(e) for e in res_events] == [HandshakeEstablished, HandshakeFailed]
    assert len(sent) == 3


def test_psk_policy_refuses_a_certificate_initiator(fleet_ca) -> None:  # type: ignore[no-untyped-def]
    secondary = _leaf(fleet_ca, x509.IPAddress(ipaddress.ip_address("198.51.100.7")))
    primary = _leaf(fleet_ca, x509.DNSName("primary.example"))
    _, res_events, _ = _run(*_pair(fleet_ca, secondary, primary, policy=PeerPolicy(psk=b"a psk")))
    assert isinstance(res_events[0], HandshakeFailed) and res_events[0].reason_code == "P3-E303"
    assert f"method {AUTH_DIGITAL_SIGNATURE}" in res_events[0].detail


def test_certificate_initiator_needs_a_primary_that_offers_signatures(fleet_ca) -> None:  # type: ignore[no-untyped-def]
    secondary = _leaf(fleet_ca, x509.IPAddress(ipaddress.ip_address("198.51.100.7")))
    initiator = InitiatorHandshake(SECONDARY_ID, None, credentials=_credentials(fleet_ca, secondary))
    responder = ResponderHandshake(PRIMARY_ID, {SECONDARY_ID: PeerPolicy(psk=b"k")}.get)  # no certificate
    ini_events, _, _ = _run(initiator, responder)
    assert isinstance(ini_events[0], HandshakeFailed) and ini_events[0].reason_code == "P3-E303"


def test_initiator_needs_some_credential() -> None:
    with pytest.raises(P3Error) as failure:
        InitiatorHandshake(SECONDARY_ID, None)
    assert failure.value.code == "P3-E116"


_VALID_DER = _leaf(_GARBAGE_CA, x509.IPAddress(ipaddress.ip_address("198.51.100.7")))[0].public_bytes(
    serialization.Encoding.DER)


@st.composite
def _mangled_der(draw: st.DrawFn) -> bytes:
    data = bytearray(_VALID_DER)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(0, len(data)))])


@settings(max_examples=300, deadline=None)
@given(cert_data=st.one_of(st.binary(max_size=600), _mangled_der()), auth_data=st.binary(min_size=1, max_size=120))
def test_garbage_certificates_and_signatures_only_fail_authentication(cert_data: bytes, auth_data: bytes) -> None:
    ca = _GARBAGE_CA
    with pytest.raises(_Failure) as failure:
        _verify_signature_auth(CertificateCredentials(ca[0], ca[1], (ca[0],)), CertPayload(4, cert_data),
                               AuthPayload(AUTH_DIGITAL_SIGNATURE, auth_data), b"octets", SECONDARY_ID, NOW)
    assert failure.value.error.code == "P3-E303"


def test_a_valid_certificate_with_a_garbage_signature_fails_authentication(fleet_ca) -> None:  # type: ignore[no-untyped-def]
    leaf = _leaf(fleet_ca, x509.IPAddress(ipaddress.ip_address("198.51.100.7")))
    der = leaf[0].public_bytes(serialization.Encoding.DER)
    for auth_data in (b"\x00", b"\x0c" + bytes(12), b"\xff" + b"x" * 20, b"\x0c300a06082a8648ce3d040302"):
        with pytest.raises(_Failure) as failure:
            _verify_signature_auth(CertificateCredentials(fleet_ca[0], fleet_ca[1], (fleet_ca[0],)),
                                   CertPayload(4, der), AuthPayload(AUTH_DIGITAL_SIGNATURE, auth_data),
                                   b"octets", SECONDARY_ID, NOW)
        assert failure.value.error.code == "P3-E303"
