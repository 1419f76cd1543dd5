"""Fail closed: the kernel drops a remote's subnets whenever the tunnel cannot carry them.

With ``io = kernel`` the daemon routes each remote subnet into its TUN. When
the daemon stops or dies, the TUN and its routes vanish with it, and on a
gateway with a default route toward the WAN the LAN's packets for the remote
subnets would follow that route and leave **in clear**. So, next to every TUN
route, the daemon installs a kernel route of type ``unreachable`` for the
same prefix (docs/runtime.md "Fail closed"):

* with a metric far above the TUN route's, so the TUN route wins while the
  daemon runs, and the unreachable route takes over the moment the TUN route
  is gone -- SIGTERM, SIGKILL, a crash, a restart;
* the LAN host gets ICMP destination unreachable (host unreachable; IPv6: no
  route), so its connections fail at once instead of hanging;
* the kernel keeps it after the process is gone: nothing in p3hw has to run
  for the gateway to stay closed;
* tagged with its own routing protocol number (``proto 153``), so p3hw finds
  its own routes (``p3hw failclosed status``) and never touches anyone else's.

They are removed only when a remote (or one of its subnets) is removed from
the configuration by a reload, or by ``p3hw failclosed clear``. ``fail_open =
1`` in the local section opts out: no such routes, and the daemon removes the
ones left for its subnets.

This module is the netlink side (pyroute2, like the TUN routes in
p3hw/backends/tun) and the small policy object the gateway calls.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from p3hw.backends.tun import _off_loop
from p3hw.log import failure
from p3hw.reasons import P3Error

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The routing protocol number that marks p3hw's fail-closed routes (rtnetlink
#: `rtm_protocol`; /etc/iproute2/rt_protos assigns 0-18, 42, 99 and 186-192, 153 is free).
#: `ip route show proto 153` lists them.
RTPROT_P3HW = 153
#: Far above any metric the kernel (IPv4 0, IPv6 1024) or a network manager (100-20600)
#: gives a route: the TUN route of the same prefix always wins while it exists.
FAILCLOSED_METRIC = 2_000_000_000
#: RTN_UNREACHABLE: the packet is dropped and the sender gets ICMP unreachable.
ROUTE_TYPE = "unreachable"
_FAMILY = {4: 2, 6: 10}  # AF_INET, AF_INET6


@dataclass(frozen=True)
class FailClosedRoute:
    """One p3hw route of type unreachable, as the kernel lists it."""

    network: IPNetwork
    metric: int
    table: int

    def __str__(self) -> str:
        return f"unreachable {self.network} proto {RTPROT_P3HW} metric {self.metric}"


def _route_args(network: IPNetwork) -> dict[str, object]:
    return {"dst": str(network.network_address), "dst_len": network.prefixlen, "type": ROUTE_TYPE,
            "proto": RTPROT_P3HW, "priority": FAILCLOSED_METRIC, "family": _FAMILY[network.version]}


def _os_error(what: str, exc: Exception) -> P3Error:
    code = getattr(exc, "code", None)
    reason = "NEED_ROOT" if code == errno.EPERM else "OS_ERROR"
    return P3Error(reason, f"{what}: {exc}", hint="run as root (CAP_NET_ADMIN)" if reason == "NEED_ROOT" else "")


def _install(networks: list[IPNetwork]) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for network in networks:
            try:
                ipr.route("replace", **_route_args(network))
            except Exception as exc:  # pyroute2 raises NetlinkError with the errno in .code
                raise _os_error(f"cannot install the fail-closed route for {network}", exc) from None


def _remove(networks: list[IPNetwork]) -> list[IPNetwork]:
    from pyroute2 import IPRoute

    removed = []
    with IPRoute() as ipr:
        for network in networks:
            try:
                ipr.route("del", **_route_args(network))
            except Exception as exc:
                if getattr(exc, "code", None) in (errno.ESRCH, errno.ENOENT):
                    continue  # not there: nothing to do
                raise _os_error(f"cannot remove the fail-closed route for {network}", exc) from None
            removed.append(network)
    return removed


def _listed() -> list[FailClosedRoute]:
    from pyroute2 import IPRoute

    found = []
    with IPRoute() as ipr:
        for version, family in _FAMILY.items():
            for msg in ipr.get_routes(family=family, proto=RTPROT_P3HW):
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
                network = ipaddress.ip_network(f"{dst}/{msg['dst_len']}")
                found.append(FailClosedRoute(network, int(msg.get_attr("RTA_PRIORITY") or 0),
                                             int(msg.get_attr("RTA_TABLE") or msg["table"])))
    return sorted(found, key=lambda r: (r.network.version, r.network))


def install_routes(networks: Iterable[IPNetwork]) -> None:
    """Install (or keep) the unreachable route of every network in *networks*."""
    todo = list(networks)
    _off_loop(lambda: _install(todo))


def remove_routes(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Remove p3hw's unreachable routes of *networks*; return those that were there."""
    todo = list(networks)
    return _off_loop(lambda: _remove(todo))


def list_routes() -> list[FailClosedRoute]:
    """Every fail-closed route p3hw has in this network namespace (IPv4 then IPv6)."""
    return _off_loop(_listed)


class FailClosed:
    """The gateway's side: routes follow the configured remotes' subnets, never the daemon's life.

    *enabled* is ``not fail_open``; with ``io = dpdk`` the gateway does not use this
    at all (the DPDK ports forward nothing without the daemon, docs/dpdk.md).
    """

    def __init__(self, enabled: bool, logger: logging.Logger) -> None:
        self.enabled = enabled
        self.log = logger

    def subnets_configured(self, subnets: Iterable[IPNetwork], where: str) -> None:
        """A remote with *subnets* is in the configuration (start, or added by a reload)."""
        subnets = list(subnets)
        if not subnets:
            return
        try:
            if self.enabled:
                install_routes(subnets)
                self.log.info("fail closed: %s unreachable while the tunnel to %s is down",
                              ", ".join(map(str, subnets)), where)
            else:
                removed = remove_routes(subnets)
                if removed:
                    self.log.info("fail_open = 1: fail-closed routes for %s removed", ", ".join(map(str, removed)))
        except P3Error as exc:
            # The tunnel still works; say loudly that the gateway would not fail closed.
            failure(self.log, exc.reason.name, f"{exc.detail}: traffic for {where} may leave in clear "
                    "when the daemon stops")

    def subnets_removed(self, subnets: Iterable[IPNetwork], where: str) -> None:
        """Subnets left the configuration (*where* says how): their traffic is no longer ours to stop."""
        try:
            removed = remove_routes(subnets)
        except P3Error as exc:
            failure(self.log, exc.reason.name, f"{exc.detail} ({where}; remove it with 'p3hw failclosed clear')")
            return
        if removed:
            self.log.info("fail-closed routes for %s removed (%s)", ", ".join(map(str, removed)), where)
