"""The UDP transport (default): P3 and IKE on port 5653 (DESIGN.md §3).

The socket is made here and handed to the native worker (``backends/udp/udp.c``),
which moves bursts with recvmmsg/sendmmsg.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from p3hw.reasons import P3Error

SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
UDP_GRO = 104


def open_udp(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (address, port), with large buffers."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        grow_buffers(sock)
        try:
            # Trains of datagrams arrive whole; the native backend splits them.
            if not os.environ.get("P3HW_NO_UDP_GRO"):
                sock.setsockopt(socket.IPPROTO_UDP, UDP_GRO, 1)
        except OSError:
            pass
        sock.bind((str(address), port))
    except OSError as exc:
        sock.close()
        raise P3Error("OS_ERROR", f"cannot bind UDP {address} port {port}: {exc.strerror}",
                      hint="is another p3hw running, or the address not on this host?") from None
    sock.setblocking(False)
    return sock


def grow_buffers(sock: socket.socket) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except OSError:  # not root: the plain option, capped by net.core.*mem_max
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)
