"""The kernel TUN interface on the LAN side (DESIGN.md §5).

The device is opened here (``/dev/net/tun``, ``IFF_TUN | IFF_NO_PI``) and
addressed, brought up and routed through pyroute2; its descriptor is handed
to the native worker (``backends/tun/tun.c``), which moves the packets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import fcntl
import ipaddress
import os
import struct
from collections.abc import Callable, Iterable
from typing import TypeVar

from p3hw.reasons import P3Error

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_QUEUE_PACKETS = 10000

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

T = TypeVar("T")


def _off_loop(fn: Callable[[], T]) -> T:
    """Run a pyroute2 call where no asyncio loop runs in this thread.

    pyroute2's synchronous IPRoute drives an event loop of its own, which it
    cannot do inside the daemon's running loop; a short-lived thread can.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def open_tun(name: str, multi_queue: bool = False, offloads: bool = True) -> int:
    """Create (or attach to) the TUN interface *name*; return a non-blocking descriptor.

    With *offloads* the kernel hands over TCP super-segments (TSO) and
    unfinished checksums behind a virtio-net header; the native TUN backend
    cuts and finishes them (backends/tun/tun.c).
    """
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise P3Error("TUN_UNAVAILABLE", f"cannot open /dev/net/tun: {exc.strerror}",
                      hint="load the tun module; run as root") from None
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0) | (IFF_VNET_HDR if offloads else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except OSError as exc:
        os.close(fd)
        reason = "NEED_ROOT" if exc.errno == errno.EPERM else "TUN_UNAVAILABLE"
        raise P3Error(reason, f"cannot create TUN interface {name!r}: {exc.strerror}") from None
    if offloads:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        except OSError as exc:
            os.close(fd)
            raise P3Error("TUN_UNAVAILABLE", f"TUN offloads refused on {name!r}: {exc.strerror}") from None
    return fd


def _configure(name: str, addresses: Iterable[IPInterface], mtu: int,
              routes: Iterable[IPNetwork] = ()) -> None:
    """Address the interface, set its MTU, bring it up and route *routes* into it."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise P3Error("OS_ERROR", f"TUN interface {name!r} vanished")
        index = found[0]
        # A deep queue, like a NIC ring: bursts from the LAN wait for the worker
        # instead of being dropped by the kernel at the default 500 packets.
        ipr.link("set", index=index, mtu=mtu, txqlen=TUN_QUEUE_PACKETS)
        for iface in addresses:
            try:
                ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except Exception as exc:  # pyroute2 raises NetlinkError(EEXIST) on a re-add
                if getattr(exc, "code", None) != errno.EEXIST:
                    raise P3Error("OS_ERROR", f"cannot address {name}: {exc}") from None
        ipr.link("set", index=index, state="up")
    for network in routes:
        _add_route(name, network)


def _add_route(name: str, network: IPNetwork) -> None:
    """Route *network* into the TUN *name* (replacing any route to the same prefix)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise P3Error("OS_ERROR", f"TUN interface {name!r} vanished")
        family = 10 if network.version == 6 else 2
        ipr.route("replace", dst=str(network.network_address), dst_len=network.prefixlen,
                  oif=found[0], family=family)


def _remove_route(name: str, network: IPNetwork) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return
        family = 10 if network.version == 6 else 2
        try:
            ipr.route("del", dst=str(network.network_address), dst_len=network.prefixlen,
                      oif=found[0], family=family)
        except Exception as exc:  # already gone is fine
            if getattr(exc, "code", None) not in (errno.ESRCH, errno.ENOENT):
                raise


def _delete(name: str) -> None:
    """Remove the interface (closing its last descriptor also does)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])


def configure(name: str, addresses: Iterable[IPInterface], mtu: int, routes: Iterable[IPNetwork] = ()) -> None:
    """Address the interface, set its MTU, bring it up and route *routes* into it."""
    addresses, routes = list(addresses), list(routes)
    _off_loop(lambda: _configure(name, addresses, mtu, routes))


def add_route(name: str, network: IPNetwork) -> None:
    """Route *network* into the TUN *name* (replacing any route to the same prefix)."""
    _off_loop(lambda: _add_route(name, network))


def remove_route(name: str, network: IPNetwork) -> None:
    """Remove the route of *network* from the TUN *name*, if it is there."""
    _off_loop(lambda: _remove_route(name, network))


def delete(name: str) -> None:
    """Remove the interface (closing its last descriptor also does)."""
    _off_loop(lambda: _delete(name))
