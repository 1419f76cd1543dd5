"""Network-namespace testbed: LAN | gateway | WAN | gateway | LAN, and its star.

Every site is two namespaces, a LAN host and its gateway; the gateways meet
on one WAN segment. Site 0 is the primary, sites 1..N the secondaries (the
two-site topology is the star with one secondary, sites "a" and "b")::

    lan0 --eth0~lan0-- gw0 --wan0~site0--+
                                         |  bridge "wan" in namespace wan
    lan1 --eth0~lan0-- gw1 --wan0~site1--+  (or site1 ==relay== relay1~port1
    ...                                  |   when that link is impaired)

A secondary's link can be impaired: ``site{i}`` is then not a bridge port;
the WAN simulator (``p3hw.simulators.wan``) relays between it and
``relay{i}``, whose veth peer ``port{i}`` is the bridge port. With
``direct_wan=True`` (two sites, no impairment) the gateways' ``wan0`` are
the two ends of one veth pair and there is no wan namespace: the fastest
path, for benchmarks.

Addresses (documentation / private ranges only, all inside the namespaces):

=================  ==========================  ===========================
what               IPv4                        IPv6
=================  ==========================  ===========================
site i LAN         10.<i+1>.0.0/24             fd00:10:<i+1>::/64
LAN host (eth0)    10.<i+1>.0.2                fd00:10:<i+1>::2
gateway lan0       10.<i+1>.0.1                fd00:10:<i+1>::1
WAN segment        198.18.0.0/24 (RFC 2544)    fd00:198:18::/64
gateway wan0       198.18.0.<i+1>              fd00:198:18::<i+1>
=================  ==========================  ===========================

(``<i+1>`` is written in hex in IPv6.) LAN hosts route by default through
their gateway; gateways forward (IPv4 and IPv6) but have no route to the
other LANs unless ``plain_routes=True`` -- the VPN daemons install those
through their tunnels, and a plain route would leak traffic around them.

Namespace names are ``<prefix>-<run id>-<node>`` (``p3t-4f09ab-gw1``). A run
holds ``flock`` on ``/run/p3hw-testbed/<prefix>-<run id>.lock`` while it
lives, so ``cleanup_stale`` removes only the leftovers of dead runs and
never those of a run going on in parallel.
"""

from __future__ import annotations

import atexit
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p3hw.reasons import P3Error
from p3hw.simulators.wan import WanParams, WanReport

try:
    from pyroute2 import IPRoute
    from pyroute2 import netns as pyroute2_netns
except ImportError:  # pragma: no cover - pyroute2 is a dependency; say so if missing
    IPRoute = None
    pyroute2_netns = None

__all__ = ["Topology", "Site", "WanLink", "WanParams", "PingResult", "cleanup_stale", "processes_in", "DEFAULT_PREFIX"]

DEFAULT_PREFIX = "p3t"
LOCK_DIR = Path("/run/p3hw-testbed")
NETNS_DIR = Path("/run/netns")

WAN_SUBNET4 = ipaddress.IPv4Network("198.18.0.0/24")
WAN_SUBNET6 = ipaddress.IPv6Network("fd00:198:18::/64")

# Interface names (each namespace has its own, so they repeat across sites).
LAN_HOST_IF = "eth0"
GW_LAN_IF = "lan0"
GW_WAN_IF = "wan0"
WAN_BRIDGE = "wan"

MAX_SECONDARIES = 200  # 198.18.0.<i+1> and 10.<i+1>.0.0/24 stay valid
IFA_F_NODAD = 0x02  # <linux/if_addr.h>: the address is usable at once, no DAD wait
PROCESS_STOP_TIMEOUT_S = 3.0
RELAY_START_TIMEOUT_S = 10.0
LINKS_UP_TIMEOUT_S = 10.0

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")


def _ns_name_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}-([0-9a-f]{{6}})-[a-z0-9]+$")


@dataclass(frozen=True)
class Site:
    """One site: a LAN host namespace and its gateway namespace, with addresses."""

    index: int
    label: str
    lan_ns: str
    gw_ns: str
    lan4: ipaddress.IPv4Network
    lan6: ipaddress.IPv6Network
    host4: ipaddress.IPv4Address
    host6: ipaddress.IPv6Address
    gw_lan4: ipaddress.IPv4Address
    gw_lan6: ipaddress.IPv6Address
    gw_wan4: ipaddress.IPv4Address
    gw_wan6: ipaddress.IPv6Address

    @property
    def is_primary(self) -> bool:
        return self.index == 0

    @classmethod
    def numbered(cls, index: int, label: str, ns_base: str) -> Site:
        lan4 = ipaddress.IPv4Network(f"10.{index + 1}.0.0/24")
        lan6 = ipaddress.IPv6Network(f"fd00:10:{index + 1:x}::/64")
        return cls(
            index=index,
            label=label,
            lan_ns=f"{ns_base}-lan{index}",
            gw_ns=f"{ns_base}-gw{index}",
            lan4=lan4,
            lan6=lan6,
            host4=lan4[2],
            host6=lan6[2],
            gw_lan4=lan4[1],
            gw_lan6=lan6[1],
            gw_wan4=WAN_SUBNET4[index + 1],
            gw_wan6=WAN_SUBNET6[index + 1],
        )


@dataclass(frozen=True)
class PingResult:
    """What ``ping`` reported: counts, and the RTTs when any reply came."""

    transmitted: int
    received: int
    duplicates: int
    rtt_min_ms: float | None
    rtt_avg_ms: float | None
    rtt_max_ms: float | None
    output: str

    @classmethod
    def parse(cls, output: str) -> PingResult:
        counts = re.search(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?", output)
        if counts is None:
            # "connect: Network is unreachable" and the like: nothing was sent or received.
            return cls(0, 0, 0, None, None, None, output)
        rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", output)
        return cls(
            transmitted=int(counts.group(1)),
            received=int(counts.group(2)),
            duplicates=int(counts.group(3) or 0),
            rtt_min_ms=float(rtt.group(1)) if rtt else None,
            rtt_avg_ms=float(rtt.group(2)) if rtt else None,
            rtt_max_ms=float(rtt.group(3)) if rtt else None,
            output=output,
        )


# -- namespace plumbing --------------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        raise P3Error("NEED_ROOT", "building network namespaces needs root (CAP_NET_ADMIN)", "run as root")
    if IPRoute is None:
        raise P3Error("OS_ERROR", "pyroute2 is not installed", "pip install pyroute2")


def _run_in_namespace(ns: str, action: Callable[[], None], what: str) -> None:
    """Run ``action`` in a forked child that entered ``ns`` (this process never changes namespace)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: enter, act, and leave without running any Python cleanup
        code = 1
        try:
            os.close(read_end)
            pyroute2_netns.setns(ns, flags=0)
            action()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported through the pipe
            os.write(write_end, str(exc).encode()[:500])
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        problem = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise P3Error("OS_ERROR", f"cannot set {what} in namespace {ns}: {problem or status}")


def _write_sysctls(ns: str, values: Mapping[str, str]) -> None:
    """Write /proc/sys entries as seen from inside ``ns`` (sysctls under net/ are per namespace)."""

    def write() -> None:
        for key, value in values.items():
            with open(f"/proc/sys/{key}", "w") as entry:
                entry.write(value)

    _run_in_namespace(ns, write, "sysctls " + ", ".join(values))


def _disable_segmentation_offloads(ns: str, ifnames: Sequence[str]) -> None:
    """Make the kernel cut GSO super-frames into wire-sized frames before ``ifnames`` transmit.

    Without this a TCP or UDP-GSO sender hands a veth up to 64 KiB in one
    skb, and the WAN simulator would drop, delay or corrupt dozens of
    packets as one. Done with ethtool's ioctl from a child inside ``ns``.
    """
    _disable_offloads(ns, ifnames, checksums=False)


def _disable_offloads(ns: str, ifnames: Sequence[str], *, checksums: bool) -> None:
    """Segmentation offloads off on ``ifnames`` and, with ``checksums``, transmit checksumming too."""

    def disable() -> None:
        from pyroute2.ethtool import Ethtool

        with Ethtool() as ethtool:
            for ifname in ifnames:
                features = ethtool.get_features(ifname)
                for name, feature in features.features.items():
                    off = "segmentation" in name or name == "tx-gso-list"
                    off = off or (checksums and name.startswith("tx-checksum"))
                    if off and feature.enable:
                        feature.enable = False
                ethtool.set_features(ifname, features)

    _run_in_namespace(ns, disable, f"offloads of {', '.join(ifnames)}")


def processes_in(namespaces: Sequence[str]) -> dict[str, list[int]]:
    """pids whose network namespace is one of ``namespaces`` (by inode, as ``ip netns pids``)."""
    wanted: dict[tuple[int, int], str] = {}
    for ns in namespaces:
        try:
            st = os.stat(NETNS_DIR / ns)
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = ns
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        ns = wanted.get((st.st_dev, st.st_ino))
        if ns is not None and int(entry) != os.getpid():
            found.setdefault(ns, []).append(int(entry))
    return found


def _kill_processes_in(namespaces: Sequence[str]) -> None:
    """SIGKILL what still runs in our namespaces, or they would outlive their removal."""
    for _ in range(3):
        running = processes_in(namespaces)
        if not running:
            return
        for pids in running.values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)


def _remove_namespaces(namespaces: Sequence[str]) -> list[str]:
    _kill_processes_in(namespaces)
    removed = []
    for ns in namespaces:
        if (NETNS_DIR / ns).exists():
            try:
                pyroute2_netns.remove(ns)
                removed.append(ns)
            except OSError as exc:
                print(f"p3hw testbed: cannot remove namespace {ns}: {exc}", file=sys.stderr)
    return removed


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Remove namespaces left behind by runs that died; returns the names removed.

    A run is dead when nobody holds the flock on its lock file (or the file
    is gone); namespaces of a live run -- another pytest session, the demo --
    are left alone.
    """
    _require_root()
    pattern = _ns_name_re(prefix)
    by_run: dict[str, list[str]] = {}
    for ns in pyroute2_netns.listnetns():
        match = pattern.match(ns)
        if match:
            by_run.setdefault(match.group(1), []).append(ns)
    if LOCK_DIR.is_dir():
        for lock in LOCK_DIR.glob(f"{prefix}-*.lock"):
            run_id = lock.stem[len(prefix) + 1 :]
            if re.fullmatch(r"[0-9a-f]{6}", run_id):
                by_run.setdefault(run_id, [])
    removed: list[str] = []
    for run_id, namespaces in sorted(by_run.items()):
        lock_path = LOCK_DIR / f"{prefix}-{run_id}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its run is alive
            removed += _remove_namespaces(namespaces)
            lock_path.unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


# -- the safety net: tear down on interpreter exit and on SIGTERM/SIGHUP ---------

_LIVE: set[Topology] = set()
_LIVE_LOCK = threading.Lock()
_SAFETY_NET_INSTALLED = False
_SAFETY_NET_PID = 0


def _teardown_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for topology in live:
        topology.teardown()


def _exit_on_signal(signum: int, _frame: object) -> None:
    if os.getpid() != _SAFETY_NET_PID:
        # A forked helper (pyroute2 forks to enter namespaces) inherits this
        # handler; unwinding there would tear down its parent's topology.
        os._exit(128 + signum)
    # SystemExit unwinds every ``with Topology`` and then runs atexit.
    raise SystemExit(128 + signum)


def _install_safety_net() -> None:
    global _SAFETY_NET_INSTALLED, _SAFETY_NET_PID
    if _SAFETY_NET_INSTALLED:
        return
    _SAFETY_NET_INSTALLED = True
    _SAFETY_NET_PID = os.getpid()
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:  # never replace someone else's handler
                signal.signal(sig, _exit_on_signal)


# -- the impaired links ------------------------------------------------------------


class WanLink:
    """The WAN simulator process on one secondary's link (between relay{i} and site{i})."""

    def __init__(self, topology: Topology, site: Site, params: WanParams) -> None:
        self.topology = topology
        self.site = site
        self.params = params.validate()
        # a is the primary's side, b the secondary's: the report's a_to_b counts
        # primary -> secondary (site "a" -> site "b" in a two-site topology).
        self.if_a = f"relay{site.index}"  # toward the bridge, where the primary is
        self.if_b = f"site{site.index}"  # toward the secondary's gateway
        self.stats_path = topology.workdir / f"wan{site.index}.json"
        self.log_path = topology.workdir / f"wan{site.index}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.final: WanReport | None = None

    def start(self) -> None:
        self.stats_path.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "p3hw.simulators.wan",
            "--a", self.if_a, "--b", self.if_b,
            *self.params.to_argv(),
            "--stats", str(self.stats_path),
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = self.topology.popen(self.topology.wan_ns, argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + RELAY_START_TIMEOUT_S
        while WanReport.read(self.stats_path) is None:  # snapshot 0 is written once both sockets are bound
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise P3Error("OS_ERROR", f"WAN simulator for site {self.site.label} did not start: {self.log()}")
            time.sleep(0.01)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def stats(self, timeout_s: float = 5.0) -> WanReport:
        """A fresh snapshot of the counters (asks the relay with SIGUSR1)."""
        if self.process is None or self.process.poll() is not None:
            if self.final is not None:
                return self.final
            raise P3Error("OS_ERROR", f"WAN simulator for site {self.site.label} is not running: {self.log()}")
        before = WanReport.read(self.stats_path)
        seen = -1 if before is None else before.snapshot
        self.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while True:
            report = WanReport.read(self.stats_path)
            if report is not None and report.snapshot > seen:
                return report
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise P3Error("OS_ERROR", f"WAN simulator for site {self.site.label} did not report: {self.log()}")
            time.sleep(0.01)

    def stop(self) -> WanReport | None:
        """Stop the relay; returns its final counters (also kept in ``final``)."""
        process, self.process = self.process, None
        if process is None:
            return self.final
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(PROCESS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        report = WanReport.read(self.stats_path)
        if report is not None and report.final:
            self.final = report
        return self.final


# -- the topology ------------------------------------------------------------------


class Topology:
    """A primary site and ``secondaries`` secondary sites in network namespaces.

    Use it as a context manager (``with Topology.two_site() as topo:``) or
    call ``build()`` and ``teardown()``; teardown is idempotent and also
    runs at interpreter exit and on SIGTERM/SIGHUP.

    ``wan``: a ``WanParams`` for every secondary's link, or a mapping from
    secondary index (1..N) to its ``WanParams``; links not named are plain
    bridge ports.
    """

    def __init__(
        self,
        secondaries: int = 1,
        *,
        wan: WanParams | Mapping[int, WanParams] | None = None,
        plain_routes: bool = False,
        direct_wan: bool = False,
        prefix: str = DEFAULT_PREFIX,
        labels: Sequence[str] | None = None,
        dpdk_sites: Sequence[int] = (),
    ) -> None:
        if not 1 <= secondaries <= MAX_SECONDARIES:
            raise P3Error("USAGE", f"a topology has 1..{MAX_SECONDARIES} secondaries, not {secondaries}")
        if not _PREFIX_RE.match(prefix):
            raise P3Error("USAGE", f"namespace prefix {prefix!r}: 1-8 lower-case letters and digits, a letter first")
        if isinstance(wan, WanParams):
            wan = {index: wan for index in range(1, secondaries + 1)}
        self.wan_params: dict[int, WanParams] = {k: v.validate() for k, v in (wan or {}).items()}
        for index in self.wan_params:
            if not 1 <= index <= secondaries:
                raise P3Error("USAGE", f"wan= names site {index}; impaired links are secondaries 1..{secondaries}")
        if direct_wan and (secondaries != 1 or self.wan_params):
            raise P3Error("USAGE", "direct_wan needs exactly two sites and no WAN impairment")
        if labels is None:
            labels = ["primary"] + [f"s{i}" for i in range(1, secondaries + 1)]
        if len(labels) != secondaries + 1:
            raise P3Error("USAGE", f"{len(labels)} labels for {secondaries + 1} sites")
        for index in dpdk_sites:
            if not 0 <= index <= secondaries:
                raise P3Error("USAGE", f"dpdk_sites names site {index}; sites are 0..{secondaries}")
            if index in self.wan_params:
                raise P3Error("USAGE", f"site {index} runs DPDK ports: its WAN link cannot be impaired as well")
        self.dpdk_sites = frozenset(dpdk_sites)
        self.prefix = prefix
        self.plain_routes = plain_routes
        self.direct_wan = direct_wan
        self.run_id = secrets.token_hex(3)
        self.sites = [Site.numbered(i, label, self.ns_base) for i, label in enumerate(labels)]
        self.wan_ns: str | None = None if direct_wan else f"{self.ns_base}-wan"
        self.wan_links: dict[int, WanLink] = {}
        self.workdir = Path(".")
        self._processes: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        self._lock_fd: int | None = None
        self._lock_path: Path | None = None
        self._built = False
        self._owner_pid = os.getpid()

    @classmethod
    def two_site(cls, **options: Any) -> Topology:
        """LAN-A | gateway-A | WAN | gateway-B | LAN-B; site "a" is the primary."""
        return cls(1, labels=("a", "b"), **options)

    @classmethod
    def star(cls, secondaries: int, **options: Any) -> Topology:
        """One primary and ``secondaries`` secondaries on one WAN segment."""
        return cls(secondaries, **options)

    # -- naming ---------------------------------------------------------------

    @property
    def ns_base(self) -> str:
        return f"{self.prefix}-{self.run_id}"

    @property
    def primary(self) -> Site:
        return self.sites[0]

    @property
    def secondaries(self) -> list[Site]:
        return self.sites[1:]

    @property
    def a(self) -> Site:
        return self.sites[0]

    @property
    def b(self) -> Site:
        return self.sites[1]

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of this topology, built or not."""
        names = [ns for site in self.sites for ns in (site.lan_ns, site.gw_ns)]
        return names + ([self.wan_ns] if self.wan_ns else [])

    def site(self, label_or_index: str | int) -> Site:
        for site in self.sites:
            if label_or_index in (site.label, site.index):
                return site
        raise P3Error("USAGE", f"no site {label_or_index!r} in this topology")

    # -- building -------------------------------------------------------------

    def __enter__(self) -> Topology:
        return self.build()

    def __exit__(self, *_exc: object) -> None:
        self.teardown()

    def build(self) -> Topology:
        _require_root()
        if self._built:
            return self
        self._owner_pid = os.getpid()
        _install_safety_net()
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._take_run_lock()
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.ns_base}-"))
            self._create_namespaces()
            self._build_lans()
            if self.direct_wan:
                self._build_direct_wan()
            else:
                self._build_bridged_wan()
            self._address_wan()
            if self.dpdk_sites:
                self._hand_ports_to_dpdk()
            if self.plain_routes:
                self._add_plain_routes()
            self._wait_until_links_up()
            for index, params in sorted(self.wan_params.items()):
                link = WanLink(self, self.sites[index], params)
                self.wan_links[index] = link
                link.start()
        except BaseException:
            self.teardown()
            raise
        self._built = True
        return self

    def _take_run_lock(self) -> None:
        LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        existing = set(pyroute2_netns.listnetns())
        for _ in range(16):
            path = LOCK_DIR / f"{self.ns_base}.lock"
            clash = any(ns.startswith(self.ns_base + "-") for ns in existing)
            if not clash:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    fd = None
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    self._lock_fd, self._lock_path = fd, path
                    return
            self.run_id = secrets.token_hex(3)
            self.sites = [Site.numbered(s.index, s.label, self.ns_base) for s in self.sites]
            self.wan_ns = None if self.direct_wan else f"{self.ns_base}-wan"
        raise P3Error("OS_ERROR", "cannot find a free namespace run id (is /run/p3hw-testbed full of locks?)")

    def _create_namespaces(self) -> None:
        common = {
            # Addresses are usable at once: no duplicate address detection here.
            "net/ipv6/conf/all/accept_dad": "0",
            "net/ipv6/conf/default/accept_dad": "0",
            "net/ipv6/conf/all/accept_redirects": "0",
            "net/ipv6/conf/default/accept_redirects": "0",
            "net/ipv4/conf/all/accept_redirects": "0",
            "net/ipv4/conf/default/accept_redirects": "0",
        }
        gateway = common | {
            "net/ipv4/ip_forward": "1",
            "net/ipv6/conf/all/forwarding": "1",
            "net/ipv6/conf/default/forwarding": "1",
            # A hub forwards secondary-to-secondary traffic out of the interface
            # it came in on; a redirect would teach the secondaries to bypass it.
            "net/ipv4/conf/all/send_redirects": "0",
            "net/ipv4/conf/default/send_redirects": "0",
        }
        # The wan namespace is layer 2 only: no IPv6 on its ports, so it
        # sends no solicitations of its own into the captures.
        wan = {"net/ipv6/conf/all/disable_ipv6": "1", "net/ipv6/conf/default/disable_ipv6": "1"}
        for site in self.sites:
            for ns, sysctls in ((site.lan_ns, common), (site.gw_ns, gateway)):
                self._create_namespace(ns, sysctls)
        if self.wan_ns:
            self._create_namespace(self.wan_ns, wan)

    def _create_namespace(self, ns: str, sysctls: Mapping[str, str]) -> None:
        try:
            pyroute2_netns.create(ns)
        except OSError as exc:
            raise P3Error("OS_ERROR", f"cannot create network namespace {ns}: {exc}") from exc
        self._created.append(ns)
        _write_sysctls(ns, sysctls)
        with IPRoute(netns=ns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    @staticmethod
    def _index(ipr: Any, ifname: str) -> int:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise P3Error("INTERNAL", f"interface {ifname} was not created")
        return int(found[0])

    def _build_lans(self) -> None:
        for site in self.sites:
            with IPRoute(netns=site.gw_ns) as ipr:
                ipr.link("add", ifname=GW_LAN_IF, kind="veth", peer={"ifname": LAN_HOST_IF, "net_ns_fd": site.lan_ns})
                lan0 = self._index(ipr, GW_LAN_IF)
                ipr.addr("add", index=lan0, address=str(site.gw_lan4), prefixlen=site.lan4.prefixlen)
                ipr.addr("add", index=lan0, address=str(site.gw_lan6), prefixlen=site.lan6.prefixlen, flags=IFA_F_NODAD)
                ipr.link("set", index=lan0, state="up")
            with IPRoute(netns=site.lan_ns) as ipr:
                eth0 = self._index(ipr, LAN_HOST_IF)
                ipr.addr("add", index=eth0, address=str(site.host4), prefixlen=site.lan4.prefixlen)
                ipr.addr("add", index=eth0, address=str(site.host6), prefixlen=site.lan6.prefixlen, flags=IFA_F_NODAD)
                ipr.link("set", index=eth0, state="up")
                ipr.route("add", dst="0.0.0.0/0", gateway=str(site.gw_lan4))
                ipr.route("add", dst="::/0", gateway=str(site.gw_lan6), family=10)

    def _build_direct_wan(self) -> None:
        a, b = self.sites
        with IPRoute(netns=a.gw_ns) as ipr:
            ipr.link("add", ifname=GW_WAN_IF, kind="veth", peer={"ifname": GW_WAN_IF, "net_ns_fd": b.gw_ns})

    def _build_bridged_wan(self) -> None:
        assert self.wan_ns is not None
        with IPRoute(netns=self.wan_ns) as ipr:
            ipr.link("add", ifname=WAN_BRIDGE, kind="bridge", br_stp_state=0, br_mcast_snooping=0)
            bridge = self._index(ipr, WAN_BRIDGE)
            ipr.link("set", index=bridge, state="up")
            relayed_ports = []
            for site in self.sites:
                site_if = f"site{site.index}"
                ipr.link("add", ifname=site_if, kind="veth", peer={"ifname": GW_WAN_IF, "net_ns_fd": site.gw_ns})
                if site.index in self.wan_params:
                    # The relay joins site{i} to relay{i}; port{i} is relay{i}'s way onto the bridge.
                    ipr.link("add", ifname=f"relay{site.index}", kind="veth", peer={"ifname": f"port{site.index}"})
                    port = self._index(ipr, f"port{site.index}")
                    ipr.link("set", index=port, master=bridge, state="up")
                    ipr.link("set", index=self._index(ipr, f"relay{site.index}"), state="up")
                    ipr.link("set", index=self._index(ipr, site_if), state="up")
                    relayed_ports.append(f"port{site.index}")
                    _disable_segmentation_offloads(site.gw_ns, [GW_WAN_IF])
                else:
                    ipr.link("set", index=self._index(ipr, site_if), master=bridge, state="up")
        if relayed_ports:
            # The relay must see wire-sized frames from both sides: the bridge
            # transmits toward it on port{i}, the secondary on its wan0.
            _disable_segmentation_offloads(self.wan_ns, relayed_ports)

    def _address_wan(self) -> None:
        for site in self.sites:
            with IPRoute(netns=site.gw_ns) as ipr:
                wan0 = self._index(ipr, GW_WAN_IF)
                ipr.addr("add", index=wan0, address=str(site.gw_wan4), prefixlen=WAN_SUBNET4.prefixlen)
                ipr.addr("add", index=wan0, address=str(site.gw_wan6), prefixlen=WAN_SUBNET6.prefixlen, flags=IFA_F_NODAD)
                ipr.link("set", index=wan0, state="up")

    def _hand_ports_to_dpdk(self) -> None:
        """Sites in ``dpdk_sites``: the gateway's lan0 and wan0 belong to DPDK (net_af_packet), not the kernel.

        Their kernel addresses go and IPv6 is off on them, so the kernel neither
        answers ARP and neighbour solicitations nor sends its own: the gateway's
        DPDK ports do that (docs/dpdk.md). Frames reach an AF_PACKET socket as
        the sender's veth left them, so every sender toward those ports
        computes its checksums and cuts its segments itself: the LAN host's
        eth0 and every other gateway's wan0 lose their checksum and
        segmentation offloads (what a NIC would have done on the wire).
        """
        for site in self.sites:
            if site.index not in self.dpdk_sites:
                continue
            with IPRoute(netns=site.gw_ns) as ipr:
                for ifname in (GW_LAN_IF, GW_WAN_IF):
                    index = self._index(ipr, ifname)
                    for addr in ipr.get_addr(index=index):
                        ipr.addr("del", index=index, address=addr.get_attr("IFA_ADDRESS"),
                                 prefixlen=addr["prefixlen"])
            _write_sysctls(site.gw_ns, {f"net/ipv6/conf/{GW_LAN_IF}/disable_ipv6": "1",
                                        f"net/ipv6/conf/{GW_WAN_IF}/disable_ipv6": "1"})
            _disable_offloads(site.lan_ns, [LAN_HOST_IF], checksums=True)
        for site in self.sites:
            if site.index not in self.dpdk_sites:
                _disable_offloads(site.gw_ns, [GW_WAN_IF], checksums=True)

    def _wait_until_links_up(self) -> None:
        """Wait for carrier on every link: until linkwatch has seen it (up to ~1 s
        after ``up`` for veth) the device has no queue and drops what is sent,
        and IPv6 has no link-local address for neighbour discovery."""
        deadline = time.monotonic() + LINKS_UP_TIMEOUT_S
        for ns in self.namespaces:
            with IPRoute(netns=ns) as ipr:
                while True:
                    down = [
                        link.get_attr("IFLA_IFNAME")
                        for link in ipr.get_links()
                        if link.get_attr("IFLA_IFNAME") != "lo" and link.get_attr("IFLA_OPERSTATE") != "UP"
                    ]
                    if not down:
                        break
                    if time.monotonic() > deadline:
                        raise P3Error("OS_ERROR", f"links {', '.join(down)} in {ns} did not come up")
                    time.sleep(0.02)

    def _add_plain_routes(self) -> None:
        """Unencrypted routes between the LANs: the primary is the hub (spec §2.1.3)."""
        for site in self.sites:
            with IPRoute(netns=site.gw_ns) as ipr:
                for other in self.sites:
                    if other is site:
                        continue
                    via = other if site.is_primary else self.primary
                    ipr.route("add", dst=str(other.lan4), gateway=str(via.gw_wan4))
                    ipr.route("add", dst=str(other.lan6), gateway=str(via.gw_wan6), family=10)

    # -- running programs -----------------------------------------------------

    def _command(self, ns: str, argv: Sequence[str]) -> list[str]:
        if ns not in self.namespaces:
            raise P3Error("USAGE", f"{ns!r} is not a namespace of this topology")
        # pyroute2 built the topology; `ip netns exec` only runs programs in it
        # (it also gives them the namespace's /sys).
        return ["ip", "netns", "exec", ns, *map(str, argv)]

    def run(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside ``ns`` to completion (output captured as text unless redirected)."""
        if not {"stdout", "stderr", "capture_output"} & kwargs.keys():
            kwargs["capture_output"] = True
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(self._command(ns, argv), **kwargs)

    def popen(self, ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``ns``; teardown stops it (SIGTERM, then SIGKILL)."""
        process = subprocess.Popen(self._command(ns, argv), **kwargs)
        self._processes.append(process)
        return process

    def ping(self, ns: str, address: object, count: int = 3, interval_s: float = 0.2, wait_s: float = 1.0) -> PingResult:
        """Ping ``address`` from ``ns``; the counts tell what came back."""
        result = self.run(
            ns,
            ["ping", "-n", "-c", str(count), "-i", str(interval_s), "-W", str(wait_s), str(address)],
            timeout=count * (interval_s + wait_s) + 10,
        )
        return PingResult.parse(result.stdout + result.stderr)

    # -- the WAN simulator ------------------------------------------------------

    def wan_link(self, site: int | str) -> WanLink:
        index = self.site(site).index
        if index not in self.wan_links:
            raise P3Error("USAGE", f"site {site!r} has no WAN simulator (give it wan= when building)")
        return self.wan_links[index]

    def set_wan(self, site: int | str, params: WanParams) -> WanLink:
        """Restart the site's WAN simulator with new impairments (counters start at zero)."""
        link = self.wan_link(site)
        link.stop()
        link.params = params.validate()
        link.final = None
        link.start()
        return link

    # -- teardown -------------------------------------------------------------

    def teardown(self) -> None:
        """Stop everything started here and remove every namespace; safe to call twice."""
        if os.getpid() != self._owner_pid:
            return  # a forked child unwinding (or exiting) must not tear down its parent's testbed
        for link in self.wan_links.values():
            try:
                link.stop()
            except Exception as exc:  # noqa: BLE001 - teardown goes on whatever happens
                print(f"p3hw testbed: stopping WAN simulator: {exc}", file=sys.stderr)
        self._stop_processes()
        if self._created:
            _remove_namespaces(self._created)
            self._created = []
        if self._lock_fd is not None:
            assert self._lock_path is not None
            self._lock_path.unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        if self.workdir != Path(".") and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._built = False
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _stop_processes(self) -> None:
        running = [p for p in self._processes if p.poll() is None]
        for process in running:
            try:
                process.terminate()
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + PROCESS_STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes = []

