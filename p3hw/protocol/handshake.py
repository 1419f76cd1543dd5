"""The initial exchange (spec §2.1.2, §2.1.4; DESIGN.md §4.1) as sans-I/O machines.

The secondary is the IKEv2 initiator (``InitiatorHandshake``), the primary
the responder (``ResponderHandshake``); the primary never initiates and the
secondary never accepts. Two exchanges, RFC 7296 §1.2:

    IKE_SA_INIT  HDR, SAi1, KEi, Ni            -->
                 <--  HDR, SAr1, KEr, Nr
    IKE_AUTH     HDR, SK {IDi, AUTH, SAi2, TSi, TSr}  -->
                 <--  HDR, SK {IDr, AUTH, SAr2, TSi, TSr}

IKE SA: ENCR AES-GCM-16 (128/256), PRF HMAC-SHA-256 / AES128-CMAC /
AES128-XCBC, DH group 31 (X25519) or 19 (ECP-256). Authentication by
pre-shared key (RFC 7296 §2.15, method 2). The child SA (ESP, tunnel mode,
security gateway to security gateway) carries the data cipher, and its SPI
is the P3 ID that its *receiver* allocated (DESIGN.md §3).

Shape (STYLE.md, aioquic): feed bytes and ``now`` in, take bytes to send and
events out. ``get_timer()`` says when ``handle_timer(now)`` wants to run.
Nothing here does I/O; the runtime adds the non-ESP marker and UDP 5653.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from p3hw.constants import DEFAULT_PORT
from p3hw.crypto.keys import CIPHERS, SessionKeys
from p3hw.crypto.prf import PRF_AES128_CMAC, PRF_AES128_XCBC, PRF_HMAC_SHA2_256, PrfAlgorithm, prf_by_id
from p3hw.crypto.schedule import IkeSaKeys, derive_ike_sa_keys, derive_session_keys
from p3hw.protocol.ids import P3IdAllocator
from p3hw.protocol.ike_sa import IkeSaRequests
from p3hw.reasons import P3Error, reason
from p3hw.wire.ike import (
    AUTH_DIGITAL_SIGNATURE,
    AUTH_HMAC_SHA2_256_128,
    AUTH_SHARED_KEY_MIC,
    CERT_X509_SIGNATURE,
    DH_CURVE25519,
    DH_ECP_256,
    DH_ECP_384,
    ENCR_AES_CCM_16,
    ENCR_AES_CTR,
    ENCR_AES_GCM_16,
    ESN_NONE,
    ESN_YES,
    ESP_TRANSFORM_TYPES,
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    ID_FQDN,
    ID_IPV4_ADDR,
    ID_IPV6_ADDR,
    ID_RFC822_ADDR,
    IKE_AUTH,
    IKE_SA_INIT,
    IKE_TRANSFORM_TYPES,
    INFORMATIONAL,
    N_AUTHENTICATION_FAILED,
    N_COOKIE,
    N_INVALID_KE_PAYLOAD,
    N_INVALID_SYNTAX,
    N_NAT_DETECTION_DESTINATION_IP,
    N_NAT_DETECTION_SOURCE_IP,
    N_NO_PROPOSAL_CHOSEN,
    N_SIGNATURE_HASH_ALGORITHMS,
    N_TS_UNACCEPTABLE,
    N_UNSUPPORTED_CRITICAL_PAYLOAD,
    PROTO_ESP,
    PROTO_IKE,
    TRANSFORM_DH,
    TRANSFORM_ENCR,
    TRANSFORM_ESN,
    TRANSFORM_INTEG,
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
    Payload,
    Proposal,
    SaPayload,
    TrafficSelector,
    Transform,
    TsPayload,
    UnsupportedCriticalPayload,
    UnsupportedMajorVersion,
    decode_header,
    decode_message,
    decrypt_message,
    encode_encrypted_message,
    encode_message,
    invalid_major_version_reply,
    nat_detection_hash,
)

# --- Implementation constants (docs/handshake.md explains them) --------------

#: Initiator: seconds to wait after each transmission of a request; after the
#: last wait without an answer the exchange fails with P3-E305.
IKE_RETRANSMIT_TIMEOUTS_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
#: Octets of Ni / Nr we send (RFC 7296 §2.10: at least half the PRF key size; we use 256 bits).
NONCE_BYTES = 32
#: Octets the peer's nonce must have: RFC 7296 §2.10 asks for at least 128 bits and at least
#: half the PRF's key size, which is 128 bits for all three PRFs (HMAC-SHA-256: 256-bit key).
MIN_PEER_NONCE_BYTES = 16
#: Responder: an IKE_SA_INIT answered but not completed is dropped after this long.
HALF_OPEN_TIMEOUT_S = 30.0
#: Responder: a finished exchange is kept this long to answer retransmitted requests.
FINISHED_EXCHANGE_KEEP_S = 60.0
#: Responder: half-open exchanges at which it starts demanding cookies (RFC 7296 §2.6).
DEFAULT_COOKIE_THRESHOLD = 32
#: Initiator: COOKIE / INVALID_KE_PAYLOAD round trips accepted before giving up.
MAX_RESTARTS = 3
#: RFC 7296 §2.15: the pad string of the PSK authentication key.
PSK_KEY_PAD = b"Key Pad for IKEv2"

# Notify type -> the reason code both sides report (spec §5.1).
_NOTIFY_REASONS: dict[int, str] = {
    N_NO_PROPOSAL_CHOSEN: "IKE_NO_PROPOSAL_CHOSEN",
    N_AUTHENTICATION_FAILED: "IKE_AUTHENTICATION_FAILED",
    N_INVALID_KE_PAYLOAD: "IKE_INVALID_KE",
    N_TS_UNACCEPTABLE: "IKE_TS_UNACCEPTABLE",
    N_INVALID_SYNTAX: "IKE_MALFORMED",
    N_UNSUPPORTED_CRITICAL_PAYLOAD: "IKE_UNSUPPORTED_CRITICAL",
}


# --- Configuration ------------------------------------------------------------


@dataclass(frozen=True)
class IkeProposalConfig:
    """What this side offers (initiator) or accepts (responder), most preferred first."""

    dh_groups: tuple[int, ...] = (DH_CURVE25519, DH_ECP_256)
    prf_ids: tuple[int, ...] = (PRF_HMAC_SHA2_256, PRF_AES128_CMAC, PRF_AES128_XCBC)
    ike_key_bits: tuple[int, ...] = (256, 128)

    def __post_init__(self) -> None:
        if not self.dh_groups or set(self.dh_groups) - {DH_CURVE25519, DH_ECP_256, DH_ECP_384}:
            raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", f"DH groups {self.dh_groups}: 31, 19 and 20 are supported")
        if not self.prf_ids or set(self.prf_ids) - {PRF_HMAC_SHA2_256, PRF_AES128_CMAC, PRF_AES128_XCBC}:
            raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", f"PRFs {self.prf_ids}: 5, 8 and 4 are supported")
        if not self.ike_key_bits or set(self.ike_key_bits) - {128, 256}:
            raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", f"IKE AES-GCM key sizes {self.ike_key_bits}")


ANY_SELECTORS: tuple[TrafficSelector, ...] = (TrafficSelector.any_ipv4(), TrafficSelector.any_ipv6())


def secondary_selectors(address: object, subnets: Iterable[object]) -> tuple[TrafficSelector, ...]:
    """What a secondary may send from (its TSi): its subnets, and its own P3 address, where its
    control channel's packets come from (DESIGN.md §4.2). The primary narrows to these (RFC 7296 §2.9)."""
    networks = [ipaddress.ip_network(str(subnet), strict=False) for subnet in subnets]
    host = ipaddress.ip_address(str(address))
    if not any(host in network for network in networks if network.version == host.version):
        networks.append(ipaddress.ip_network(host))
    return tuple(TrafficSelector.subnet(str(network)) for network in networks)


@dataclass(frozen=True)
class PeerPolicy:
    """What the responder knows of one configured secondary, found by its IDi.

    *psk* set: the secondary authenticates by pre-shared key (method 2);
    None: by certificate (method 14), checked against the responder's
    trust anchors. *data_ciphers* (keys.CIPHERS names) are the child SA
    ciphers accepted. *remote_selectors* bound the initiator's TSi (the
    secondary's subnets), *local_selectors* bound TSr (the primary's); the
    responder narrows the proposal to them (RFC 7296 §2.9).
    """

    psk: bytes | None
    data_ciphers: tuple[str, ...] = ("aes-256-gcm",)
    remote_selectors: tuple[TrafficSelector, ...] = ANY_SELECTORS
    local_selectors: tuple[TrafficSelector, ...] = ANY_SELECTORS

    def __post_init__(self) -> None:
        unknown = [c for c in self.data_ciphers if c not in CIPHERS]
        if unknown or not self.data_ciphers:
            raise P3Error("DP_BAD_CIPHER", f"data ciphers {self.data_ciphers!r}: choose from {sorted(CIPHERS)}")


# --- Events -------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeEstablished:
    """The initial exchange succeeded: install *keys* (this side's view)."""

    keys: SessionKeys
    peer_identity: Identity
    spi_i: bytes
    spi_r: bytes
    prf_id: int
    dh_group: int
    ike_key_bits: int
    data_cipher: str
    ts_i: tuple[TrafficSelector, ...]
    ts_r: tuple[TrafficSelector, ...]
    ike_keys: IkeSaKeys
    peer_addr: object = None
    #: the child SA's ESN transform: 64-bit sequence numbers (p3hw prefers them; see _esp_transforms)
    esn: bool = True


@dataclass(frozen=True)
class HandshakeFailed:
    """The exchange failed. *notify_type* is what the peer was told or told us."""

    reason_code: str
    detail: str
    notify_type: int | None = None
    peer_addr: object = None

    def error(self) -> P3Error:
        return P3Error(self.reason_code, self.detail)


@dataclass(frozen=True)
class MessageDropped:
    """A datagram was ignored (malformed, unexpected, forged): for the debug log only."""

    reason_code: str
    detail: str
    peer_addr: object = None


@dataclass(frozen=True)
class PeerDeletedSa:
    """After the exchange, the peer deleted the IKE SA (*ike_sa*) or only the child SA (RFC 7296 §1.4.1).

    A p3hw peer never does; a standard one does when it shuts down or its
    child SA could not be installed. The P3 session itself ends by its own
    liveness rules (spec §2.1.7).
    """

    ike_sa: bool
    peer_identity: Identity | None
    peer_addr: object = None


HandshakeEvent = HandshakeEstablished | HandshakeFailed | MessageDropped | PeerDeletedSa


class _Failure(Exception):
    """Internal: a reason code plus the notify to send the peer (if any)."""

    def __init__(self, reason_name: str, detail: str, notify_type: int | None = None,
                 notify_data: bytes = b"", tell_peer: bool = True) -> None:
        super().__init__(detail)
        self.error = P3Error(reason_name, detail)
        self.notify_type = notify_type
        self.notify_data = notify_data
        # False when the notify came *from* the peer: nothing to tell it.
        self.tell_peer = tell_peer


# --- Diffie-Hellman -------------------------------------------------------------


#: RFC 5903 groups: the curve and the octets of one coordinate.
_ECP_CURVES: dict[int, tuple[type[ec.EllipticCurve], int]] = {DH_ECP_256: (ec.SECP256R1, 32),
                                                                DH_ECP_384: (ec.SECP384R1, 48)}


class _DhKey:
    """An ephemeral key of group 31 (RFC 8031), 19 or 20 (RFC 5903)."""

    def __init__(self, group: int) -> None:
        self.group = group
        if group == DH_CURVE25519:
            self._x25519 = x25519.X25519PrivateKey.generate()
            self.public = self._x25519.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        elif group in _ECP_CURVES:
            self._ecp = ec.generate_private_key(_ECP_CURVES[group][0]())
            # RFC 5903 §7: x ‖ y, without the X9.62 0x04 prefix.
            self.public = self._ecp.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        else:
            raise P3Error("IKE_INVALID_KE", f"DH group {group} unsupported")

    def shared_secret(self, peer_public: bytes) -> bytes:
        try:
            if self.group == DH_CURVE25519:
                if len(peer_public) != 32:
                    raise ValueError("X25519 share is 32 octets")
                shared = self._x25519.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
                if shared == bytes(32):  # RFC 8031 §2.3: a low-order point
                    raise ValueError("all-zero X25519 result")
                return shared
            curve, coordinate = _ECP_CURVES[self.group]
            if len(peer_public) != 2 * coordinate:
                raise ValueError(f"the share is {2 * coordinate} octets")
            point = ec.EllipticCurvePublicKey.from_encoded_point(curve(), b"\x04" + peer_public)
            # RFC 5903 §7: the shared secret is the x coordinate.
            return self._ecp.exchange(ec.ECDH(), point)
        except ValueError as error:
            raise P3Error("IKE_INVALID_KE", f"group {self.group} key share rejected: {error}") from None


# --- Proposals ----------------------------------------------------------------


def _ike_proposal(config: IkeProposalConfig, spi: bytes = b"") -> Proposal:
    transforms = [Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, bits) for bits in config.ike_key_bits]
    transforms += [Transform(TRANSFORM_PRF, prf_id) for prf_id in config.prf_ids]
    transforms += [Transform(TRANSFORM_DH, group) for group in config.dh_groups]
    return Proposal(1, PROTO_IKE, spi, tuple(transforms))


@dataclass(frozen=True)
class _IkeChoice:
    proposal_number: int
    key_bits: int
    prf_id: int
    dh_group: int

    def response_proposal(self) -> Proposal:
        return Proposal(self.proposal_number, PROTO_IKE, b"", (
            Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, self.key_bits),
            Transform(TRANSFORM_PRF, self.prf_id),
            Transform(TRANSFORM_DH, self.dh_group),
        ))


def _choose_ike(config: IkeProposalConfig, sa: SaPayload, ke_group: int) -> _IkeChoice:
    """Responder: the best acceptable IKE proposal (RFC 7296 §2.7).

    The DH group of the initiator's KE wins if acceptable; a proposal whose
    only acceptable groups differ from KE's asks for INVALID_KE_PAYLOAD.
    """
    wanted_group: int | None = None
    for proposal in sa.proposals:
        if proposal.protocol_id != PROTO_IKE or proposal.spi:
            continue
        if {t.transform_type for t in proposal.transforms} - IKE_TRANSFORM_TYPES:
            continue  # RFC 7296 §3.3.6: a transform type we do not understand makes it unacceptable
        plain = [t for t in proposal.transforms if not t.other_attributes]
        encrs = [t.key_length for t in plain if t.transform_type == TRANSFORM_ENCR
                 and t.transform_id == ENCR_AES_GCM_16]
        prfs = {t.transform_id for t in plain if t.transform_type == TRANSFORM_PRF}
        groups = {t.transform_id for t in plain if t.transform_type == TRANSFORM_DH}
        integs = {t.transform_id for t in proposal.transforms if t.transform_type == TRANSFORM_INTEG}
        if integs - {0}:  # RFC 5282 §8: an AEAD takes no integrity transform (or NONE)
            continue
        key_bits = next((b for b in config.ike_key_bits if b in encrs), None)
        prf_id = next((p for p in config.prf_ids if p in prfs), None)
        common_groups = [g for g in config.dh_groups if g in groups]
        if key_bits is None or prf_id is None or not common_groups:
            continue
        if ke_group in common_groups:
            return _IkeChoice(proposal.number, key_bits, prf_id, ke_group)
        wanted_group = wanted_group or common_groups[0]
    if wanted_group is not None:
        raise _Failure("IKE_INVALID_KE", f"initiator's KE uses group {ke_group}, group {wanted_group} is wanted",
                       N_INVALID_KE_PAYLOAD, wanted_group.to_bytes(2, "big"))
    raise _Failure("IKE_NO_PROPOSAL_CHOSEN", "no IKE proposal of the initiator is acceptable", N_NO_PROPOSAL_CHOSEN)


#: ESN transforms offered, preferred first. p3hw's own packets always carry 64-bit sequence
#: numbers (DESIGN.md §3); a standard peer that cannot do ESN (strongSwan's user-space
#: kernel-libipsec) may still pick "no ESN" for its child SA, which P3 data never uses.
ESN_OFFER: tuple[int, ...] = (ESN_YES, ESN_NONE)


def _esp_cipher_transforms(cipher: str) -> tuple[Transform, ...]:
    """The ESP encryption (and, for CTR, integrity) transforms that name a data cipher (keys.CIPHERS)."""
    _, bits, mode = cipher.split("-")
    key_bits = int(bits)
    if mode == "gcm":
        return (Transform(TRANSFORM_ENCR, ENCR_AES_GCM_16, key_bits),)
    if mode == "ccm":
        return (Transform(TRANSFORM_ENCR, ENCR_AES_CCM_16, key_bits),)
    return (Transform(TRANSFORM_ENCR, ENCR_AES_CTR, key_bits), Transform(TRANSFORM_INTEG, AUTH_HMAC_SHA2_256_128))


def _esp_transforms(cipher: str, esn: tuple[int, ...] = ESN_OFFER) -> tuple[Transform, ...]:
    return _esp_cipher_transforms(cipher) + tuple(Transform(TRANSFORM_ESN, value) for value in esn)


def _esp_proposals(ciphers: tuple[str, ...], p3_id: int) -> tuple[Proposal, ...]:
    spi = p3_id.to_bytes(4, "big")
    return tuple(Proposal(n, PROTO_ESP, spi, _esp_transforms(c)) for n, c in enumerate(ciphers, start=1))


def _choose_child(acceptable: tuple[str, ...], sa: SaPayload) -> tuple[Proposal, str, int, int]:
    """Responder: the first ESP proposal with a cipher we accept -> (proposal, cipher, peer's P3 ID, ESN)."""
    for proposal in sa.proposals:
        if proposal.protocol_id != PROTO_ESP or len(proposal.spi) != 4:
            continue
        peer_p3_id = int.from_bytes(proposal.spi, "big")
        if peer_p3_id == 0:
            continue
        if {t.transform_type for t in proposal.transforms} - ESP_TRANSFORM_TYPES:
            continue  # RFC 7296 §3.3.6: a transform type we do not understand makes it unacceptable
        groups = {t.transform_id for t in proposal.of_type(TRANSFORM_DH)}
        if groups and 0 not in groups:
            continue  # §1.2: IKE_AUTH carries no KE, so only DH "NONE" can be agreed
        esns = {t.transform_id for t in proposal.of_type(TRANSFORM_ESN)}
        esn = next((value for value in ESN_OFFER if value in esns), None)
        if esn is None:
            continue  # the ESN transform is mandatory for ESP (§3.3.3)
        for cipher in acceptable:
            wanted = _esp_cipher_transforms(cipher)
            integs = {t for t in proposal.of_type(TRANSFORM_INTEG) if t.transform_id != 0}
            # An AEAD takes no integrity transform (RFC 5282 §8; NONE is fine).
            if set(wanted) <= set(proposal.transforms) and (len(wanted) > 1 or not integs):
                return proposal, cipher, peer_p3_id, esn
    raise _Failure("IKE_NO_PROPOSAL_CHOSEN", "no child SA proposal with an acceptable data cipher",
                   N_NO_PROPOSAL_CHOSEN)


def _cipher_of(proposal: Proposal) -> tuple[str, int] | None:
    """Initiator: the data cipher and ESN value of the responder's one chosen proposal."""
    esns = proposal.of_type(TRANSFORM_ESN)
    if len(esns) != 1 or esns[0].transform_id not in ESN_OFFER:
        return None
    for cipher in CIPHERS:
        if set(proposal.transforms) == set(_esp_transforms(cipher, (esns[0].transform_id,))):
            return cipher, esns[0].transform_id
    return None


def _narrow(proposed: tuple[TrafficSelector, ...], allowed: tuple[TrafficSelector, ...]) -> tuple[TrafficSelector, ...]:
    result: list[TrafficSelector] = []
    for offer in proposed:
        for limit in allowed:
            common = offer.intersect(limit)
            if common is not None and common not in result:
                result.append(common)
    return tuple(result)


def _covered(selectors: tuple[TrafficSelector, ...], offered: tuple[TrafficSelector, ...]) -> bool:
    """Every selector lies within one we offered (a responder may only narrow)."""
    return all(any(s.intersect(o) == s for o in offered) for s in selectors)


# --- Authentication (RFC 7296 §2.15) -----------------------------------------------


def _id_body(identity: Identity) -> bytes:
    return IdPayload(identity).encode_body()  # IDType | RESERVED | data, the same for IDi and IDr


def signed_octets(prf: PrfAlgorithm, message: bytes, peer_nonce: bytes, sk_p: bytes, identity: Identity) -> bytes:
    """<Initiator|Responder>SignedOctets = RealMessage | peer's Nonce data | prf(SK_p, ID body)."""
    return message + peer_nonce + prf.function(sk_p, _id_body(identity))


def psk_auth_data(prf: PrfAlgorithm, psk: bytes, message: bytes, peer_nonce: bytes, sk_p: bytes,
                  identity: Identity) -> bytes:
    """AUTH = prf(prf(PSK, "Key Pad for IKEv2"), <SignedOctets>) (RFC 7296 §2.15)."""
    return prf.function(prf.function(psk, PSK_KEY_PAD), signed_octets(prf, message, peer_nonce, sk_p, identity))


#: RFC 7427 §3 / Appendix A.4.3: AlgorithmIdentifier of ecdsa-with-SHA256 (1.2.840.10045.4.3.2), DER.
ECDSA_SHA256_ALGORITHM_ID = bytes.fromhex("300a06082a8648ce3d040302")
#: RFC 7427 §4 / RFC 7427 IANA: hash algorithm SHA2-256 in SIGNATURE_HASH_ALGORITHMS.
HASH_SHA2_256 = 2


@dataclass(frozen=True)
class CertificateCredentials:
    """ECDSA P-256 certificate authentication (RFC 7427, AUTH method 14).

    *certificate* and *private_key* are this side's; *trust_anchors* are
    the CAs whose direct signature on the peer's certificate we accept.
    """

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey
    trust_anchors: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey) or self.private_key.curve.name != "secp256r1":
            raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", "certificate authentication needs an ECDSA P-256 key")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _offers_sha256_signatures(message: IkeMessage) -> bool:
    """RFC 7427 §4: method 14 is only used toward a peer that sent SIGNATURE_HASH_ALGORITHMS."""
    notify = message.notify(N_SIGNATURE_HASH_ALGORITHMS)
    if notify is None:
        return False
    data = notify.notification_data
    return HASH_SHA2_256 in {int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data) - 1, 2)}


def _signature_hash_notify() -> NotifyPayload:
    return NotifyPayload(N_SIGNATURE_HASH_ALGORITHMS, HASH_SHA2_256.to_bytes(2, "big"))


def _signature_auth(credentials: CertificateCredentials, octets: bytes) -> list[Payload]:
    """CERT and AUTH (method 14): ASN.1 length | AlgorithmIdentifier | DER ECDSA signature."""
    signature = credentials.private_key.sign(octets, ec.ECDSA(hashes.SHA256()))
    auth_data = bytes([len(ECDSA_SHA256_ALGORITHM_ID)]) + ECDSA_SHA256_ALGORITHM_ID + signature
    der = credentials.certificate.public_bytes(serialization.Encoding.DER)
    return [CertPayload(CERT_X509_SIGNATURE, der), AuthPayload(AUTH_DIGITAL_SIGNATURE, auth_data)]


def _identity_in_certificate(certificate: x509.Certificate, identity: Identity) -> bool:
    """RFC 7296 §3.5 / RFC 4945: the ID must appear as a subjectAltName of the certificate."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    if identity.id_type in (ID_IPV4_ADDR, ID_IPV6_ADDR):
        return ipaddress.ip_address(identity.data) in names.get_values_for_type(x509.IPAddress)
    text = identity.data.decode("ascii", "replace").lower()
    if identity.id_type == ID_FQDN:
        return text in (name.lower() for name in names.get_values_for_type(x509.DNSName))
    if identity.id_type == ID_RFC822_ADDR:
        return text in (name.lower() for name in names.get_values_for_type(x509.RFC822Name))
    return False


def _verify_signature_auth(credentials: CertificateCredentials | None, cert: CertPayload | None, auth: AuthPayload,
                           octets: bytes, identity: Identity, at: datetime) -> None:
    """Check the peer's certificate (direct issuer, validity, ID binding) and its AUTH signature."""
    try:
        _check_certificate_and_signature(credentials, cert, auth, octets, identity, at)
    except (ValueError, TypeError):
        # A certificate that parses lazily can still fail deep inside (odd
        # names, extensions): it authenticates nothing.
        raise _Failure("IKE_AUTHENTICATION_FAILED", f"{identity}: the certificate is malformed",
                       N_AUTHENTICATION_FAILED) from None


def _check_certificate_and_signature(credentials: CertificateCredentials | None, cert: CertPayload | None,
                                     auth: AuthPayload, octets: bytes, identity: Identity, at: datetime) -> None:
    def refuse(detail: str) -> _Failure:
        return _Failure("IKE_AUTHENTICATION_FAILED", f"{identity}: {detail}", N_AUTHENTICATION_FAILED)

    if credentials is None:
        raise refuse("signature authentication used but no trust anchor is configured")
    if cert is None or cert.encoding != CERT_X509_SIGNATURE:
        raise refuse("no X.509 certificate payload")
    try:
        certificate = x509.load_der_x509_certificate(cert.cert_data)
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise refuse("the certificate does not parse, or its key type is unknown") from None
    issuers = [a for a in credentials.trust_anchors if a.subject == certificate.issuer]
    for anchor in issuers:
        try:
            certificate.verify_directly_issued_by(anchor)
            break
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
    else:
        raise refuse("the certificate is not signed by a trusted CA")
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise refuse(f"the certificate is not valid at {at.isoformat()}")
    if not _identity_in_certificate(certificate, identity):
        raise refuse("the identity is not a subjectAltName of its certificate")
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise refuse("the certificate key is not ECDSA P-256")
    data = auth.auth_data
    if not data:
        raise refuse("AUTH payload is empty")
    id_length = data[0]
    if data[1:1 + id_length] != ECDSA_SHA256_ALGORITHM_ID:
        raise refuse("AUTH signature algorithm is not ecdsa-with-SHA256")
    try:
        public_key.verify(data[1 + id_length:], octets, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise refuse("AUTH signature does not verify") from None


def _error_reason(notifies: list[NotifyPayload]) -> tuple[str, int] | None:
    for notify in notifies:
        return _NOTIFY_REASONS.get(notify.notify_type, "IKE_UNEXPECTED"), notify.notify_type
    return None


def _address_of(identity: Identity | None) -> str | None:
    if identity is None or identity.id_type not in (ID_IPV4_ADDR, ID_IPV6_ADDR):
        return None
    return str(ipaddress.ip_address(identity.data))


def _nat_detection(spi_i: bytes, spi_r: bytes, source: tuple[str, int], destination: tuple[str, int],
                   ) -> list[Payload]:
    """RFC 7296 §2.23. p3hw always runs IKE and data on UDP with the non-ESP marker, NAT or not;
    the notifies tell a standard peer that it may do the same (strongSwan's user-space ESP must)."""
    return [NotifyPayload(N_NAT_DETECTION_SOURCE_IP, nat_detection_hash(spi_i, spi_r, *source)),
            NotifyPayload(N_NAT_DETECTION_DESTINATION_IP, nat_detection_hash(spi_i, spi_r, *destination))]


def _random_nonzero(rng: Callable[[int], bytes], size: int) -> bytes:
    while True:
        value = rng(size)
        if any(value):
            return value


# --- Initiator (the secondary) -------------------------------------------------------


class InitiatorState(Enum):
    IDLE = "idle"
    INIT_SENT = "ike_sa_init sent"
    AUTH_SENT = "ike_auth sent"
    ESTABLISHED = "established"
    FAILED = "failed"


class InitiatorHandshake:
    """The secondary's side of the initial exchange.

    *inbound_p3_id* is the P3 ID this side allocated for what it receives;
    it travels as the child SA's SPI. *remote_identity*, when given, is what
    the primary's IDr must be. Authentication is by *psk* (method 2), or by
    certificate (method 14) when *credentials* are given; the primary must
    answer with the same method.
    """

    def __init__(
        self,
        local_identity: Identity,
        psk: bytes | None,
        *,
        credentials: CertificateCredentials | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
        data_ciphers: tuple[str, ...] = ("aes-256-gcm",),
        proposals: IkeProposalConfig | None = None,
        remote_identity: Identity | None = None,
        ts_i: tuple[TrafficSelector, ...] = ANY_SELECTORS,
        ts_r: tuple[TrafficSelector, ...] = ANY_SELECTORS,
        inbound_p3_id: int | None = None,
        retransmit_timeouts_s: tuple[float, ...] = IKE_RETRANSMIT_TIMEOUTS_S,
        rng: Callable[[int], bytes] = os.urandom,
        local_port: int = DEFAULT_PORT,
        remote_port: int = DEFAULT_PORT,
    ) -> None:
        for cipher in data_ciphers:
            if cipher not in CIPHERS:
                raise P3Error("DP_BAD_CIPHER", f"unknown data cipher {cipher!r}")
        if psk is None and credentials is None:
            raise P3Error("CONFIG_MISSING_VALUE", "the initiator needs a pre-shared key or a certificate")
        if not data_ciphers or not retransmit_timeouts_s:
            raise P3Error("CONFIG_MISSING_VALUE", "the initiator needs a data cipher and a retransmission schedule")
        self.local_identity = local_identity
        self.remote_identity = remote_identity
        local_ip, remote_ip = _address_of(local_identity), _address_of(remote_identity)
        # NAT_DETECTION needs both addresses: known when both sides are identified by them.
        self._nat_endpoints: tuple[tuple[str, int], tuple[str, int]] | None = (
            ((local_ip, local_port), (remote_ip, remote_port)) if local_ip and remote_ip else None)
        self._psk = psk
        self._credentials = credentials
        self._wall_clock = wall_clock
        self.data_ciphers = data_ciphers
        self.proposals = proposals or IkeProposalConfig()
        self.ts_i, self.ts_r = ts_i, ts_r
        self._rng = rng
        self.inbound_p3_id = inbound_p3_id if inbound_p3_id is not None else P3IdAllocator(rng).allocate()
        if not 0 < self.inbound_p3_id <= 0xFFFFFFFF:
            raise P3Error("DP_BAD_ARGUMENT", f"P3 ID {self.inbound_p3_id} out of range")
        self._timeouts = retransmit_timeouts_s
        self.state = InitiatorState.IDLE
        self.result: HandshakeEstablished | HandshakeFailed | None = None
        self._events: deque[HandshakeEvent] = deque()
        self.spi_i = _random_nonzero(rng, 8)
        self.spi_r = bytes(8)
        self.nonce_i = rng(NONCE_BYTES)
        self._dh = _DhKey(self.proposals.dh_groups[0])
        self._cookie: bytes | None = None
        self._restarts = 0
        self._init_request = b""
        self._init_response = b""
        self._outstanding = b""
        self._attempt = 0
        self._deadline: float | None = None
        self._next_iv = 0
        self._ike_keys: IkeSaKeys | None = None
        self._prf: PrfAlgorithm | None = None
        self._choice: _IkeChoice | None = None
        self._nonce_r = b""
        self.transmissions = 0
        #: after the exchange: answers the primary's requests (RFC 7296 §1.4) for the IKE SA's life
        self.ike_sa: IkeSaRequests | None = None
        # IKE_AUTH authenticated the primary but its child SA failed: the IKE SA is deleted
        self._delete_ike_sa_on_failure = False

    # -- public surface --

    def start(self, now: float) -> list[bytes]:
        if self.state is not InitiatorState.IDLE:
            raise P3Error("IKE_UNEXPECTED", "the initial exchange was already started")
        return self._send_init(now)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        if self.ike_sa is not None:
            return self._on_request(data)
        if self.state not in (InitiatorState.INIT_SENT, InitiatorState.AUTH_SENT):
            self._drop("IKE_UNEXPECTED", f"datagram in state {self.state.value}")
            return []
        try:
            message = decode_message(data)
            if message.spi_i != self.spi_i or not message.is_response:
                raise P3Error("IKE_UNEXPECTED", "not a response to our request (the secondary accepts no requests)")
            if self.state is InitiatorState.INIT_SENT:
                return self._on_init_response(message, data, now)
            return self._on_auth_response(message, now)
        except P3Error as error:
            # Spoofed or damaged datagrams must not end the exchange: drop and
            # keep retransmitting (RFC 7296 §2.21.1).
            self._drop(error.reason.name, error.detail)
            return []
        except _Failure as failure:
            return self._fail(failure)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> list[bytes]:
        if self._deadline is None or now < self._deadline:
            return []
        self._attempt += 1
        if self._attempt >= len(self._timeouts):
            total = sum(self._timeouts)
            return self._fail(_Failure("IKE_TIMEOUT", f"no answer from the primary after {self._attempt} "
                                       f"transmissions over {total:g} s"))
        self._deadline = now + self._timeouts[self._attempt]
        self.transmissions += 1
        return [self._outstanding]

    def events(self) -> list[HandshakeEvent]:
        """What happened since the last call, in order (established, failed, dropped)."""
        out = list(self._events)
        self._events.clear()
        return out

    # -- IKE_SA_INIT --

    def _send_init(self, now: float) -> list[bytes]:
        payloads: list[Payload] = []
        if self._cookie is not None:
            # RFC 7296 §2.6: the COOKIE notify comes first, all else unchanged.
            payloads.append(NotifyPayload(N_COOKIE, self._cookie))
        payloads += [
            SaPayload((_ike_proposal(self.proposals),)),
            KePayload(self._dh.group, self._dh.public),
            NoncePayload(self.nonce_i),
        ]
        if self._credentials is not None:
            payloads.append(_signature_hash_notify())
        if self._nat_endpoints is not None:
            payloads += _nat_detection(self.spi_i, bytes(8), *self._nat_endpoints)
        request = encode_message(IkeMessage(self.spi_i, bytes(8), IKE_SA_INIT, FLAG_INITIATOR, 0, payloads))
        self._init_request = request
        self.state = InitiatorState.INIT_SENT
        return self._transmit(request, now)

    def _transmit(self, request: bytes, now: float) -> list[bytes]:
        self._outstanding = request
        self._attempt = 0
        self._deadline = now + self._timeouts[0]
        self.transmissions += 1
        return [request]

    def _on_init_response(self, message: IkeMessage, data: bytes, now: float) -> list[bytes]:
        if message.exchange_type != IKE_SA_INIT or message.message_id != 0:
            raise P3Error("IKE_UNEXPECTED", "expected the IKE_SA_INIT response")
        cookie = message.notify(N_COOKIE)
        if cookie is not None:
            if self._restarts >= MAX_RESTARTS or not 1 <= len(cookie.notification_data) <= 64:
                raise _Failure("IKE_COOKIE_REQUIRED", "the primary keeps asking for cookies")
            self._restarts += 1
            self._cookie = cookie.notification_data
            return self._send_init(now)
        invalid_ke = message.notify(N_INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            group = int.from_bytes(invalid_ke.notification_data[:2], "big")
            if group not in self.proposals.dh_groups or group == self._dh.group or self._restarts >= MAX_RESTARTS:
                raise _Failure("IKE_INVALID_KE", f"the primary wants DH group {group}, which we cannot use")
            self._restarts += 1
            self._dh = _DhKey(group)
            return self._send_init(now)
        error = _error_reason(message.error_notifies())
        if error is not None:
            raise _Failure(error[0], f"the primary refused IKE_SA_INIT with notify {error[1]}", error[1],
                           tell_peer=False)
        sa, ke, nonce = message.first(SaPayload), message.first(KePayload), message.first(NoncePayload)
        if not isinstance(sa, SaPayload) or not isinstance(ke, KePayload) or not isinstance(nonce, NoncePayload):
            raise P3Error("IKE_MALFORMED", "IKE_SA_INIT response lacks SA, KE or Nonce")
        if message.spi_r == bytes(8):
            raise P3Error("IKE_MALFORMED", "IKE_SA_INIT response with a zero responder SPI")
        choice = self._check_ike_choice(sa, ke)
        if self._credentials is not None and not _offers_sha256_signatures(message):
            raise _Failure("IKE_AUTHENTICATION_FAILED", "the primary does not accept ECDSA-SHA-256 signatures "
                           "(no SIGNATURE_HASH_ALGORITHMS, RFC 7427)")
        if len(nonce.nonce) < MIN_PEER_NONCE_BYTES:
            raise _Failure("IKE_MALFORMED", f"the primary's nonce has {len(nonce.nonce)} octets, "
                           f"{MIN_PEER_NONCE_BYTES} required")
        shared = self._dh.shared_secret(ke.key_data)
        self.spi_r = message.spi_r
        self._init_response = data  # the responder's AUTH signs it (RFC 7296 §2.15)
        self._nonce_r = nonce.nonce
        self._choice = choice
        self._prf = prf_by_id(choice.prf_id)
        self._ike_keys = derive_ike_sa_keys(choice.prf_id, choice.key_bits // 8, shared, self.nonce_i,
                                            self._nonce_r, self.spi_i, self.spi_r)
        return self._send_auth(now)

    def _check_ike_choice(self, sa: SaPayload, ke: KePayload) -> _IkeChoice:
        """The responder must pick exactly one of each from what we offered."""
        if len(sa.proposals) != 1:
            raise _Failure("IKE_NO_PROPOSAL_CHOSEN", "the primary's SA does not hold exactly one proposal")
        proposal = sa.proposals[0]
        encrs = proposal.of_type(TRANSFORM_ENCR)
        prfs = proposal.of_type(TRANSFORM_PRF)
        groups = proposal.of_type(TRANSFORM_DH)
        if (proposal.protocol_id != PROTO_IKE or len(encrs) != 1 or len(prfs) != 1 or len(groups) != 1
                or encrs[0].transform_id != ENCR_AES_GCM_16 or encrs[0].key_length not in self.proposals.ike_key_bits
                or prfs[0].transform_id not in self.proposals.prf_ids
                or groups[0].transform_id != self._dh.group or ke.dh_group != self._dh.group):
            raise _Failure("IKE_NO_PROPOSAL_CHOSEN", "the primary chose transforms we did not offer")
        assert encrs[0].key_length is not None
        return _IkeChoice(proposal.number, encrs[0].key_length, prfs[0].transform_id, self._dh.group)

    # -- IKE_AUTH --

    def _send_auth(self, now: float) -> list[bytes]:
        assert self._ike_keys is not None and self._prf is not None
        octets = signed_octets(self._prf, self._init_request, self._nonce_r, self._ike_keys.sk_pi,
                               self.local_identity)
        payloads: list[Payload] = [IdPayload(self.local_identity)]
        if self._credentials is not None:
            payloads += _signature_auth(self._credentials, octets)
        else:
            assert self._psk is not None
            auth = psk_auth_data(self._prf, self._psk, self._init_request, self._nonce_r, self._ike_keys.sk_pi,
                                 self.local_identity)
            payloads.append(AuthPayload(AUTH_SHARED_KEY_MIC, auth))
        payloads += [
            SaPayload(_esp_proposals(self.data_ciphers, self.inbound_p3_id)),
            TsPayload(self.ts_i),
            TsPayload(self.ts_r, responder=True),
        ]
        request = self._seal(IkeMessage(self.spi_i, self.spi_r, IKE_AUTH, FLAG_INITIATOR, 1, payloads))
        self.state = InitiatorState.AUTH_SENT
        return self._transmit(request, now)

    def _seal(self, message: IkeMessage) -> bytes:
        assert self._ike_keys is not None
        iv = self._next_iv.to_bytes(8, "big")
        self._next_iv += 1
        return encode_encrypted_message(message, self._ike_keys.encryption_key_i, self._ike_keys.salt_i, iv)

    def _on_auth_response(self, message: IkeMessage, now: float) -> list[bytes]:
        assert self._ike_keys is not None and self._prf is not None and self._choice is not None
        if message.exchange_type != IKE_AUTH or message.message_id != 1 or message.spi_r != self.spi_r:
            raise P3Error("IKE_UNEXPECTED", "expected the IKE_AUTH response")
        opened = decrypt_message(message, self._ike_keys.encryption_key_r, self._ike_keys.salt_r)
        error = _error_reason(opened.error_notifies())
        id_r, auth = opened.first(IdPayload), opened.first(AuthPayload)
        if error is not None:
            # RFC 7296 §2.21.2: beside a valid IDr and AUTH the error is the child SA's, and the
            # IKE SA is up at the primary: without a child it is of no use, so we delete it.
            if isinstance(id_r, IdPayload) and id_r.responder and isinstance(auth, AuthPayload):
                try:
                    self._check_responder_auth(opened, id_r, auth)
                    self._delete_ike_sa_on_failure = True
                except _Failure:
                    pass
            raise _Failure(error[0], f"the primary refused IKE_AUTH with notify {error[1]}", error[1],
                           tell_peer=False)
        sa, tss = opened.first(SaPayload), opened.all(TsPayload)
        ts_i = next((t for t in tss if isinstance(t, TsPayload) and not t.responder), None)
        ts_r = next((t for t in tss if isinstance(t, TsPayload) and t.responder), None)
        if (not isinstance(id_r, IdPayload) or not id_r.responder or not isinstance(auth, AuthPayload)
                or not isinstance(sa, SaPayload) or ts_i is None or ts_r is None):
            raise _Failure("IKE_MALFORMED", "IKE_AUTH response lacks IDr, AUTH, SA, TSi or TSr")
        self._check_responder_auth(opened, id_r, auth)
        if len(sa.proposals) != 1 or sa.proposals[0].protocol_id != PROTO_ESP or len(sa.proposals[0].spi) != 4:
            raise _Failure("IKE_NO_PROPOSAL_CHOSEN", "the primary's child SA is not one ESP proposal")
        chosen = _cipher_of(sa.proposals[0])
        responder_p3_id = int.from_bytes(sa.proposals[0].spi, "big")
        if chosen is None or chosen[0] not in self.data_ciphers or responder_p3_id == 0:
            raise _Failure("IKE_NO_PROPOSAL_CHOSEN", "the primary chose a data cipher we did not offer")
        cipher, esn = chosen
        if not _covered(ts_i.selectors, self.ts_i) or not _covered(ts_r.selectors, self.ts_r):
            raise _Failure("IKE_TS_UNACCEPTABLE", "the primary widened our traffic selectors")
        keys = derive_session_keys(self._choice.prf_id, self._ike_keys.sk_d, self.nonce_i, self._nonce_r, cipher,
                                   self.inbound_p3_id, responder_p3_id, initiator=True)
        self._finish(HandshakeEstablished(
            keys=keys, peer_identity=id_r.identity, spi_i=self.spi_i, spi_r=self.spi_r,
            prf_id=self._choice.prf_id, dh_group=self._choice.dh_group, ike_key_bits=self._choice.key_bits,
            data_cipher=cipher, ts_i=ts_i.selectors, ts_r=ts_r.selectors, ike_keys=self._ike_keys,
            esn=esn == ESN_YES))
        self.ike_sa = IkeSaRequests(
            self.spi_i, self.spi_r, original_initiator=True,
            keys_in=(self._ike_keys.encryption_key_r, self._ike_keys.salt_r),
            keys_out=(self._ike_keys.encryption_key_i, self._ike_keys.salt_i), next_iv=self._next_iv,
            child_spis=(self.inbound_p3_id.to_bytes(4, "big"), sa.proposals[0].spi))
        return []

    def close(self) -> list[bytes]:
        """The secondary gives this IKE SA up (it starts a new one): tell the primary (RFC 7296 §1.4.1)."""
        if self.ike_sa is None or self.ike_sa.deleted:
            return []
        return [self.ike_sa.delete_request(2)]  # our own requests so far: IKE_SA_INIT 0, IKE_AUTH 1

    def _on_request(self, data: bytes) -> list[bytes]:
        """The primary's request on the established IKE SA: answered for as long as it lives."""
        assert self.ike_sa is not None
        try:
            message = decode_message(data)
            if (message.spi_i, message.spi_r) != (self.spi_i, self.spi_r):
                raise P3Error("IKE_UNEXPECTED", "not a request on our IKE SA")
            answers, request = self.ike_sa.receive(message, data)
        except P3Error as error:
            self._drop(error.reason.name, error.detail)
            return []
        if request is not None and (request.deletes_ike_sa or request.deletes_child_sa):
            identity = self.result.peer_identity if isinstance(self.result, HandshakeEstablished) else None
            self._events.append(PeerDeletedSa(request.deletes_ike_sa, identity))
        return answers

    def _check_responder_auth(self, opened: IkeMessage, id_r: IdPayload, auth: AuthPayload) -> None:
        """The primary's IDr and AUTH (RFC 7296 §2.15, RFC 7427): _Failure unless they check out."""
        assert self._ike_keys is not None and self._prf is not None
        if self.remote_identity is not None and id_r.identity != self.remote_identity:
            raise self._auth_failure(f"the primary identified as {id_r.identity}, expected {self.remote_identity}")
        if self._credentials is not None:
            if auth.method != AUTH_DIGITAL_SIGNATURE:
                raise self._auth_failure(f"the primary used AUTH method {auth.method}, a certificate was expected")
            octets = signed_octets(self._prf, self._init_response, self.nonce_i, self._ike_keys.sk_pr, id_r.identity)
            cert = opened.first(CertPayload)
            _verify_signature_auth(self._credentials, cert if isinstance(cert, CertPayload) else None, auth, octets,
                                   id_r.identity, self._wall_clock())
        else:
            assert self._psk is not None
            expected = psk_auth_data(self._prf, self._psk, self._init_response, self.nonce_i,
                                     self._ike_keys.sk_pr, id_r.identity)
            if auth.method != AUTH_SHARED_KEY_MIC or not hmac.compare_digest(auth.auth_data, expected):
                raise self._auth_failure("the primary's AUTH does not verify: the pre-shared keys differ")

    def _auth_failure(self, detail: str) -> _Failure:
        # RFC 7296 §2.21.2: the responder is told in an INFORMATIONAL request.
        return _Failure("IKE_AUTHENTICATION_FAILED", detail, N_AUTHENTICATION_FAILED)

    # -- endings --

    def _fail(self, failure: _Failure) -> list[bytes]:
        out: list[bytes] = []
        if failure.tell_peer and failure.notify_type is not None and self.state is InitiatorState.AUTH_SENT:
            out.append(self._seal(IkeMessage(self.spi_i, self.spi_r, INFORMATIONAL, FLAG_INITIATOR, 2,
                                             [NotifyPayload(failure.notify_type)])))
        elif self._delete_ike_sa_on_failure:  # RFC 7296 §1.4.1; the answer changes nothing, so not awaited
            out.append(self._seal(IkeMessage(self.spi_i, self.spi_r, INFORMATIONAL, FLAG_INITIATOR, 2,
                                             [DeletePayload(PROTO_IKE)])))
        self.state = InitiatorState.FAILED
        self._deadline = None
        self._finish(HandshakeFailed(failure.error.code, failure.error.detail, failure.notify_type))
        return out

    def _finish(self, event: HandshakeEstablished | HandshakeFailed) -> None:
        if isinstance(event, HandshakeEstablished):
            self.state = InitiatorState.ESTABLISHED
        self._deadline = None
        self.result = event
        self._events.append(event)

    def _drop(self, reason_name: str, detail: str) -> None:
        self._events.append(MessageDropped(P3Error(reason_name, detail).code, detail))


# --- Responder (the primary) -----------------------------------------------------


#: expires_at of an IKE SA that lives until it is deleted or replaced
_NEVER = float("inf")


class _ExchangeState(Enum):
    HALF_OPEN = "half-open"
    ESTABLISHED = "established"
    FAILED = "failed"


@dataclass
class _Exchange:
    """One initiator's IKE SA as the responder sees it."""

    peer_addr: object
    spi_i: bytes
    spi_r: bytes
    nonce_i: bytes
    nonce_r: bytes
    choice: _IkeChoice
    ike_keys: IkeSaKeys
    init_request: bytes
    init_response: bytes
    expires_at: float
    state: _ExchangeState = _ExchangeState.HALF_OPEN
    # Requests already answered, by message id: (request bytes, response bytes).
    answered: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    next_iv: int = 0
    peer_identity: Identity | None = None
    # After IKE_AUTH authenticated the secondary: the IKE SA answers its requests (RFC 7296 §1.4).
    ike_sa: IkeSaRequests | None = None


class ResponderHandshake:
    """The primary's front door for initial exchanges from any number of secondaries.

    ``receive(data, now, peer_addr)`` returns the datagrams to send back to
    *peer_addr*. *peer_for* finds a configured secondary by its IDi
    (ID_IPV4_ADDR / ID_IPV6_ADDR = its configured address, or ID_FQDN /
    ID_KEY_ID); None means unknown: AUTHENTICATION_FAILED to the peer,
    P3-E310 here. *allocate_p3_id* gives the P3 ID for a new inbound SA.
    *credentials* (the primary's certificate and the CAs it trusts) serve
    secondaries whose policy has no pre-shared key.
    """

    def __init__(
        self,
        local_identity: Identity,
        peer_for: Callable[[Identity], PeerPolicy | None],
        *,
        proposals: IkeProposalConfig | None = None,
        allocate_p3_id: Callable[[], int] | None = None,
        cookie_threshold: int = DEFAULT_COOKIE_THRESHOLD,
        half_open_timeout_s: float = HALF_OPEN_TIMEOUT_S,
        credentials: CertificateCredentials | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.local_identity = local_identity
        self._credentials = credentials
        self._wall_clock = wall_clock
        self._peer_for = peer_for
        self.proposals = proposals or IkeProposalConfig()
        self._rng = rng
        self._allocate_p3_id = allocate_p3_id or P3IdAllocator(rng).allocate
        self.cookie_threshold = cookie_threshold
        self.half_open_timeout_s = half_open_timeout_s
        # (version, secret), current first: cookies of the previous secret stay valid after a rotation
        self._cookie_secrets: list[tuple[int, bytes]] = [(1, rng(32))]
        self._by_init: dict[tuple[object, bytes], _Exchange] = {}
        self._by_spi_r: dict[bytes, _Exchange] = {}
        self._events: deque[HandshakeEvent] = deque()
        self.cookies_sent = 0
        self.retransmits_answered = 0
        #: INFORMATIONAL requests (liveness checks, DELETEs) answered on established IKE SAs
        self.informational_answered = 0

    # -- public surface --

    @property
    def half_open_count(self) -> int:
        return sum(1 for e in self._by_spi_r.values() if e.state is _ExchangeState.HALF_OPEN)

    def receive(self, data: bytes, now: float, peer_addr: object = None) -> list[bytes]:
        self.handle_timer(now)
        try:
            try:
                message = decode_message(data)
            except (UnsupportedMajorVersion, UnsupportedCriticalPayload) as refused:
                self._events.append(MessageDropped(refused.code, refused.detail, peer_addr))
                return self._refusal(data, refused)
            if message.is_response:
                raise P3Error("IKE_UNEXPECTED", "the primary sends no requests, so takes no responses")
            if message.exchange_type == IKE_SA_INIT:
                return self._on_init(message, data, now, peer_addr)
            exchange = self._by_spi_r.get(message.spi_r)
            if exchange is None or exchange.spi_i != message.spi_i:
                raise P3Error("IKE_UNEXPECTED", "no IKE SA with these SPIs")
            if exchange.ike_sa is not None:
                return self._on_established_request(exchange, message, data, now)
            answered = exchange.answered.get(message.message_id)
            if answered is not None:
                if answered[0] != data:
                    raise P3Error("IKE_UNEXPECTED", f"a different request reuses message id {message.message_id}")
                self.retransmits_answered += 1
                return [answered[1]]  # RFC 7296 §2.1: a retransmit is answered, not re-processed
            if message.exchange_type == IKE_AUTH and message.message_id == 1:
                return self._on_auth(exchange, message, data, now)
            raise P3Error("IKE_UNEXPECTED", f"exchange {message.exchange_type} id {message.message_id} unexpected")
        except P3Error as error:
            self._events.append(MessageDropped(error.code, error.detail, peer_addr))
            return []

    def get_timer(self) -> float | None:
        expiries = [e.expires_at for e in self._by_spi_r.values() if e.expires_at != _NEVER]
        return min(expiries, default=None)

    def handle_timer(self, now: float) -> list[bytes]:
        for exchange in [e for e in self._by_spi_r.values() if e.expires_at <= now]:
            self._forget(exchange)
        return []

    def events(self) -> list[HandshakeEvent]:
        """What happened since the last call, in order (established, failed, dropped)."""
        out = list(self._events)
        self._events.clear()
        return out

    def _refusal(self, data: bytes, refused: P3Error) -> list[bytes]:
        """RFC 7296 §2.5: the unauthenticated answer to a request this side cannot read."""
        header = decode_header(data)
        if header is None or header.is_response:
            return []
        if isinstance(refused, UnsupportedMajorVersion):
            return [invalid_major_version_reply(header)]
        if isinstance(refused, UnsupportedCriticalPayload) and header.exchange_type == IKE_SA_INIT:
            # Outside IKE_SA_INIT the payload sits in front of SK: nothing authenticates it.
            notify = NotifyPayload(N_UNSUPPORTED_CRITICAL_PAYLOAD, bytes([refused.payload_type]))
            return [self._plain_reply(header, notify)]
        return []

    # -- cookies (RFC 7296 §2.6) --

    def set_cookie_secret(self, version: int, secret: bytes) -> None:
        """Rotate the cookie secret (the packet worker answers cookies with the same one, under load).

        Cookies made with the secret before stay valid until the next rotation.
        """
        if not 0 <= version <= 255 or not 1 <= len(secret) <= 64:
            raise P3Error("DP_BAD_ARGUMENT", f"cookie secret version {version}, {len(secret)} octets")
        self._cookie_secrets = [(version, secret), self._cookie_secrets[0]]

    def _cookie_for(self, nonce_i: bytes, peer_addr: object, spi_i: bytes, version: int | None = None) -> bytes:
        # Cookie = <secret version> | HMAC-SHA-256(secret, Ni | IPi | SPIi)[0:16], IPi as 4 or 16
        # octets; native/src/ike_cookie.h makes the same in the packet worker.
        number, secret = next((s for s in self._cookie_secrets if s[0] == version), self._cookie_secrets[0])
        host = peer_addr[0] if isinstance(peer_addr, tuple) and peer_addr else peer_addr
        try:
            ip = ipaddress.ip_address(host).packed     # type: ignore[arg-type]
        except ValueError:
            ip = repr(host).encode()                   # a test's made-up address
        return bytes([number]) + hmac.new(secret, nonce_i + ip + spi_i, hashlib.sha256).digest()[:16]

    # -- IKE_SA_INIT --

    def _on_init(self, message: IkeMessage, data: bytes, now: float, peer_addr: object) -> list[bytes]:
        if message.message_id != 0 or message.spi_r != bytes(8) or not message.from_initiator:
            raise P3Error("IKE_MALFORMED", "IKE_SA_INIT request with a message id, responder SPI or flags set")
        known = self._by_init.get((peer_addr, message.spi_i))
        if known is not None:
            if known.init_request == data:
                self.retransmits_answered += 1
                return [known.init_response]
            raise P3Error("IKE_UNEXPECTED", "a second, different IKE_SA_INIT for an existing IKE SA")
        sa, ke, nonce = message.first(SaPayload), message.first(KePayload), message.first(NoncePayload)
        if not isinstance(sa, SaPayload) or not isinstance(ke, KePayload) or not isinstance(nonce, NoncePayload):
            raise P3Error("IKE_MALFORMED", "IKE_SA_INIT request lacks SA, KE or Nonce")
        if self.half_open_count >= self.cookie_threshold:
            offered = message.payloads[0] if message.payloads else None
            offered_cookie = (offered.notification_data if isinstance(offered, NotifyPayload)
                              and offered.notify_type == N_COOKIE else b"")
            version = offered_cookie[0] if offered_cookie else None
            if not (offered_cookie and hmac.compare_digest(
                    offered_cookie, self._cookie_for(nonce.nonce, peer_addr, message.spi_i, version))):
                self.cookies_sent += 1
                fresh = self._cookie_for(nonce.nonce, peer_addr, message.spi_i)
                return [self._plain_reply(message, NotifyPayload(N_COOKIE, fresh))]
        try:
            if len(nonce.nonce) < MIN_PEER_NONCE_BYTES:
                raise _Failure("IKE_MALFORMED", f"initiator nonce of {len(nonce.nonce)} octets, "
                               f"{MIN_PEER_NONCE_BYTES} required", N_INVALID_SYNTAX)
            choice = _choose_ike(self.proposals, sa, ke.dh_group)
            dh = _DhKey(choice.dh_group)
            try:
                shared = dh.shared_secret(ke.key_data)
            except P3Error as error:
                raise _Failure("IKE_INVALID_KE", error.detail, N_INVALID_SYNTAX) from None
        except _Failure as failure:
            assert failure.notify_type is not None
            if failure.notify_type != N_INVALID_KE_PAYLOAD:  # asking for another group is normal negotiation
                self._events.append(HandshakeFailed(failure.error.code, failure.error.detail, failure.notify_type,
                                                    peer_addr))
            return [self._plain_reply(message, NotifyPayload(failure.notify_type, failure.notify_data))]
        spi_r = _random_nonzero(self._rng, 8)
        nonce_r = self._rng(NONCE_BYTES)
        ike_keys = derive_ike_sa_keys(choice.prf_id, choice.key_bits // 8, shared, nonce.nonce, nonce_r,
                                      message.spi_i, spi_r)
        payloads: list[Payload] = [
            SaPayload((choice.response_proposal(),)),
            KePayload(dh.group, dh.public),
            NoncePayload(nonce_r),
        ]
        if self._credentials is not None and _offers_sha256_signatures(message):
            payloads.append(_signature_hash_notify())
        local_ip = _address_of(self.local_identity)
        if (message.notify(N_NAT_DETECTION_SOURCE_IP) is not None and local_ip is not None
                and isinstance(peer_addr, tuple) and len(peer_addr) == 2):
            payloads += _nat_detection(message.spi_i, spi_r, (local_ip, DEFAULT_PORT),
                                       (str(peer_addr[0]), int(peer_addr[1])))
        response = encode_message(IkeMessage(message.spi_i, spi_r, IKE_SA_INIT, FLAG_RESPONSE, 0, payloads))
        exchange = _Exchange(peer_addr, message.spi_i, spi_r, nonce.nonce, nonce_r, choice, ike_keys, data,
                             response, now + self.half_open_timeout_s)
        self._by_init[(peer_addr, message.spi_i)] = exchange
        self._by_spi_r[spi_r] = exchange
        return [response]

    def _plain_reply(self, request: IkeMessage, notify: NotifyPayload) -> bytes:
        """A stateless IKE_SA_INIT answer: SPIr zero (RFC 7296 §2.6, §2.7)."""
        return encode_message(IkeMessage(request.spi_i, bytes(8), IKE_SA_INIT, FLAG_RESPONSE, 0, [notify]))

    # -- IKE_AUTH --

    def _seal(self, exchange: _Exchange, exchange_type: int, message_id: int, payloads: list[Payload]) -> bytes:
        iv = exchange.next_iv.to_bytes(8, "big")
        exchange.next_iv += 1
        keys = exchange.ike_keys
        message = IkeMessage(exchange.spi_i, exchange.spi_r, exchange_type, FLAG_RESPONSE, message_id, payloads)
        return encode_encrypted_message(message, keys.encryption_key_r, keys.salt_r, iv)

    def _on_auth(self, exchange: _Exchange, message: IkeMessage, data: bytes, now: float) -> list[bytes]:
        if exchange.state is not _ExchangeState.HALF_OPEN:
            raise P3Error("IKE_UNEXPECTED", "IKE_AUTH for an exchange that is already over")
        keys = exchange.ike_keys
        try:
            try:
                opened = decrypt_message(message, keys.encryption_key_i, keys.salt_i)  # E307: dropped, not fatal
            except UnsupportedCriticalPayload as critical:  # authenticated, so answered (RFC 7296 §2.5)
                raise _Failure(critical.reason.name, critical.detail, N_UNSUPPORTED_CRITICAL_PAYLOAD,
                               bytes([critical.payload_type])) from None
            response, event, child_spis = self._authenticate(exchange, opened)
        except _Failure as failure:
            assert failure.notify_type is not None
            response = self._seal(exchange, IKE_AUTH, 1, [NotifyPayload(failure.notify_type, failure.notify_data)])
            exchange.state = _ExchangeState.FAILED
            self._events.append(HandshakeFailed(failure.error.code, failure.error.detail, failure.notify_type,
                                                exchange.peer_addr))
            exchange.answered[1] = (data, response)
            exchange.expires_at = now + FINISHED_EXCHANGE_KEEP_S
            return [response]
        # The secondary is authenticated: the IKE SA stands, with or without its child SA (RFC 7296
        # §2.21.2), and answers its requests until it is deleted or the secondary starts a new one.
        self._forget_older_sas(exchange)
        exchange.state = _ExchangeState.ESTABLISHED if isinstance(event, HandshakeEstablished) else _ExchangeState.FAILED
        self._events.append(event)
        exchange.ike_sa = IkeSaRequests(
            exchange.spi_i, exchange.spi_r, original_initiator=False, keys_in=(keys.encryption_key_i, keys.salt_i),
            keys_out=(keys.encryption_key_r, keys.salt_r), next_iv=exchange.next_iv, child_spis=child_spis,
            answered=(1, data, response))
        exchange.expires_at = _NEVER
        return [response]

    def _forget_older_sas(self, exchange: _Exchange) -> None:
        """A secondary that set up a new IKE SA has left its older ones (spec §2.1.7)."""
        for older in [e for e in self._by_spi_r.values() if e is not exchange and e.ike_sa is not None
                      and e.peer_identity == exchange.peer_identity]:
            self._forget(older)

    def _on_established_request(self, exchange: _Exchange, message: IkeMessage, data: bytes,
                                now: float) -> list[bytes]:
        """A request of the secondary's after IKE_AUTH: liveness check, DELETE, or the AUTH refusal."""
        assert exchange.ike_sa is not None
        answers, request = exchange.ike_sa.receive(message, data)
        if request is None:
            self.retransmits_answered += 1
            return answers
        if request.exchange_type == INFORMATIONAL:
            self.informational_answered += 1
        refused = _error_reason([NotifyPayload(n) for n in request.error_notifies])
        if refused is not None and exchange.state is _ExchangeState.ESTABLISHED:
            # RFC 7296 §2.21.2: the secondary rejected our AUTH; the session it reported is void.
            exchange.state = _ExchangeState.FAILED
            self._events.append(HandshakeFailed(reason(refused[0]).code, f"secondary {exchange.peer_identity} "
                                                f"rejected the primary's authentication (notify {refused[1]})",
                                                refused[1], exchange.peer_addr))
            exchange.expires_at = now + FINISHED_EXCHANGE_KEEP_S
        if request.deletes_ike_sa or request.deletes_child_sa:
            self._events.append(PeerDeletedSa(request.deletes_ike_sa, exchange.peer_identity, exchange.peer_addr))
        if request.deletes_ike_sa:
            exchange.expires_at = now + FINISHED_EXCHANGE_KEEP_S  # still answers a retransmitted DELETE
        return answers

    def _authenticate(self, exchange: _Exchange, opened: IkeMessage,
                      ) -> tuple[bytes, HandshakeEstablished | HandshakeFailed, tuple[bytes, bytes] | None]:
        """Check the secondary's AUTH, then set up the child SA.

        -> (response, event, child SPIs (ours, theirs) or None). A failure before
        the AUTH checks out raises _Failure; a child SA failure after it is
        notified next to IDr and AUTH (RFC 7296 §1.2, §2.21.2).
        """
        id_i, auth, sa = opened.first(IdPayload), opened.first(AuthPayload), opened.first(SaPayload)
        tss = [t for t in opened.all(TsPayload) if isinstance(t, TsPayload)]
        ts_i = next((t for t in tss if not t.responder), None)
        ts_r = next((t for t in tss if t.responder), None)
        if (not isinstance(id_i, IdPayload) or id_i.responder or not isinstance(auth, AuthPayload)
                or not isinstance(sa, SaPayload) or ts_i is None or ts_r is None):
            raise _Failure("IKE_MALFORMED", "IKE_AUTH request lacks IDi, AUTH, SA, TSi or TSr", N_INVALID_SYNTAX)
        identity = id_i.identity
        exchange.peer_identity = identity
        policy = self._peer_for(identity)
        if policy is None:
            raise _Failure("IKE_PEER_UNKNOWN", f"secondary {identity} is not configured", N_AUTHENTICATION_FAILED)
        prf = prf_by_id(exchange.choice.prf_id)
        wanted = AUTH_SHARED_KEY_MIC if policy.psk is not None else AUTH_DIGITAL_SIGNATURE
        if auth.method != wanted:
            raise _Failure("IKE_AUTHENTICATION_FAILED", f"secondary {identity} used AUTH method {auth.method}, "
                           f"method {wanted} is configured", N_AUTHENTICATION_FAILED)
        if policy.psk is not None:
            expected = psk_auth_data(prf, policy.psk, exchange.init_request, exchange.nonce_r,
                                     exchange.ike_keys.sk_pi, identity)
            if not hmac.compare_digest(auth.auth_data, expected):
                raise _Failure("IKE_AUTHENTICATION_FAILED", f"secondary {identity}: AUTH does not verify, the "
                               "pre-shared keys differ", N_AUTHENTICATION_FAILED)
        else:
            octets = signed_octets(prf, exchange.init_request, exchange.nonce_r, exchange.ike_keys.sk_pi, identity)
            cert = opened.first(CertPayload)
            _verify_signature_auth(self._credentials, cert if isinstance(cert, CertPayload) else None, auth, octets,
                                   identity, self._wall_clock())
        my_auth: list[Payload]
        if policy.psk is not None:
            my_auth = [AuthPayload(AUTH_SHARED_KEY_MIC, psk_auth_data(
                prf, policy.psk, exchange.init_response, exchange.nonce_i, exchange.ike_keys.sk_pr,
                self.local_identity))]
        else:
            assert self._credentials is not None  # _verify_signature_auth refused otherwise
            my_auth = _signature_auth(self._credentials, signed_octets(
                prf, exchange.init_response, exchange.nonce_i, exchange.ike_keys.sk_pr, self.local_identity))
        authenticated: list[Payload] = [IdPayload(self.local_identity, responder=True), *my_auth]
        try:
            proposal, cipher, initiator_p3_id, esn = _choose_child(policy.data_ciphers, sa)
            narrowed_i = _narrow(ts_i.selectors, policy.remote_selectors)
            narrowed_r = _narrow(ts_r.selectors, policy.local_selectors)
            if not narrowed_i or not narrowed_r:
                raise _Failure("IKE_TS_UNACCEPTABLE", f"secondary {identity}: traffic selectors outside its "
                               "configured subnets", N_TS_UNACCEPTABLE)
        except _Failure as child_failure:
            assert child_failure.notify_type is not None
            response = self._seal(exchange, IKE_AUTH, 1, [*authenticated, NotifyPayload(child_failure.notify_type)])
            return response, HandshakeFailed(child_failure.error.code, child_failure.error.detail,
                                             child_failure.notify_type, exchange.peer_addr), None
        responder_p3_id = self._allocate_p3_id()
        keys = derive_session_keys(exchange.choice.prf_id, exchange.ike_keys.sk_d, exchange.nonce_i,
                                   exchange.nonce_r, cipher, initiator_p3_id, responder_p3_id, initiator=False)
        our_spi = responder_p3_id.to_bytes(4, "big")
        child = Proposal(proposal.number, PROTO_ESP, our_spi, _esp_transforms(cipher, (esn,)))
        response = self._seal(exchange, IKE_AUTH, 1, [
            *authenticated,
            SaPayload((child,)),
            TsPayload(narrowed_i),
            TsPayload(narrowed_r, responder=True),
        ])
        choice = exchange.choice
        event = HandshakeEstablished(
            keys=keys, peer_identity=identity, spi_i=exchange.spi_i, spi_r=exchange.spi_r, prf_id=choice.prf_id,
            dh_group=choice.dh_group, ike_key_bits=choice.key_bits, data_cipher=cipher, ts_i=narrowed_i,
            ts_r=narrowed_r, ike_keys=exchange.ike_keys, peer_addr=exchange.peer_addr, esn=esn == ESN_YES)
        return response, event, (our_spi, proposal.spi)

    def _forget(self, exchange: _Exchange) -> None:
        self._by_spi_r.pop(exchange.spi_r, None)
        self._by_init.pop((exchange.peer_addr, exchange.spi_i), None)
