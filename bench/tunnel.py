"""`p3hw bench tunnel`: TCP and UDP through p3hw and the VPNs it is measured against.

One two-site testbed (simulators/netns.py, ``direct_wan=True``: the gateways'
WAN ends are one veth pair, the fastest path) carries, one after the other
on the same namespaces in the same run:

* plain forwarding (a static route across the veth: the limit of the path),
* p3hw over its UDP transport and over raw ESP (simulators/deployment.py),
  with ``rekey_wait`` (default 1 s) so that rekeys happen during the runs,
* OpenVPN 2.6, AES-128-GCM, UDP, user space, two static peers (TLS, pinned
  self-signed certificates),
* strongSwan 5.9 with kernel-libipsec (user-space ESP in UDP, AES-128-GCM),
  one charon per gateway namespace, each with a private ``/run``.

For each path: one TCP stream for ``--tcp-seconds`` (iperf3 from LAN-A's host
to LAN-B's host; ``--tcp-runs`` of them, the median counts) and a UDP stream of 1400-octet IP datagrams at a fixed
offered rate for ``--udp-seconds`` (delivered Mbit/s and loss as iperf3's
receiver counted them). Every figure is also given as a ratio to p3hw UDP
and to plain forwarding. The targets of issue 5 (p3hw TCP >= 4x OpenVPN and
>= 5x strongSwan kernel-libipsec) are stated as met or not met.

A peer that cannot be brought up is reported in the table with the reason,
never left out. The table goes to bench/results.md between its own markers.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p3hw.commands.bench import write_section
from p3hw.reasons import P3Error
from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

BENCH_DIR = pathlib.Path(__file__).resolve().parent
PEERS_DIR = BENCH_DIR / "peers"

#: Inner MTU of every tunnel here: p3hw's TUN (runtime/gateway.py TUN_MTU),
#: charon's fixed kernel-libipsec MTU, and OpenVPN's tun-mtu set to match.
TUNNEL_MTU = 1400
#: UDP datagrams are whole 1400-octet IP packets (20 IPv4 + 8 UDP + 1372 data),
#: so they fit every tunnel's MTU unfragmented.
UDP_IP_OCTETS = 1400
UDP_PAYLOAD = UDP_IP_OCTETS - 28
IPERF_PORT = 5201
#: Offered UDP rates: one every path here should carry, one near p3hw's limit.
UDP_RATES_MBIT = (300, 1000)
#: iperf3's UDP socket buffers (both ends): the default 208 KiB drops bursts at
#: the receiver even on the plain path. 4 MiB is this host's net.core.rmem_max,
#: which is not per namespace (the benchmark leaves the host's value alone).
UDP_SOCKET_BUFFER = "4M"
CHARON = "/usr/lib/ipsec/charon"
UP_TIMEOUT_S = 30.0
# Issue 5 targets: p3hw TCP >= 4x OpenVPN and >= 5x strongSwan kernel-libipsec.
TARGETS = {"openvpn": 4.0, "strongswan": 5.0}


def stop_processes(procs: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM every process, wait up to 10 s each, then SIGKILL; empties *procs*."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    procs.clear()


class PeerUnavailable(Exception):
    """A path could not be brought up; the message says exactly why."""


@dataclass
class Udp:
    offered_mbit: int
    sent_mbps: float            # what iperf3 managed to send (it shares the cores too)
    sent: int
    lost: int
    loss_pct: float
    delivered_mbps: float
    rekeys: int | None = None   # p3hw only: rekeys completed during this run
    kernel: dict[str, int] = field(default_factory=dict)   # kernel drop counters that moved

    @property
    def lost_at_receiver(self) -> int:
        """Datagrams the receiving iperf3's own socket dropped (it was not scheduled in time)."""
        return min(self.kernel.get("lan-b UdpRcvbufErrors", 0), self.lost)


@dataclass
class Result:
    key: str
    name: str
    tcp_runs: list[float] = field(default_factory=list)   # Mbit/s of each TCP run
    udp: list[Udp] = field(default_factory=list)
    tcp_rekeys: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tcp_mbps(self) -> float | None:
        """The median TCP run: one noisy run on a shared machine does not decide."""
        return statistics.median(self.tcp_runs) if self.tcp_runs else None


def _render(template: str, values: dict[str, str]) -> str:
    """Fill ``{name}`` placeholders; config syntax braces (strongSwan) are left alone."""
    text = (PEERS_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _check(proc: subprocess.CompletedProcess[Any], what: str) -> str:
    if proc.returncode != 0:
        raise PeerUnavailable(f"{what} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout or '').strip()[-400:]}")
    return str(proc.stdout or "")


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, detail: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise PeerUnavailable(f"timed out after {timeout_s:g} s waiting for {what}. {detail()}".strip())


# -- the paths -----------------------------------------------------------------


class Path:
    """One way across the testbed; ``up()`` raises PeerUnavailable with the reason."""

    key = ""
    name = ""

    def __init__(self, topo: Topology, workdir: pathlib.Path) -> None:
        self.topo = topo
        self.workdir = workdir / self.key
        self.workdir.mkdir(parents=True, exist_ok=True)

    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def during(self, result: Result, kind: str) -> Callable[[], int | None]:
        """Called before a measurement; the returned callable after it gives the
        rekeys completed meanwhile (None: this path does not count them)."""
        return lambda: None


class Plain(Path):
    key = "plain"
    name = "plain veth forwarding"

    def up(self) -> None:
        a, b = self.topo.a, self.topo.b
        _check(self.topo.run(a.gw_ns, ["ip", "route", "replace", str(b.lan4), "via", str(b.gw_wan4)]), "route on gw-a")
        _check(self.topo.run(b.gw_ns, ["ip", "route", "replace", str(a.lan4), "via", str(a.gw_wan4)]), "route on gw-b")

    def down(self) -> None:
        a, b = self.topo.a, self.topo.b
        self.topo.run(a.gw_ns, ["ip", "route", "del", str(b.lan4)])
        self.topo.run(b.gw_ns, ["ip", "route", "del", str(a.lan4)])


class P3hw(Path):
    def __init__(self, topo: Topology, workdir: pathlib.Path, transport: str, rekey_wait_s: int) -> None:
        self.key = f"p3hw-{transport}"
        self.name = f"p3hw {transport.upper()} transport"
        super().__init__(topo, workdir)
        self.rekey_wait_s = rekey_wait_s
        self.deployment = Deployment(topo, self.workdir, Options(transport=transport, rekey_wait_s=rekey_wait_s))

    def up(self) -> None:
        self.deployment.write_configs()
        self.deployment.start()
        try:
            self.deployment.wait_established(UP_TIMEOUT_S)
        except (TimeoutError, RuntimeError) as exc:
            raise PeerUnavailable(f"p3hw sessions did not come up: {str(exc).splitlines()[0]}") from exc

    def down(self) -> None:
        self.deployment.stop()

    def _counters(self) -> dict[str, Any]:
        peer = self.deployment.peer_status(0) or {}
        status = self.deployment.daemons[0].status() or {}
        secondary = self.deployment.daemons[1].status() or {}
        return {"rekeys": int(peer.get("rekeys_completed", 0)),
                "sessions": int(peer.get("sessions_started", 0)),
                "drops_a": dict((status.get("dataplane") or {}).get("drops") or {}),
                "drops_b": dict((secondary.get("dataplane") or {}).get("drops") or {}),
                "worker_a": dict(status.get("worker") or {}),
                "worker_b": dict(secondary.get("worker") or {})}

    def during(self, result: Result, kind: str) -> Callable[[], int | None]:
        before = self._counters()

        def after() -> int | None:
            time.sleep(1.0)  # the status file is rewritten twice a second
            now = self._counters()
            rekeys = now["rekeys"] - before["rekeys"]
            sessions = now["sessions"] - before["sessions"]
            drops = {}
            for side in ("drops_a", "drops_b"):
                for reason, n in now[side].items():
                    delta = int(n) - int(before[side].get(reason, 0))
                    if delta:
                        drops[f"{side[-1]}:{reason}"] = delta
            for side in ("worker_a", "worker_b"):
                for name in ("no_route_drops", "control_queue_drops", "io_errors"):
                    delta = int(now[side].get(name, 0)) - int(before[side].get(name, 0))
                    if delta:
                        drops[f"{side[-1]}:worker.{name}"] = delta
            if kind.startswith("UDP"):
                def moved(side: str, name: str) -> int:
                    return int(now[side].get(name, 0)) - int(before[side].get(name, 0))
                # Where in the path the datagrams went (LAN-A -> LAN-B is primary -> secondary).
                result.notes.append(
                    f"{kind}: p3hw workers: primary read {moved('worker_a', 'lan_rx_packets'):,} from its TUN and "
                    f"sent {moved('worker_a', 'wan_tx_packets'):,}; secondary received "
                    f"{moved('worker_b', 'wan_rx_packets'):,} and wrote {moved('worker_b', 'lan_tx_packets'):,} "
                    "to its TUN")
            if sessions:
                result.notes.append(f"{kind}: {sessions} new sessions started (a session was lost)")
            if drops:
                result.notes.append(f"{kind}: dataplane drops (a: primary, b: secondary) "
                                    + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
            return rekeys

        return after


class OpenVpn(Path):
    key = "openvpn"
    name = "OpenVPN 2.6 AES-128-GCM (UDP, user space)"
    INNER = {"a": ("10.254.0.1", "10.254.0.2"), "b": ("10.254.0.2", "10.254.0.1")}

    def __init__(self, topo: Topology, workdir: pathlib.Path) -> None:
        super().__init__(topo, workdir)
        self.procs: list[subprocess.Popen[Any]] = []

    def _cert(self, label: str) -> str:
        cert, key = self.workdir / f"{label}.crt", self.workdir / f"{label}.key"
        _check(subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                               "-nodes", "-days", "2", "-subj", f"/CN=bench-{label}", "-keyout", str(key),
                               "-out", str(cert)], capture_output=True, text=True), "openssl req")
        os.chmod(key, 0o600)
        out = _check(subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256"],
                                    capture_output=True, text=True), "openssl x509")
        return out.strip().split("=", 1)[1]

    def up(self) -> None:
        if shutil.which("openvpn") is None:
            raise PeerUnavailable("openvpn is not installed (packaging/bench-deps.sh installs it)")
        fingerprints = {label: self._cert(label) for label in ("a", "b")}
        for label, site, other in (("a", self.topo.a, self.topo.b), ("b", self.topo.b, self.topo.a)):
            local_inner, remote_inner = self.INNER[label]
            conf = self.workdir / f"{label}.conf"
            conf.write_text(_render("openvpn.conf.tmpl", {
                "local_wan": str(site.gw_wan4), "remote_wan": str(other.gw_wan4),
                "local_inner": local_inner, "remote_inner": remote_inner,
                "remote_lan": str(other.lan4.network_address), "remote_mask": str(other.lan4.netmask),
                "tls_role": "tls-server\ndh none" if label == "b" else "tls-client",
                "cert": str(self.workdir / f"{label}.crt"), "key": str(self.workdir / f"{label}.key"),
                "peer_fingerprint": fingerprints["b" if label == "a" else "a"],
                "pidfile": str(self.workdir / f"{label}.pid")}))
            log = open(self.workdir / f"{label}.log", "wb")
            self.procs.append(self.topo.popen(site.gw_ns, ["openvpn", "--config", str(conf)],
                                              stdout=log, stderr=subprocess.STDOUT))
            log.close()

        def ready() -> bool:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise PeerUnavailable(f"openvpn exited ({proc.returncode}): {self._log_tail()}")
            return all("Initialization Sequence Completed" in (self.workdir / f"{x}.log").read_text(errors="replace")
                       for x in ("a", "b"))

        _wait(ready, UP_TIMEOUT_S, "OpenVPN to initialise", self._log_tail)
        cipher_lines = [line for line in (self.workdir / "a.log").read_text(errors="replace").splitlines()
                        if "Data Channel" in line and "cipher" in line.lower()]
        if cipher_lines and "AES-128-GCM" not in cipher_lines[-1]:
            raise PeerUnavailable(f"OpenVPN negotiated another cipher: {cipher_lines[-1]}")

    def _log_tail(self) -> str:
        return " | ".join((self.workdir / f"{x}.log").read_text(errors="replace").strip().splitlines()[-1:][0]
                          for x in ("a", "b") if (self.workdir / f"{x}.log").exists()
                          and (self.workdir / f"{x}.log").read_text().strip())

    def down(self) -> None:
        stop_processes(self.procs)


class StrongSwan(Path):
    key = "strongswan"
    name = "strongSwan 5.9 kernel-libipsec AES-128-GCM (ESP in UDP, user space)"

    def __init__(self, topo: Topology, workdir: pathlib.Path) -> None:
        super().__init__(topo, workdir)
        self.procs: list[subprocess.Popen[Any]] = []

    def _rundir(self, label: str) -> pathlib.Path:
        return self.workdir / f"run-{label}"

    def _swanctl(self, label: str, *args: str) -> subprocess.CompletedProcess[str]:
        # vici is a unix socket in the gateway's private /run (a real directory
        # here), so swanctl reaches it from any namespace.
        uri = f"unix://{self._rundir(label)}/charon.vici"
        return subprocess.run(["swanctl", *args, "--uri", uri], capture_output=True, text=True, timeout=60)

    def up(self) -> None:
        plugin = pathlib.Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
        for needed in (pathlib.Path(CHARON), plugin, pathlib.Path("/usr/lib/ipsec/plugins/libstrongswan-gcm.so")):
            if not needed.exists():
                raise PeerUnavailable(f"{needed} is missing (packaging/bench-deps.sh installs strongswan-charon, "
                                      "libcharon-extra-plugins, libstrongswan-standard-plugins)")
        if shutil.which("swanctl") is None:
            raise PeerUnavailable("swanctl is missing (strongswan-swanctl)")
        psk = secrets.token_hex(32)
        for label, site, other in (("a", self.topo.a, self.topo.b), ("b", self.topo.b, self.topo.a)):
            rundir = self._rundir(label)
            rundir.mkdir(parents=True, exist_ok=True)
            conf = self.workdir / f"strongswan-{label}.conf"
            conf.write_text(_render("strongswan.conf.tmpl", {"rundir": str(rundir)}))
            swanctl = self.workdir / f"swanctl-{label}.conf"
            swanctl.write_text(_render("swanctl.conf.tmpl", {
                "local_wan": str(site.gw_wan4), "remote_wan": str(other.gw_wan4),
                "local_id": f"gw-{label}", "remote_id": f"gw-{'b' if label == 'a' else 'a'}",
                "local_lan": str(site.lan4), "remote_lan": str(other.lan4), "psk": psk}))
            os.chmod(swanctl, 0o600)
            # charon's pid file is /run/charon.pid whatever the config says: a
            # mount namespace per gateway with its own directory bound on /run
            # keeps the two charons apart.
            script = f'mount --bind "{rundir}" /run && exec {CHARON}'
            log = open(self.workdir / f"charon-{label}.out", "wb")
            env = dict(os.environ, STRONGSWAN_CONF=str(conf))
            self.procs.append(self.topo.popen(site.gw_ns, ["unshare", "-m", "--propagation", "private",
                                                           "sh", "-c", script],
                                              stdout=log, stderr=subprocess.STDOUT, env=env))
            log.close()
        for label in ("a", "b"):
            sock = self._rundir(label) / "charon.vici"
            _wait(lambda s=sock: s.exists(), UP_TIMEOUT_S, f"charon {label}'s vici socket",
                  lambda lab=label: self._log_tail(lab))
            _check(self._swanctl(label, "--load-all", "--file", str(self.workdir / f"swanctl-{label}.conf")),
                   f"swanctl --load-all on gw-{label}")
        _check(self._swanctl("a", "--initiate", "--child", "lan", "--timeout", "20"), "swanctl --initiate")
        sas = _check(self._swanctl("a", "--list-sas"), "swanctl --list-sas")
        if "INSTALLED" not in sas:
            raise PeerUnavailable(f"no CHILD_SA installed: {sas.strip()[-300:]}")
        if "AES_GCM_16-128" not in sas:
            raise PeerUnavailable(f"CHILD_SA is not AES-128-GCM: {sas.strip()[-300:]}")
        if "ipsec0" not in _check(self.topo.run(self.topo.a.gw_ns, ["ip", "-o", "link"]), "ip link"):
            raise PeerUnavailable("kernel-libipsec did not create its ipsec0 TUN device")

    def _log_tail(self, label: str) -> str:
        for path in (self._rundir(label) / "charon.log", self.workdir / f"charon-{label}.out"):
            if path.exists() and path.read_text(errors="replace").strip():
                return path.read_text(errors="replace").strip().splitlines()[-1]
        return ""

    def down(self) -> None:
        stop_processes(self.procs)


# -- measuring -----------------------------------------------------------------


class Bench:
    def __init__(self, topo: Topology, tcp_seconds: int, udp_seconds: int, udp_rates: tuple[int, ...],
                 tcp_runs: int = 1) -> None:
        self.topo = topo
        self.tcp_seconds = tcp_seconds
        self.tcp_runs = tcp_runs
        self.udp_seconds = udp_seconds
        self.udp_rates = udp_rates
        self.server: subprocess.Popen[Any] | None = None

    def prepare(self) -> None:
        # A new TCP connection starts from the metrics the last one to the same
        # host left (ssthresh, cwnd): without this the second path measured
        # would inherit the first one's window.
        for ns in self.topo.namespaces:
            self.topo.run(ns, ["sysctl", "-qw", "net.ipv4.tcp_no_metrics_save=1"])
        self.server = self.topo.popen(self.topo.b.lan_ns, ["iperf3", "-s", "-B", str(self.topo.b.host4),
                                                           "-p", str(IPERF_PORT)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def flush_metrics(self) -> None:
        for ns in self.topo.namespaces:
            self.topo.run(ns, ["ip", "tcp_metrics", "flush", "all"])

    def kernel_counters(self) -> dict[str, int]:
        """Where datagrams can vanish outside the VPN daemons: UDP socket
        buffer overflows and interface drops, per namespace (gw-a, gw-b, lan-b)."""
        counters: dict[str, int] = {}
        # Packets a TUN write or veth hands to a full per-CPU backlog
        # (net.core.netdev_max_backlog) are dropped and counted only here,
        # machine-wide (other work on the machine can add to it).
        try:
            softnet = pathlib.Path("/proc/net/softnet_stat").read_text().split("\n")
            counters["machine-wide softnet backlog drops"] = sum(int(line.split()[1], 16)
                                                                 for line in softnet if line.split())
        except (OSError, IndexError, ValueError):
            pass
        for label, ns in (("gw-a", self.topo.a.gw_ns), ("gw-b", self.topo.b.gw_ns), ("lan-b", self.topo.b.lan_ns)):
            snmp = self.topo.run(ns, ["cat", "/proc/net/snmp"]).stdout.splitlines()
            udp = [line.split()[1:] for line in snmp if line.startswith("Udp:")]
            if len(udp) == 2:
                for name, value in zip(*udp, strict=False):
                    if name in ("RcvbufErrors", "SndbufErrors", "InErrors", "MemErrors"):
                        counters[f"{label} Udp{name}"] = int(value)
            # Raw sockets (p3hw's ESP transport) count their overflows per socket.
            raw = self.topo.run(ns, ["cat", "/proc/net/raw"]).stdout.splitlines()[1:]
            counters[f"{label} raw socket drops"] = sum(int(line.split()[-1]) for line in raw if line.split())
            try:
                links = json.loads(self.topo.run(ns, ["ip", "-s", "-j", "link"]).stdout or "[]")
            except ValueError:
                links = []
            for link in links:
                stats = link.get("stats64") or {}
                for direction in ("rx", "tx"):
                    counters[f"{label} {link.get('ifname')} {direction}_dropped"] = \
                        int((stats.get(direction) or {}).get("dropped", 0))
        return counters

    def counters_moved(self, before: dict[str, int]) -> dict[str, int]:
        after = self.kernel_counters()
        return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0) > 0}

    def reachable(self) -> bool:
        return self.topo.ping(self.topo.a.lan_ns, self.topo.b.host4, count=3, interval_s=0.2).received > 0

    def iperf(self, extra: list[str], seconds: int) -> dict[str, Any]:
        argv = ["iperf3", "-c", str(self.topo.b.host4), "-p", str(IPERF_PORT), "-t", str(seconds), "-J", *extra]
        for attempt in (1, 2):
            proc = self.topo.run(self.topo.a.lan_ns, argv, timeout=seconds + 60)
            try:
                data = json.loads(proc.stdout)
            except ValueError as exc:
                raise PeerUnavailable(f"iperf3 gave no JSON (exit {proc.returncode}): "
                                      f"{proc.stderr.strip()[-300:]}") from exc
            # The server can still be closing the previous test: one more try.
            if "error" in data and "busy" in str(data["error"]) and attempt == 1:
                time.sleep(2.0)
                continue
            if "error" in data:
                raise PeerUnavailable(f"iperf3: {data['error']}")
            return dict(data)
        raise AssertionError("unreachable")

    def measure(self, path: Path) -> Result:
        result = Result(path.key, path.name)
        print(f"tunnel bench: {path.name}: bringing up", flush=True)
        try:
            path.up()
            if not self.reachable():
                raise PeerUnavailable("up, but LAN-A cannot ping LAN-B's host through it")
            after = path.during(result, "TCP")
            retrans = []
            for run_index in range(self.tcp_runs):
                self.flush_metrics()
                print(f"tunnel bench: {path.name}: TCP {self.tcp_seconds} s ({run_index + 1}/{self.tcp_runs})",
                      flush=True)
                tcp = self.iperf([], self.tcp_seconds)
                result.tcp_runs.append(tcp["end"]["sum_received"]["bits_per_second"] / 1e6)
                retrans.append(tcp["end"]["sum_sent"].get("retransmits"))
            result.tcp_rekeys = after()
            if any(r is not None for r in retrans):
                result.notes.append("TCP: retransmitted segments per run " + ", ".join(str(r) for r in retrans))
            for rate in self.udp_rates:
                self.flush_metrics()
                print(f"tunnel bench: {path.name}: UDP {rate} Mbit/s offered, {self.udp_seconds} s", flush=True)
                kind = f"UDP {rate} Mbit/s"
                after = path.during(result, kind)
                kernel = self.kernel_counters()
                udp = self.iperf(["-u", "-b", f"{rate}M", "-l", str(UDP_PAYLOAD), "-w", UDP_SOCKET_BUFFER],
                                 self.udp_seconds)
                rekeys = after()
                moved = self.counters_moved(kernel)
                if moved:
                    result.notes.append(f"{kind}: kernel drop counters moved: "
                                        + ", ".join(f"{k} +{v}" for k, v in moved.items()))
                total = udp["end"]["sum"]
                sent, lost = int(total["packets"]), int(total["lost_packets"])
                seconds = float(total["seconds"]) or float(self.udp_seconds)
                # Delivered: data bits that reached the receiver per second.
                delivered = max(sent - lost, 0) * UDP_PAYLOAD * 8 / seconds / 1e6
                sent_mbps = sent * UDP_PAYLOAD * 8 / seconds / 1e6
                result.udp.append(Udp(rate, sent_mbps, sent, lost, float(total["lost_percent"]), delivered, rekeys,
                                      moved))
        except (PeerUnavailable, subprocess.TimeoutExpired, OSError, KeyError, RuntimeError, TimeoutError) as exc:
            result.error = str(exc) or type(exc).__name__
            print(f"tunnel bench: {path.name}: NOT MEASURED: {exc}", flush=True)
        finally:
            try:
                path.down()
            except Exception as exc:  # noqa: BLE001 - a failed teardown is reported, the run goes on
                result.notes.append(f"teardown: {exc}")
            self._remove_leftover_routes()
        return result

    def _remove_leftover_routes(self) -> None:
        """A path that left a route to the other LAN would carry the next path's traffic."""
        a, b = self.topo.a, self.topo.b
        for ns, lan in ((a.gw_ns, b.lan4), (b.gw_ns, a.lan4)):
            for table in ("main", "220"):
                self.topo.run(ns, ["ip", "route", "flush", "exact", str(lan), "table", table])

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=5)


# -- the report ----------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, ref: float | None) -> str:
    if value is None or not ref:
        return "—"
    return f"{value / ref:.2f}"


def _udp_at(result: Result | None, rate: int) -> Udp | None:
    if result is None:
        return None
    return next((u for u in result.udp if u.offered_mbit == rate), None)


def render(results: list[Result], tcp_seconds: int, udp_seconds: int, udp_rates: tuple[int, ...], rekey_wait_s: int,
           when: str, versions: dict[str, str], load: float | None = None, tcp_runs: int = 1) -> str:
    by_key = {r.key: r for r in results}
    p3 = by_key.get("p3hw-udp")
    plain = by_key.get("plain")
    rates = " and ".join(f"{rate}" for rate in udp_rates)
    lines = [
        "## Tunnel: single-stream TCP and fixed-rate UDP, LAN to LAN through each VPN",
        "",
        f"{when} UTC · {platform.machine()} · {os.cpu_count()} cores (both sites, both gateways and iperf3 share "
        f"them) · kernel {platform.release()} · " + " · ".join(f"{k} {v}" for k, v in versions.items())
        + ("" if load is None else f" · load average {load:.2f} when the run began (other work shares the cores)"),
        "",
        "Setup: one two-site testbed (simulators/netns.py, `direct_wan=True`: the gateways' WAN ends are one veth "
        "pair), every path measured one after the other on the same namespaces in the same run. iperf3 from LAN-A's "
        f"host to LAN-B's host. TCP: one stream, {tcp_seconds} s, receiver's rate; "
        + (f"{tcp_runs} runs per path, the median counts (range beside it). " if tcp_runs > 1 else "")
        + f"UDP: {UDP_IP_OCTETS}-octet IP "
        f"datagrams ({UDP_PAYLOAD} octets of data) offered at fixed rates of {rates} Mbit/s for {udp_seconds} s "
        f"each, {UDP_SOCKET_BUFFER}iB socket buffers; delivered = data bits the receiver got per second; loss = "
        "datagrams iperf3's receiver never saw. Every tunnel's inner MTU is "
        f"{TUNNEL_MTU}. TCP metrics are flushed (and not saved) between runs. p3hw runs with "
        f"`rekey_wait = {rekey_wait_s}` (rekeys during every run, counted in the tables). Ratios: to p3hw UDP "
        "transport, and to plain veth forwarding (the limit of this path).",
        "",
        "| path | TCP Mbit/s | runs (min–max) | ÷ p3hw UDP | ÷ plain | p3hw rekeys during the runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.error is not None:
            lines.append(f"| {r.name} | not measured: {r.error.replace('|', '/')} | | | | |")
            continue
        rekeys = "" if r.tcp_rekeys is None else str(r.tcp_rekeys)
        spread = f"{min(r.tcp_runs):,.0f}–{max(r.tcp_runs):,.0f}" if len(r.tcp_runs) > 1 else ""
        lines.append(f"| {r.name} | {_fmt(r.tcp_mbps)} | {spread} | {_ratio(r.tcp_mbps, p3 and p3.tcp_mbps)} | "
                     f"{_ratio(r.tcp_mbps, plain and plain.tcp_mbps)} | {rekeys} |")
    lines += ["", "| path | UDP offered Mbit/s | sent Mbit/s | delivered Mbit/s | lost datagrams "
              "| of which the receiving socket dropped | ÷ p3hw UDP | ÷ plain | p3hw rekeys during the run |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for rate in udp_rates:
        for r in results:
            if r.error is not None:
                lines.append(f"| {r.name} | {rate} | not measured (see above) | | | | | | |")
                continue
            u = _udp_at(r, rate)
            if u is None:
                continue
            p3u, plu = _udp_at(p3, rate), _udp_at(plain, rate)
            rekeys = "" if u.rekeys is None else str(u.rekeys)
            lines.append(f"| {r.name} | {rate} | {u.sent_mbps:,.0f} | {u.delivered_mbps:,.0f} | {u.lost:,} of {u.sent:,} "
                         f"({u.loss_pct:.3g} %) | {u.lost_at_receiver:,} | {_ratio(u.delivered_mbps, p3u and p3u.delivered_mbps)} | "
                         f"{_ratio(u.delivered_mbps, plu and plu.delivered_mbps)} | {rekeys} |")
    lines += ["", "Targets (issue 5: p3hw UDP transport's TCP against the others' TCP, in this run):"]
    for key, factor in TARGETS.items():
        other = by_key.get(key)
        label = "OpenVPN" if key == "openvpn" else "strongSwan kernel-libipsec"
        if p3 is None or p3.tcp_mbps is None:
            why = "not run" if p3 is None else "p3hw UDP transport failed"
            lines.append(f"* p3hw TCP ≥ {factor:g}× {label}: not measured ({why})")
        elif other is None or other.tcp_mbps is None:
            why = "not run" if other is None else f"{label} failed: see the table"
            lines.append(f"* p3hw TCP ≥ {factor:g}× {label}: not measured ({why})")
        else:
            ratio = p3.tcp_mbps / other.tcp_mbps
            verdict = "met" if ratio >= factor else "NOT met"
            lines.append(f"* p3hw TCP ≥ {factor:g}× {label}: **{verdict}**: {p3.tcp_mbps:,.0f} vs "
                         f"{other.tcp_mbps:,.0f} Mbit/s = {ratio:.2f}×")
    for key in ("p3hw-udp", "p3hw-esp"):
        r = by_key.get(key)
        if r is None or r.error is not None:
            continue
        for u in r.udp:
            lost = ("**no datagram lost**" if u.lost == 0
                    else f"**{u.lost:,} of {u.sent:,} datagrams lost ({u.loss_pct:.3g} %)**")
            if u.lost:
                lost += (f": {u.lost_at_receiver:,} dropped by the receiving iperf3's socket (lan-b UdpRcvbufErrors: "
                         f"the receiver not scheduled in time), {u.lost - u.lost_at_receiver:,} in or around the "
                         "tunnel (see the notes)")
            lines.append(f"* {r.name}, UDP at {u.offered_mbit} Mbit/s across {u.rekeys} rekeys "
                         f"(rekey_wait = {rekey_wait_s}): {lost}")
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        lines += ["", "Notes:"]
        lines += [f"* {name}: {note}" for name, note in notes]
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"

    ovpn = first_line(["openvpn", "--version"]).split(" x86_64")[0].removeprefix("OpenVPN ")
    swan = first_line([CHARON, "--version"]).removeprefix("Linux strongSwan ")
    iperf = first_line(["iperf3", "--version"]).split(" (")[0].removeprefix("iperf ")
    return {"OpenVPN": ovpn, "strongSwan": swan, "iperf3": iperf}


PATHS = ("plain", "p3hw-udp", "p3hw-esp", "openvpn", "strongswan")


def run(tcp_seconds: int = 10, udp_seconds: int = 10, udp_rates: tuple[int, ...] = UDP_RATES_MBIT,
        rekey_wait_s: int = 1, only: tuple[str, ...] = PATHS, write: bool = True, tcp_runs: int = 3) -> list[Result]:
    if os.geteuid() != 0:
        raise P3Error("NEED_ROOT", "the tunnel benchmark builds network namespaces", hint="run as root")
    if shutil.which("iperf3") is None:
        raise P3Error("OS_ERROR", "iperf3 is not installed", hint="run packaging/bench-deps.sh as root")
    when = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M}"
    load = os.getloadavg()[0]
    results: list[Result] = []
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="p3hw-bench-tunnel-"))
    with Topology.two_site(direct_wan=True, prefix="p3b") as topo:
        bench = Bench(topo, tcp_seconds, udp_seconds, udp_rates, tcp_runs)
        bench.prepare()
        try:
            factories: dict[str, Callable[[], Path]] = {
                "plain": lambda: Plain(topo, workdir),
                "p3hw-udp": lambda: P3hw(topo, workdir, "udp", rekey_wait_s),
                "p3hw-esp": lambda: P3hw(topo, workdir, "esp", rekey_wait_s),
                "openvpn": lambda: OpenVpn(topo, workdir),
                "strongswan": lambda: StrongSwan(topo, workdir),
            }
            for key in PATHS:
                if key in only:
                    results.append(bench.measure(factories[key]()))
        finally:
            bench.close()
    text = render(results, tcp_seconds, udp_seconds, udp_rates, rekey_wait_s, when, _versions(), load, tcp_runs)
    print(text)
    if any(r.error for r in results):
        print(f"\n(configs and logs of this run, kept because a path failed: {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)    # configs, keys and logs of a clean run
    if write:
        write_section("tunnel", text)
    return results


if __name__ == "__main__":  # ad hoc: python bench/tunnel.py [path ...] (prints only)
    import sys

    run(tcp_seconds=5, udp_seconds=5, only=tuple(sys.argv[1:]) or PATHS, write=False, tcp_runs=1)
