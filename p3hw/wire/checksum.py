"""The Internet checksum (RFC 1071), the one copy in Python.

Every Python part that writes or checks an IP, UDP, TCP or ICMP checksum —
the reference packet codec, the control channel's predefined headers, the
pcap writer, the WAN simulator, the benchmarks — calls these; the C side has
its own single copy in ``native/src/bytes.h``.
"""

from __future__ import annotations

import struct


def ones_complement_sum(data: bytes) -> int:
    """The folded 16-bit one's-complement sum of ``data`` (an odd last octet is padded with a zero)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes) -> int:
    """The checksum to store over ``data``; 0 over data that carries a valid checksum."""
    return ~ones_complement_sum(data) & 0xFFFF


def checksum_update(old_checksum: int, old_word: int, new_word: int) -> int:
    """The checksum after one 16-bit word it covers changed, without summing again (RFC 1624 eqn. 3)."""
    total = (~old_checksum & 0xFFFF) + (~old_word & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total += new_word
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
