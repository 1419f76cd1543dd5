"""Write datagrams as a pcap file, so that Wireshark / tshark can read an exchange.

Used by tests and the simulation harness to capture the initial exchange
as it would look on the wire: an IPv4 or IPv6 header (LINKTYPE_RAW), a UDP
header on port 5653, the non-ESP marker (RFC 3948) and the IKE message.
Tshark decodes port 5653 as NAT-T (``-d udp.port==5653,udpencap``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from p3hw.constants import DEFAULT_PORT, NON_ESP_MARKER
from p3hw.reasons import P3Error
from p3hw.wire.checksum import internet_checksum

PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_RAW = 101  # raw IPv4 / IPv6, version taken from the first nibble
SNAPLEN = 65535
IP_PROTO_UDP = 17


@dataclass(frozen=True)
class CapturedDatagram:
    """One UDP datagram: when, from where to where, and its UDP payload."""

    time_s: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def ike_datagram(time_s: float, src: tuple[str, int], dst: tuple[str, int], ike_message: bytes) -> CapturedDatagram:
    """An IKE message as the runtime sends it: the non-ESP marker in front."""
    return CapturedDatagram(time_s, src, dst, NON_ESP_MARKER + ike_message)


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 or IPv6 + UDP packet with correct lengths and checksums."""
    try:
        src_ip, dst_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    except ValueError as error:
        raise P3Error("DP_BAD_ARGUMENT", f"capture address: {error}") from None
    if src_ip.version != dst_ip.version:
        raise P3Error("DP_BAD_ARGUMENT", "capture addresses of different IP versions")
    udp_length = 8 + len(payload)
    if udp_length > 0xFFFF:
        raise P3Error("DP_TOO_BIG", f"a UDP payload of {len(payload)} octets")
    if src_ip.version == 4:
        pseudo = src_ip.packed + dst_ip.packed + struct.pack("!BBH", 0, IP_PROTO_UDP, udp_length)
    else:
        pseudo = src_ip.packed + dst_ip.packed + struct.pack("!IxxxB", udp_length, IP_PROTO_UDP)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_length, 0) + payload
    checksum = internet_checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", checksum) + udp[8:]
    if src_ip.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, 0, 0x4000, 64, IP_PROTO_UDP, 0,
                             src_ip.packed, dst_ip.packed)
        header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, udp_length, IP_PROTO_UDP, 64, src_ip.packed, dst_ip.packed)
    return header + udp


def pcap_bytes(datagrams: Iterable[CapturedDatagram]) -> bytes:
    out = bytearray(struct.pack("!IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))
    for datagram in datagrams:
        packet = udp_packet(datagram.src, datagram.dst, datagram.payload)
        seconds = int(datagram.time_s)
        micros = int(round((datagram.time_s - seconds) * 1_000_000))
        if micros >= 1_000_000:
            seconds, micros = seconds + 1, micros - 1_000_000
        out += struct.pack("!IIII", seconds, micros, len(packet), len(packet)) + packet
    return bytes(out)


def write_pcap(path: str | Path, datagrams: Iterable[CapturedDatagram]) -> None:
    Path(path).write_bytes(pcap_bytes(datagrams))


__all__ = ["DEFAULT_PORT", "CapturedDatagram", "ike_datagram", "pcap_bytes", "udp_packet", "write_pcap"]
