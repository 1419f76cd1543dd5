"""A captured initial exchange is read by an independent dissector (tshark) as IKEv2.

With the IKE SA keys given to tshark's IKEv2 decryption table, tshark also
opens the SK payloads and checks their AES-GCM ICV: an independent check of
RFC 5282 framing and of the key schedule's SK_e split.
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p3hw.constants import NON_ESP_MARKER
from p3hw.protocol.handshake import (
    CertificateCredentials,
    HandshakeEstablished,
    IkeProposalConfig,
    InitiatorHandshake,
    PeerPolicy,
    ResponderHandshake,
)
from p3hw.wire.ike import DH_CURVE25519, DH_ECP_256, Identity
from p3hw.wire.pcap import LINKTYPE_RAW, CapturedDatagram, ike_datagram, pcap_bytes, udp_packet, write_pcap

SECONDARY = ("198.51.100.7", 40001)
PRIMARY = ("203.0.113.1", 5653)
PSK = b"capture-test-psk"


def _certificates() -> tuple[CertificateCredentials, CertificateCredentials]:
    """A CA and one certificate each for the secondary and the primary (SAN = their address)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "capture CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
          .sign(ca_key, hashes.SHA256()))
    credentials = []
    for address in (SECONDARY[0], PRIMARY[0]):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False)
            .sign(ca_key, hashes.SHA256()))
        credentials.append(CertificateCredentials(certificate, key, (ca,)))
    return credentials[0], credentials[1]


def _capture(key_bits: int, dh_group: int, certificates: bool = False,
             ) -> tuple[list[CapturedDatagram], HandshakeEstablished]:
    proposals = IkeProposalConfig(dh_groups=(dh_group,), ike_key_bits=(key_bits,))
    secondary_credentials, primary_credentials = _certificates() if certificates else (None, None)
    initiator = InitiatorHandshake(Identity.ip(SECONDARY[0]), None if certificates else PSK, proposals=proposals,
                                   credentials=secondary_credentials)
    policy = PeerPolicy(None if certificates else PSK)
    responder = ResponderHandshake(Identity.ip(PRIMARY[0]), {Identity.ip(SECONDARY[0]): policy}.get,
                                   proposals=proposals, credentials=primary_credentials)
    captured: list[CapturedDatagram] = []
    now = 0.0
    requests = initiator.start(now)
    while requests:
        request = requests.pop(0)
        captured.append(ike_datagram(now, SECONDARY, PRIMARY, request))
        for answer in responder.receive(request, now, SECONDARY):
            now += 0.005
            captured.append(ike_datagram(now, PRIMARY, SECONDARY, answer))
            requests += initiator.receive(answer, now)
        now += 0.005
    [result] = initiator.events()
    assert isinstance(result, HandshakeEstablished)
    return captured, result


def test_pcap_file_layout_is_raw_ip_udp_with_the_non_esp_marker() -> None:
    captured, _ = _capture(256, DH_CURVE25519)
    data = pcap_bytes(captured)
    magic, major, minor, _, _, snaplen, linktype = struct.unpack("!IHHiIII", data[:24])
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, LINKTYPE_RAW)
    _, _, incl_len, orig_len = struct.unpack("!IIII", data[24:40])
    packet = data[40:40 + incl_len]
    assert incl_len == orig_len == len(udp_packet(SECONDARY, PRIMARY, captured[0].payload))
    assert packet[0] == 0x45 and packet[9] == 17  # IPv4, UDP
    assert struct.unpack("!H", packet[22:24])[0] == 5653
    assert packet[28:32] == NON_ESP_MARKER


def test_udp_checksums_verify() -> None:
    packet = udp_packet(("2001:db8::1", 1000), ("2001:db8::2", 5653), b"\x00\x00\x00\x00abc")
    assert packet[0] >> 4 == 6 and len(packet) == 40 + 8 + 7
    v4 = udp_packet(SECONDARY, PRIMARY, b"odd")
    assert sum(struct.unpack("!10H", v4[:20])) % 0xFFFF == 0  # header checksum folds to all ones


TSHARK = shutil.which("tshark")


def _tshark(pcap: Path, *arguments: str) -> str:
    assert TSHARK is not None
    result = subprocess.run([TSHARK, "-r", str(pcap), "-d", "udp.port==5653,udpencap", *arguments],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize(("key_bits", "dh_group", "certificates"),
                         [(256, DH_CURVE25519, False), (128, DH_ECP_256, False), (256, DH_CURVE25519, True)],
                         ids=["psk-aes256-x25519", "psk-aes128-ecp256", "cert-aes256-x25519"])
def test_tshark_decodes_the_exchange_as_ikev2_without_warnings(tmp_path: Path, key_bits: int, dh_group: int,
                                                                certificates: bool) -> None:
    captured, result = _capture(key_bits, dh_group, certificates)
    pcap = tmp_path / "ike.pcap"
    write_pcap(pcap, captured)
    keys = result.ike_keys
    decryption = (f"uat:ikev2_decryption_table:{result.spi_i.hex()},{result.spi_r.hex()},{keys.sk_ei.hex()},"
                  f"{keys.sk_er.hex()},\"AES-GCM-{key_bits} with 16 octet ICV [RFC5282]\",,,\"NONE [RFC4306]\"")
    fields = _tshark(pcap, "-o", decryption, "-T", "fields", "-E", "separator=;", "-e", "isakmp.exchangetype",
                     "-e", "isakmp.id.type", "-e", "isakmp.auth.method", "-e", "isakmp.ts.type",
                     "-e", "_ws.malformed", "-e", "_ws.expert.severity", "-e", "isakmp.ikev2.integrity_checksum")
    rows = [line.split(";") for line in fields.strip().splitlines()]
    assert [row[0] for row in rows] == ["34", "34", "35", "35"]  # IKE_SA_INIT x2, IKE_AUTH x2
    # The IKE_AUTH rows were decrypted (their ICV verified, else tshark flags
    # integrity_checksum): IDi/IDr of type IPv4, AUTH method 2, TS present.
    auth_method = "14" if certificates else "2"
    assert all(row[1] == "1" and row[2] == auth_method and row[3] for row in rows[2:])
    # No malformed packet, no expert info of any severity, no bad ICV.
    assert all(row[4:] == ["", "", ""] for row in rows), rows
