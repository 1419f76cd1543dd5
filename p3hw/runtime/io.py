"""The gateway's I/O: the dataplane, the crypto engine, the native worker and its ports.

`GatewayIO.open()` creates the dataplane context(s) and flow table(s), sets
the crypto engine, and starts the worker on a TUN interface and a UDP (and
ESP) socket, or on two DPDK ports; `close()` undoes it. Routes to the
remotes' subnets (the dataplane's table and, with a TUN, the kernel's) are
added and removed here, in `add_routes` / `remove_routes`. `GatewayPort` is
the `DataplanePort` the peers' drivers use (docs/architecture.md).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Collection
from typing import Any

from p3hw.backends import tun as tun_backend
from p3hw.backends.esp import open_esp
from p3hw.backends.udp import open_udp
from p3hw.config import Config, RemoteHost
from p3hw.constants import NON_ESP_MARKER
from p3hw.crypto.keys import SaKeys, SessionKeys
from p3hw.dataplane import (
    Dataplane,
    DpdkPorts,
    EngineWatch,
    FlowTable,
    PeerConfig,
    Routes,
    Terminated,
    Worker,
)
from p3hw.reasons import P3Error
from p3hw.runtime.engines import set_crypto_engine
from p3hw.runtime.failclosed import FailClosed
from p3hw.runtime.ports import Traffic
from p3hw.runtime.shards import ShardedDataplane, ShardedFlows

#: Outer path MTU assumed for the WAN (bytes); the TUN MTU leaves room for
#: the largest P3 overhead (IPv6 40 + UDP 8 + P3 16 + ICV 16 + trailer 3).
WAN_MTU = 1500
TUN_MTU = 1400
#: Flow table size and idle timeouts for login termination (docs/flows.md).
FLOW_CAPACITY = 65536
FLOW_TCP_IDLE_MS = 3 * 3600 * 1000
FLOW_OTHER_IDLE_MS = 180 * 1000


class GatewayIO:
    """One gateway's dataplane, worker and ports, opened from its configuration."""

    def __init__(self, config: Config, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self.dp: Dataplane | ShardedDataplane | None = None
        self.routes: Routes | None = None
        self.flows: FlowTable | ShardedFlows | None = None
        self.worker: Worker | None = None
        self.engine_watch: EngineWatch | None = None
        self.tun_fd = -1
        self.tun_offloads = True
        self.udp: socket.socket | None = None
        self.udp_port = 0
        self.esp: socket.socket | None = None
        self.kernel_routes: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        # io = kernel: the remote subnets stay unreachable while no tunnel carries them (docs/runtime.md).
        self.fail_closed = FailClosed(not config.local.fail_open, log)

    @property
    def local_address(self) -> str:
        return str(self.config.local.address)

    def open(self) -> None:
        local = self.config.local
        workers = local.dpdk_workers if local.io == "dpdk" else 1
        if workers > 1:
            # One context and flow table per worker; peer p lives in shard p % n (docs/dpdk.md).
            self.dp = ShardedDataplane([Dataplane() for _ in range(workers)])
            self.flows = ShardedFlows([FlowTable(FLOW_CAPACITY, FLOW_TCP_IDLE_MS, FLOW_OTHER_IDLE_MS)
                                       for _ in range(workers)])
        else:
            self.dp = Dataplane()
            self.flows = FlowTable(FLOW_CAPACITY, FLOW_TCP_IDLE_MS, FLOW_OTHER_IDLE_MS)
        self.dp.set_local_address(self.local_address)
        self._set_crypto_engine()
        self.routes = Routes()
        if local.io == "dpdk":
            self._open_dpdk_ports()
            return
        self.tun_fd = tun_backend.open_tun(local.interface, offloads=self.tun_offloads)
        port = local.port if self.config.role == "primary" else self._secondary_port()
        self.udp = open_udp(local.address, port)
        self.udp_port = self.udp.getsockname()[1]
        esp_fd, esp_family = -1, local.address.version
        if local.transport == "esp":
            self.esp = open_esp(local.address)
            esp_fd = self.esp.fileno()
        tun_backend.configure(local.interface, [], TUN_MTU)
        self.worker = Worker(self.dp, self.routes, self.flows, lan_fd=self.tun_fd, wan_fd=self.udp.fileno(),
                             esp_fd=esp_fd, esp_family=esp_family)
        self.worker.start()

    def _open_dpdk_ports(self) -> None:
        """io = dpdk: the worker polls two ethdev ports; no TUN, no socket, no kernel routes (docs/dpdk.md)."""
        local = self.config.local
        assert local.dpdk_lan_port and local.dpdk_wan_port and local.dpdk_lan_address is not None
        assert self.dp is not None and self.flows is not None and self.routes is not None
        # A secondary with no single remote port still needs a fixed one: nothing picks an ephemeral port here.
        self.udp_port = local.port if self.config.role == "primary" else (self._secondary_port() or local.port)
        full = local.address.max_prefixlen
        # Without a WAN gateway every peer is on the WAN link; with one, only the gateway is.
        wan = ipaddress.ip_interface(f"{local.address}/{full if local.dpdk_wan_gateway else 0}")
        planes = self.dp.shards if isinstance(self.dp, ShardedDataplane) else self.dp
        tables = self.flows.shards if isinstance(self.flows, ShardedFlows) else self.flows
        self.worker = Worker(planes, self.routes, tables, dpdk=DpdkPorts(
            lan_port=local.dpdk_lan_port, wan_port=local.dpdk_wan_port, lan_address=local.dpdk_lan_address,
            wan_address=wan, udp_port=self.udp_port, lan_gateway=local.dpdk_lan_gateway,
            wan_gateway=local.dpdk_wan_gateway, eal_args=local.dpdk_eal_args, workers=local.dpdk_workers,
            cpus=local.dpdk_cpus))
        self.worker.start()

    def _set_crypto_engine(self) -> None:
        """Appendix A extension crypto_engine: AES-NI, the accelerator, or the HSM (docs/engines.md)."""
        assert self.dp is not None
        self.engine_watch = EngineWatch(self.dp, self.log)
        set_crypto_engine(self.dp, self.config.local)

    def _secondary_port(self) -> int:
        ports = {r.port for r in self.config.remotes}
        return ports.pop() if len(ports) == 1 else 0

    def lan_name(self) -> str:
        local = self.config.local
        return f"DPDK port {local.dpdk_lan_port}" if local.io == "dpdk" else f"interface {local.interface}"

    # ------------------------------------------------------------ routes

    def add_routes(self, remote: RemoteHost) -> None:
        """The remote's subnets go to it: in the dataplane's table and, with a TUN, the kernel's."""
        assert self.routes is not None
        if self.tun_fd >= 0:
            self.fail_closed.subnets_configured(remote.subnets, f"remote {remote.id} ({remote.address})")
        for subnet in remote.subnets:
            self.routes.add(str(subnet), remote.id)
            if self.tun_fd >= 0:
                tun_backend.add_route(self.config.local.interface, subnet)
                self.kernel_routes.append(subnet)

    def remove_routes(self, remote: RemoteHost) -> None:
        """The remote's subnets leave both tables; its flows are forgotten."""
        assert self.routes is not None
        for subnet in remote.subnets:
            try:
                self.routes.delete(str(subnet))
            except P3Error:
                pass
            if subnet in self.kernel_routes:
                tun_backend.remove_route(self.config.local.interface, subnet)
                self.kernel_routes.remove(subnet)
        if self.flows is not None:
            self.flows.forget(remote.id)

    def subnets_gone(self, subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], why: str) -> None:
        """Subnets no remote routes any more: their fail-closed routes go too (docs/runtime.md "Fail closed")."""
        if self.tun_fd >= 0 and subnets:
            self.fail_closed.subnets_removed(sorted(subnets, key=str), why)

    def flow_tables(self) -> list[FlowTable]:
        """Every flow table (one per worker with several DPDK workers)."""
        if self.flows is None:
            return []
        return list(self.flows.shards) if isinstance(self.flows, ShardedFlows) else [self.flows]

    def _remove_kernel_routes(self) -> None:
        for subnet in self.kernel_routes:
            try:
                tun_backend.remove_route(self.config.local.interface, subnet)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self.kernel_routes = []

    # ------------------------------------------------------------ status and teardown

    def status(self) -> dict[str, Any]:
        """Where the packets come from and go to: the kernel's TUN and socket, or the DPDK ports."""
        local = self.config.local
        if local.io == "dpdk":
            return {"backend": "dpdk", "lan_port": local.dpdk_lan_port, "wan_port": local.dpdk_wan_port,
                    "lan_address": str(local.dpdk_lan_address), "udp_port": self.udp_port,
                    "workers": local.dpdk_workers}
        return {"backend": "kernel", "interface": local.interface, "transport": local.transport,
                "udp_port": self.udp_port}

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def close(self) -> None:
        """After `stop_worker`: routes out of the kernel, descriptors and sockets closed, the worker freed."""
        self._remove_kernel_routes()
        if self.tun_fd >= 0:
            os.close(self.tun_fd)
            self.tun_fd = -1
        for sock in (self.udp, self.esp):
            if sock is not None:
                sock.close()
        if self.worker is not None:
            self.worker.close()


class GatewayPort:
    """`DataplanePort` over a gateway's native dataplane and worker.

    The worker is paused around every change to the peers' SAs; control packets
    go down a queue to the worker that owns the peer and are sealed there (no
    pause), and LAN packets that terminate flows go through the worker too."""

    def __init__(self, io: GatewayIO) -> None:
        self.io = io
        #: the last login termination carried out (status "termination")
        self.last_termination: Terminated | None = None
        #: where each peer's session was installed (outer address, port): control packets go there
        self.outer: dict[int, tuple[str, int]] = {}

    def _parts(self) -> tuple[Dataplane | ShardedDataplane, Worker]:
        assert self.io.dp is not None and self.io.worker is not None
        return self.io.dp, self.io.worker

    def _retire(self, direction: str, peer_id: int, p3_id: int) -> Traffic:
        """An SA's counts, read just before it goes (call with the worker paused)."""
        dp, _ = self._parts()
        try:
            c = dp.sa_counters(direction, peer_id, p3_id)
        except P3Error:
            return Traffic()
        if direction == "in":
            return Traffic(packets_in=c.opened_packets, bytes_in=c.opened_bytes)
        return Traffic(packets_out=c.sealed_packets, bytes_out=c.sealed_bytes)

    def install_session(self, peer_id: int, outer: tuple[str, int], keys: SessionKeys) -> None:
        dp, worker = self._parts()
        encap = self.io.config.local.transport
        addr, port = outer
        self.outer[peer_id] = outer
        with worker.paused():
            dp.add_peer(PeerConfig(
                peer_id=peer_id, local_addr=self.io.local_address, remote_addr=addr, encap=encap,
                local_port=self.io.udp_port, remote_port=port if encap == "udp" else 0, mtu=WAN_MTU,
            ))
            dp.install_session(peer_id, keys)

    def remove_session(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        dp, worker = self._parts()
        total = Traffic()
        with worker.paused():
            for p3_id in inbound_ids:
                total += self._retire("in", peer_id, p3_id)
            total += self._retire("out", peer_id, dp.outbound_id(peer_id))
            dp.remove_peer(peer_id)
        self.outer.pop(peer_id, None)
        return total

    def add_inbound_sa(self, peer_id: int, sa: SaKeys) -> None:
        dp, worker = self._parts()
        with worker.paused():
            dp.add_inbound_sa(peer_id, sa)

    def remove_inbound_sa(self, peer_id: int, p3_id: int) -> Traffic:
        dp, worker = self._parts()
        with worker.paused():
            retired = self._retire("in", peer_id, p3_id)
            try:
                dp.remove_sa("in", peer_id, p3_id)
            except P3Error:
                pass
        return retired

    def install_outbound_sa(self, peer_id: int, sa: SaKeys) -> Traffic:
        dp, worker = self._parts()
        with worker.paused():
            retired = self._retire("out", peer_id, dp.outbound_id(peer_id))
            dp.add_outbound_sa(peer_id, sa, 0)
        return retired

    def send_control(self, peer_id: int, inner_packet: bytes) -> None:
        _, worker = self._parts()
        if peer_id not in self.outer:
            return
        try:    # sealed with the data SA and sent by the worker that owns the peer: no pause
            worker.send_control(peer_id, inner_packet)
        except P3Error as exc:  # the control channel retransmits
            self.io.log.warning("%s cannot queue a control packet for %s: %s", exc.code, self.outer[peer_id][0],
                                exc.detail)

    def send_ike(self, addr: str, port: int, message: bytes) -> None:
        _, worker = self._parts()
        try:
            worker.send(addr, port, NON_ESP_MARKER + message)
        except P3Error as exc:
            # No route yet, address still tentative, ...: the exchange's own retransmission tries again.
            self.io.log.warning("%s cannot send IKE to %s port %d: %s", exc.code, addr, port, exc.detail)

    def terminate_flows(self, peer_id: int) -> Terminated:
        io = self.io
        if io.flows is None:
            return Terminated()
        packets, done = io.flows.terminate(peer_id, int(time.monotonic() * 1000))
        self.write_lan(packets)
        self.last_termination = done
        return done

    def write_lan(self, packets: list[bytes]) -> None:
        """Termination packets (RSTs, ICMP unreachables) into the TUN or out of the LAN port, from the worker's thread."""
        _, worker = self._parts()
        for packet in packets:
            try:
                worker.send_lan(packet, wait_s=1.0)
            except P3Error:
                break

    def traffic(self, peer_id: int, inbound_ids: Collection[int]) -> Traffic:
        dp = self.io.dp
        total = Traffic()
        if dp is None:
            return total
        for p3_id in inbound_ids:
            try:
                c = dp.sa_counters("in", peer_id, p3_id)
            except P3Error:
                continue
            total += Traffic(packets_in=c.opened_packets, bytes_in=c.opened_bytes)
        try:
            c = dp.sa_counters("out", peer_id, dp.outbound_id(peer_id))
            total += Traffic(packets_out=c.sealed_packets, bytes_out=c.sealed_bytes)
        except P3Error:
            pass
        return total

    def outbound_id(self, peer_id: int) -> int | None:
        dp = self.io.dp
        if dp is None:
            return None
        try:
            return dp.outbound_id(peer_id)
        except P3Error:
            return None
