"""Pure-Python reference codec of the P3 data packet (DESIGN.md §3).

Independent of the native dataplane (it uses the ``cryptography`` package):
tests cross-check the two, and tools use it to decode a capture when they
hold the keys. Slow on purpose-free grounds: clarity over speed.

P3 bytes (what follows the outer IP header, or the UDP header)::

    Flags(4) = 01 00 00 00 | ID(4) ^ mask[0:4] | seq(8) ^ mask[4:12] | ciphertext | ICV(16)

    mask  = AES-128-ECB(hp_key, ciphertext[0:16])           (RFC 9001 §5.4 style)
    AAD   = Flags ‖ ID ‖ seq                                 (unmasked)
    frame = inner ‖ padding ‖ pad_len(2) ‖ next_header(1)    (one bucket long)
    plaintext = frame rotated left by 16 * (SipHash-2-4(obfs_key, seq) mod (len(frame) / 16))

Padding is the inner packet repeated from its first octet (an empty inner
uses the unmasked P3 header). Ciphers: RFC 4106 GCM (nonce salt(4) ‖ seq),
RFC 4309 CCM (salt(3) ‖ seq, ICV 16), RFC 3686 CTR (nonce(4) ‖ seq ‖
counter from 1) with HMAC-SHA-256-128 over AAD ‖ seq(8) ‖ ciphertext.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM

from p3hw.crypto.keys import SaKeys
from p3hw.reasons import P3Error
from p3hw.wire.checksum import internet_checksum

VERSION = 1
FLAGS = bytes([VERSION, 0, 0, 0])
HEADER_BYTES = 16
ICV_BYTES = 16
MIN_FRAME_BYTES = 32
DEFAULT_BUCKETS = (64, 128, 256, 512, 1024)
NEXT_IPV4, NEXT_IPV6, NEXT_DUMMY = 4, 41, 59
_MASK64 = (1 << 64) - 1


# ------------------------------------------------------------ obfuscation

def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK64


def siphash24(key: bytes, message: bytes) -> int:
    """SipHash-2-4 (Aumasson & Bernstein) with a 16-octet key."""
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK64; v1 = _rotl(v1, 13) ^ v0; v0 = _rotl(v0, 32)  # noqa: E702
            v2 = (v2 + v3) & _MASK64; v3 = _rotl(v3, 16) ^ v2  # noqa: E702
            v0 = (v0 + v3) & _MASK64; v3 = _rotl(v3, 21) ^ v0  # noqa: E702
            v2 = (v2 + v1) & _MASK64; v1 = _rotl(v1, 17) ^ v2; v2 = _rotl(v2, 32)  # noqa: E702

    tail = len(message) % 8
    for (m,) in struct.iter_unpack("<Q", message[:len(message) - tail]):
        v3 ^= m
        rounds(2)
        v0 ^= m
    last = (len(message) & 0xFF) << 56 | int.from_bytes(message[len(message) - tail:], "little")
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def rotation(obfs_key: bytes, seq: int, frame_len: int) -> int:
    """Left rotation of the frame before sealing (spec §2.1.5 step 3), in whole AES blocks."""
    return siphash24(obfs_key, seq.to_bytes(8, "little")) % (frame_len // 16) * 16


def bucket_frame_len(needed: int, frame_cap: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int | None:
    """The frame length for `needed` octets (inner + 3): the first bucket that holds it,
    the peer's cap past the buckets, None when it does not fit."""
    needed = max(needed, MIN_FRAME_BYTES)
    for size in buckets:
        if size >= frame_cap:
            break
        if size >= needed:
            return size
    return frame_cap if needed <= frame_cap else None


def frame_cap(mtu: int, family: int, udp: bool) -> int:
    """Largest frame an outer packet of `mtu` octets carries (whole AES blocks)."""
    return (mtu - (40 if family == 6 else 20) - (8 if udp else 0) - HEADER_BYTES - ICV_BYTES) & ~15


def build_frame(inner: bytes, next_header: int, frame_len: int, header: bytes) -> bytes:
    """inner ‖ padding (copied from the inner, or from `header` if empty) ‖ pad_len ‖ next_header."""
    pad_len = frame_len - len(inner) - 3
    if pad_len < 0:
        raise P3Error("DP_TOO_BIG", f"{len(inner)} octets do not fit a {frame_len}-octet frame")
    source = inner or header
    padding = (source * (pad_len // len(source) + 1))[:pad_len]
    return inner + padding + struct.pack("!HB", pad_len, next_header)


def parse_frame(frame: bytes) -> tuple[bytes, int]:
    """(inner, next_header) of a frame, or P3Error DP_BAD_INNER."""
    pad_len, next_header = struct.unpack("!HB", frame[-3:])
    if pad_len > len(frame) - 3:
        raise P3Error("DP_BAD_INNER", f"pad_len {pad_len} longer than the frame")
    inner = frame[:len(frame) - 3 - pad_len]
    if next_header == NEXT_DUMMY:
        return inner, next_header
    if inner_next_header(inner) != next_header:
        raise P3Error("DP_BAD_INNER", f"next_header {next_header} does not describe the inner packet")
    return inner, next_header


def inner_next_header(packet: bytes) -> int | None:
    """4 or 41 when `packet` is one whole IPv4 / IPv6 packet, else None."""
    n = len(packet)
    if n >= 20 and packet[0] >> 4 == 4 and packet[0] & 15 >= 5 and struct.unpack("!H", packet[2:4])[0] == n:
        return NEXT_IPV4
    if n >= 40 and packet[0] >> 4 == 6 and 40 + struct.unpack("!H", packet[4:6])[0] == n:
        return NEXT_IPV6
    return None


# ------------------------------------------------------------ ciphers

def hp_mask(hp_key: bytes, sample: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(hp_key), modes.ECB()).encryptor()
    return encryptor.update(sample[:16]) + encryptor.finalize()


def _ctr_block(sa: SaKeys, seq: int) -> bytes:
    return sa.salt + seq.to_bytes(8, "big") + b"\0\0\0\1"   # RFC 3686 §4


def _ctr_icv(sa: SaKeys, aad: bytes, seq: int, ciphertext: bytes) -> bytes:
    mac = crypto_hmac.HMAC(sa.auth_key, hashes.SHA256())
    mac.update(aad + seq.to_bytes(8, "big") + ciphertext)
    return mac.finalize()[:16]                             # RFC 4868: truncated to 128 bits


def encrypt(sa: SaKeys, seq: int, aad: bytes, plaintext: bytes) -> bytes:
    """ciphertext ‖ ICV of one frame under an SA."""
    mode = sa.cipher.rsplit("-", 1)[1]
    iv = seq.to_bytes(8, "big")
    if mode == "gcm":
        return AESGCM(sa.key).encrypt(sa.salt + iv, plaintext, aad)
    if mode == "ccm":
        return AESCCM(sa.key, tag_length=16).encrypt(sa.salt + iv, plaintext, aad)
    encryptor = Cipher(algorithms.AES(sa.key), modes.CTR(_ctr_block(sa, seq))).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return ciphertext + _ctr_icv(sa, aad, seq, ciphertext)


def decrypt(sa: SaKeys, seq: int, aad: bytes, sealed: bytes) -> bytes:
    """Inverse of :func:`encrypt`; P3Error DP_AUTH_FAILED on a bad ICV."""
    mode = sa.cipher.rsplit("-", 1)[1]
    iv = seq.to_bytes(8, "big")
    try:
        if mode == "gcm":
            return AESGCM(sa.key).decrypt(sa.salt + iv, sealed, aad)
        if mode == "ccm":
            return AESCCM(sa.key, tag_length=16).decrypt(sa.salt + iv, sealed, aad)
    except InvalidTag as exc:
        raise P3Error("DP_AUTH_FAILED", f"SA {sa.p3_id:#x} seq {seq}: bad ICV") from exc
    ciphertext, icv = sealed[:-ICV_BYTES], sealed[-ICV_BYTES:]
    if not hmac.compare_digest(_ctr_icv(sa, aad, seq, ciphertext), icv):
        raise P3Error("DP_AUTH_FAILED", f"SA {sa.p3_id:#x} seq {seq}: bad ICV")
    decryptor = Cipher(algorithms.AES(sa.key), modes.CTR(_ctr_block(sa, seq))).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


# ------------------------------------------------------------ P3 packet

@dataclass(frozen=True)
class OpenedPacket:
    p3_id: int
    seq: int
    inner: bytes
    next_header: int


def seal(sa: SaKeys, hp_key: bytes, seq: int, inner: bytes, frame_len: int,
         next_header: int | None = None) -> bytes:
    """The P3 bytes of one packet (no outer IP/UDP header)."""
    if next_header is None:
        next_header = inner_next_header(inner) or 0
        if not next_header:
            raise P3Error("DP_BAD_INNER", "not one whole IPv4 or IPv6 packet")
    if frame_len < MIN_FRAME_BYTES:
        raise P3Error("DP_BAD_ARGUMENT", f"frames are at least {MIN_FRAME_BYTES} octets")
    header = FLAGS + struct.pack("!IQ", sa.p3_id, seq)
    frame = build_frame(inner, next_header, frame_len, header)
    r = rotation(sa.obfs_key, seq, frame_len)
    sealed = encrypt(sa, seq, header, frame[r:] + frame[:r])
    mask = hp_mask(hp_key, sealed[:16])
    masked = bytes(a ^ b for a, b in zip(header[4:], mask[:12], strict=True))
    return FLAGS + masked + sealed


def unmask(hp_key: bytes, p3: bytes) -> tuple[int, int]:
    """(P3 ID, seq) of the P3 bytes under one hp key."""
    check_header(p3)
    mask = hp_mask(hp_key, p3[HEADER_BYTES:HEADER_BYTES + 16])
    plain = bytes(a ^ b for a, b in zip(p3[4:16], mask[:12], strict=True))
    p3_id, seq = struct.unpack("!IQ", plain)
    return p3_id, seq


def check_header(p3: bytes) -> None:
    if len(p3) < HEADER_BYTES + 16 + ICV_BYTES:
        raise P3Error("DP_BAD_HEADER", f"{len(p3)} octets is shorter than a P3 packet")
    if p3[:4] != FLAGS:
        raise P3Error("DP_BAD_HEADER", f"P3 flags {p3[:4].hex()} (version 1, reserved zero expected)")


def open_packet(sas: Mapping[int, SaKeys], hp_keys: Sequence[bytes], p3: bytes) -> OpenedPacket:
    """Open P3 bytes with the session's inbound SAs (by P3 ID) and hp keys
    (current first, then previous). No anti-replay: that is per receiver state."""
    check_header(p3)
    for hp_key in hp_keys:
        p3_id, seq = unmask(hp_key, p3)
        sa = sas.get(p3_id)
        if sa is not None:
            break
    else:
        raise P3Error("DP_UNKNOWN_ID", "no inbound SA matches the P3 ID under any hp key")
    aad = FLAGS + struct.pack("!IQ", p3_id, seq)
    plaintext = decrypt(sa, seq, aad, p3[HEADER_BYTES:])
    frame_len = len(plaintext)
    r = rotation(sa.obfs_key, seq, frame_len)
    frame = plaintext[frame_len - r:] + plaintext[:frame_len - r]
    inner, next_header = parse_frame(frame)
    return OpenedPacket(p3_id, seq, inner, next_header)


# ------------------------------------------------------------ outer headers

def outer_packet(p3: bytes, src: bytes, dst: bytes, udp_ports: tuple[int, int] | None) -> bytes:
    """IPv4/IPv6 (4- or 16-octet addresses) + optional UDP header + P3 bytes, as the dataplane writes them."""
    payload = p3
    proto = 50
    if udp_ports is not None:
        proto = 17
        length = len(p3) + 8
        udp = struct.pack("!HHHH", udp_ports[0], udp_ports[1], length, 0)
        if len(src) == 16:
            pseudo = src + dst + struct.pack("!IxxxB", length, 17)
            csum = internet_checksum(pseudo + udp + p3) or 0xFFFF
            udp = udp[:6] + struct.pack("!H", csum)
        payload = udp + p3
    if len(src) == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0, src, dst)
        header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
        return header + payload
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), proto, 64, src, dst) + payload


def parse_outer(packet: bytes) -> tuple[bytes, int, bytes]:
    """(source address octets, UDP source port or 0, P3 bytes) of an outer packet."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        total, proto, src = struct.unpack("!H", packet[2:4])[0], packet[9], packet[12:16]
        if ihl < 20 or total > len(packet) or internet_checksum(packet[:ihl]) != 0:
            raise P3Error("DP_BAD_HEADER", "bad IPv4 header")
        body = packet[ihl:total]
    elif len(packet) >= 40 and packet[0] >> 4 == 6:
        total = 40 + struct.unpack("!H", packet[4:6])[0]
        proto, src = packet[6], packet[8:24]
        if total > len(packet):
            raise P3Error("DP_BAD_HEADER", "bad IPv6 header")
        body = packet[40:total]
    else:
        raise P3Error("DP_BAD_HEADER", "not an IPv4 or IPv6 packet")
    if proto == 50:
        return src, 0, body
    if proto == 17 and len(body) >= 8:
        sport, _, length = struct.unpack("!HHH", body[:6])
        if 8 <= length <= len(body):
            return src, sport, body[8:length]
    raise P3Error("DP_BAD_HEADER", f"outer protocol {proto} is neither ESP nor UDP")
