"""p3hw gateways deployed on the namespace testbed (simulators/netns.py).

Writes a primary configuration for site 0 and a secondary configuration for
every other site (spec Appendix A, plus the extensions of docs/config.md),
starts the real daemons (``p3hw primary`` / ``p3hw secondary``) in the
gateway namespaces, and reads their ``--status-file``. Used by the demo, the
end-to-end tests and the tunnel benchmark.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p3hw.simulators.netns import Site, Topology


@dataclass
class Options:
    """What the generated configurations say."""

    transport: str = "udp"          # udp | esp
    family: int = 4                 # outer (WAN) address family: 4 or 6
    key_type: str = "AES128"
    cipher: str = "gcm"
    pfs: int = 1
    rekey_wait_s: int = 3600
    heartbeat_time_s: int = 15
    heartbeat_fail_s: int = 120
    array_size: int = 0             # 0: no key arrays
    extra_primary_lines: list[str] = field(default_factory=list)
    extra_secondary_lines: list[str] = field(default_factory=list)
    #: sites whose gateway runs on DPDK ports (the topology's dpdk_sites, docs/dpdk.md)
    dpdk_sites: tuple[int, ...] = ()
    #: with DPDK ports, the crypto on a DPDK crypto device too (crypto_openssl)
    dpdk_cryptodev: bool = False
    #: with DPDK ports, worker threads (one queue pair of each net_af_packet port each)
    dpdk_workers: int = 1


@dataclass
class Daemon:
    site: Site
    role: str
    config_path: Path
    status_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _mask(prefixlen: int, family: int) -> str:
    import ipaddress

    bits = 32 if family == 4 else 128
    value = ((1 << prefixlen) - 1) << (bits - prefixlen)
    return str(ipaddress.ip_address(value if family == 6 else value.to_bytes(4, "big")))


class Deployment:
    """One primary (site 0) and its secondaries (the other sites) on a built topology."""

    def __init__(self, topology: Topology, workdir: Path, options: Options | None = None) -> None:
        self.topology = topology
        self.workdir = workdir
        self.options = options or Options()
        self.daemons: dict[int, Daemon] = {}
        self.psk_paths: dict[int, Path] = {}

    # -- configuration

    def wan_address(self, site: Site) -> str:
        return str(site.gw_wan4 if self.options.family == 4 else site.gw_wan6)

    def _subnet_lines(self, remote_id: int, sites: list[Site]) -> list[str]:
        lines = []
        k = 1
        # Appendix A: a remote's subnets are of its `ip` version, so the inner
        # family follows the outer one here.
        for site in sites:
            net = site.lan4 if self.options.family == 4 else site.lan6
            lines.append(f"{remote_id}/subnet{k} = {net.network_address}")
            lines.append(f"{remote_id}/mask{k} = {_mask(net.prefixlen, net.version)}")
            k += 1
        return lines

    def _dpdk_lines(self, site: Site) -> list[str]:
        """io = dpdk on the site's lan0 and wan0 through net_af_packet (Topology(dpdk_sites=...))."""
        if site.index not in self.options.dpdk_sites:
            return []
        if site.index not in self.topology.dpdk_sites:
            raise ValueError(f"site {site.index} runs DPDK ports but the topology gave its interfaces to the kernel")
        lan, gw = (site.lan4, site.gw_lan4) if self.options.family == 4 else (site.lan6, site.gw_lan6)
        workers = self.options.dpdk_workers
        # net_af_packet: qpairs sockets in a PACKET_FANOUT group, the kernel spreading flows over them.
        qpairs = f",qpairs={workers}" if workers > 1 else ""
        eal = ["--no-huge", "-m", "256", "--no-shconf", "--no-pci", "--no-telemetry", "--log-level=*:warning",
               f"--vdev=net_af_packet0,iface=lan0{qpairs}", f"--vdev=net_af_packet1,iface=wan0{qpairs}"]
        lines = ["io = dpdk", "dpdk_lan_port = net_af_packet0", "dpdk_wan_port = net_af_packet1",
                 f"dpdk_lan_address = {gw}/{lan.prefixlen}", f"dpdk_workers = {workers}"]
        if self.options.dpdk_cryptodev:
            eal.append("--vdev=crypto_openssl0")
            lines += ["crypto_engine = cryptodev", "crypto_fallback = aesni"]
        return [*lines, "dpdk_eal_args = " + " ".join(eal)]

    def write_configs(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        opts = self.options
        primary = self.topology.primary
        secondaries = self.topology.secondaries
        for site in secondaries:
            psk = self.workdir / f"site{site.index}.psk"
            psk.write_text(secrets.token_hex(32) + "\n")
            os.chmod(psk, 0o600)
            self.psk_paths[site.index] = psk
        # The primary: one remote per secondary, routing that secondary's LAN.
        lines = ["# generated by p3hw.simulators.deployment", "localstart", "role = primary",
                 f"ip = {opts.family}", f"address = {self.wan_address(primary)}",
                 f"rekey_wait = {opts.rekey_wait_s}", f"heartbeat_time = {opts.heartbeat_time_s}",
                 f"heartbeat_fail = {opts.heartbeat_fail_s}", f"array_size = {opts.array_size}",
                 f"transport = {opts.transport}", "interface = p3-0", *self._admin_lines(primary),
                 *self._dpdk_lines(primary), *opts.extra_primary_lines, "localend"]
        for site in secondaries:
            rid = site.index
            lines += [f"{rid}/ip = {opts.family}", f"{rid}/address = {self.wan_address(site)}",
                      f"{rid}/key_type = {opts.key_type}", f"{rid}/cipher = {opts.cipher}", f"{rid}/pfs = {opts.pfs}",
                      f"{rid}/psk_file = {self.psk_paths[rid].name}", *self._subnet_lines(rid, [site])]
        self._write_daemon(primary, "primary", lines)
        # Each secondary: one remote, the primary, routing every other site's LAN through it.
        for site in secondaries:
            others = [primary] + [s for s in secondaries if s.index != site.index]
            lines = ["# generated by p3hw.simulators.deployment", "localstart", "role = secondary",
                     f"ip = {opts.family}", f"address = {self.wan_address(site)}", f"transport = {opts.transport}",
                     "interface = p3-0", *self._admin_lines(site), *self._dpdk_lines(site),
                     *opts.extra_secondary_lines, "localend",
                     f"1/ip = {opts.family}", f"1/address = {self.wan_address(primary)}",
                     f"1/key_type = {opts.key_type}", f"1/cipher = {opts.cipher}",
                     f"1/psk_file = {self.psk_paths[site.index].name}", *self._subnet_lines(1, others)]
            self._write_daemon(site, "secondary", lines)

    def admin_socket(self, site: Site) -> Path:
        return self.workdir / f"site{site.index}.admin.sock"

    def _admin_lines(self, site: Site) -> list[str]:
        # Each daemon its own admin socket and store (the defaults are one per host).
        return [f"admin_socket = {self.admin_socket(site)}",
                f"admin_store = {self.workdir / f'site{site.index}-admin.db'}"]

    def _write_daemon(self, site: Site, role: str, lines: list[str]) -> None:
        path = self.workdir / f"site{site.index}-{role}.conf"
        path.write_text("\n".join(lines) + "\n")
        self.daemons[site.index] = Daemon(site, role, path, self.workdir / f"site{site.index}.status.json",
                                          self.workdir / f"site{site.index}.log")

    # -- processes

    def start_daemon(self, index: int) -> Daemon:
        daemon = self.daemons[index]
        if daemon.status_path.exists():
            daemon.status_path.unlink()
        log = open(daemon.log_path, "ab")
        argv = [sys.executable, "-m", "p3hw.cli", daemon.role, "-c", str(daemon.config_path),
                "--status-file", str(daemon.status_path)]
        daemon.proc = self.topology.popen(daemon.site.gw_ns, argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return daemon

    def start(self) -> None:
        if not self.daemons:
            self.write_configs()
        self.start_daemon(0)
        for index in sorted(self.daemons):
            if index != 0:
                self.start_daemon(index)

    def stop_daemon(self, index: int, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int | None:
        daemon = self.daemons[index]
        if daemon.proc is None:
            return None
        if daemon.proc.poll() is None:
            daemon.proc.send_signal(sig)
            try:
                daemon.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.proc.wait()
        return daemon.proc.returncode

    def stop(self) -> None:
        for index in sorted(self.daemons, reverse=True):
            self.stop_daemon(index)

    def __enter__(self) -> Deployment:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- observing

    def peer_status(self, index: int, peer_address: str | None = None) -> dict[str, Any] | None:
        status = self.daemons[index].status()
        if status is None:
            return None
        for peer in status["peers"]:
            if peer_address is None or peer["address"] == peer_address:
                return peer
        return None

    def established(self) -> bool:
        """Every secondary's session to the primary is up (seen from both ends)."""
        primary = self.daemons[0].status()
        if primary is None:
            return False
        up = {p["address"] for p in primary["peers"] if p["state"] == "established"}
        for index, daemon in self.daemons.items():
            if index == 0:
                continue
            if self.wan_address(daemon.site) not in up:
                return False
            mine = daemon.status()
            if mine is None or not all(p["state"] == "established" for p in mine["peers"]):
                return False
        return True

    def wait(self, predicate: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            for daemon in self.daemons.values():
                if daemon.proc is not None and daemon.proc.poll() is not None:
                    raise RuntimeError(f"{daemon.role} of site {daemon.site.index} exited "
                                       f"({daemon.proc.returncode}) while waiting for {what}:\n{daemon.log()[-3000:]}")
            time.sleep(0.1)
        logs = "\n".join(f"--- site {i} ({d.role})\n{d.log()[-2000:]}" for i, d in self.daemons.items())
        raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}\n{logs}")

    def wait_established(self, timeout_s: float = 20.0) -> None:
        self.wait(self.established, timeout_s, "sessions to be established")
