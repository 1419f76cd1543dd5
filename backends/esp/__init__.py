"""The raw ESP transport: IP protocol 50, exactly the spec's figure (§2.1.4).

IKE still runs on UDP 5653; only the P3 packets use the raw socket.
"""

from __future__ import annotations

import ipaddress
import socket

from p3hw.backends.udp import grow_buffers
from p3hw.constants import IP_PROTO_ESP
from p3hw.reasons import P3Error


def open_esp(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> socket.socket:
    """A non-blocking raw socket for IP protocol 50, bound to *address*."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_RAW, IP_PROTO_ESP)
    except PermissionError:
        raise P3Error("NEED_ROOT", "raw ESP sockets need root (CAP_NET_RAW)") from None
    try:
        grow_buffers(sock)
        sock.bind((str(address), 0))
    except OSError as exc:
        sock.close()
        raise P3Error("OS_ERROR", f"cannot bind raw ESP socket to {address}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock
