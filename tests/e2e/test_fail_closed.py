"""Fail closed (issue 16): traffic for a remote's subnets never leaves on the WAN in clear.

Each gateway namespace gets a default route toward the WAN, as an ordinary
internet gateway has (gateway A's points at gateway B's WAN address and the
reverse, so a packet that escaped the tunnel would even reach the other LAN).
Then, with the tunnel down in four ways -- the primary stopped by SIGTERM,
the primary killed, the secondary killed, and the session lost while both
daemons run (the WAN simulator drops everything until heartbeats fail) --
the LAN hosts send UDP datagrams carrying a marker to the other site, and a
capture of both gateways' WAN ports (taken in the WAN namespace, on the
gateways' side of the simulator) must hold zero marker bytes.

Also: ``p3hw failclosed status`` shows the routes, ``p3hw failclosed clear``
removes them, a reload that removes a remote removes its routes, and
``fail_open = 1`` restores the old behaviour (the marker leaks: the witness
that the capture would see a leak).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import host, start_udp_sender, wait_for

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Site, Topology
from p3hw.simulators.wan import WanParams

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

HEARTBEAT_TIME_S = 1
HEARTBEAT_FAIL_S = 3
MARKED_DATAGRAMS = 200
MARKED_RATE = 400
#: A remote that never connects, on the primary only: what the reload test removes.
SPARE_REMOTE = 7
SPARE_SUBNET = ipaddress.ip_network("10.77.0.0/24")


def add_default_routes(topo: Topology) -> None:
    """Each gateway routes everything it has no better route for to the other gateway, over the WAN."""
    from pyroute2 import IPRoute

    a, b = topo.a, topo.b
    for site, other in ((a, b), (b, a)):
        with IPRoute(netns=site.gw_ns) as ipr:
            ipr.route("add", dst="0.0.0.0/0", gateway=str(other.gw_wan4))
            ipr.route("add", dst="::/0", gateway=str(other.gw_wan6), family=10)


@contextmanager
def wan_capture(topo: Topology, pcap: Path) -> Iterator[Path]:
    """Capture both gateways' WAN ports (in the WAN namespace, before the simulator) while the block runs."""
    assert topo.wan_ns is not None
    tshark = topo.popen(topo.wan_ns, ["tshark", "-n", "-q", "-s", "0", "-i", "site0", "-i", "site1", "-w", str(pcap)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert tshark.stderr is not None
    started = ""
    while "Capturing on" not in started:  # dumpcap says so once its sockets are open
        line = tshark.stderr.readline()
        assert line, f"tshark did not start: {started}"
        started += line
    try:
        yield pcap
    finally:
        time.sleep(0.5)  # the last datagrams reach the wire
        tshark.send_signal(signal.SIGINT)
        tshark.wait(15)


def send_marked(topo: Topology, src: Site, dst: Site, marker: str, family: int = 4) -> dict[str, Any]:
    """MARKED_DATAGRAMS UDP datagrams carrying *marker*, src LAN -> dst LAN host; the sender's report."""
    sender = start_udp_sender(topo, src, dst, family, 9, "--rate", str(MARKED_RATE), "--count",
                              str(MARKED_DATAGRAMS), "--size", "200", "--marker", marker)
    return sender.result(30)


@dataclass
class Bed:
    topo: Topology
    dep: Deployment
    workdir: Path
    primary_conf: str   # the primary's configuration as started (with the spare remote)

    def failclosed(self, index: int, *args: str) -> subprocess.CompletedProcess[str]:
        daemon = self.dep.daemons[index]
        return self.topo.run(daemon.site.gw_ns, [sys.executable, "-m", "p3hw.cli", "failclosed", *args,
                                                 "-c", str(daemon.config_path)], timeout=60)

    def routes(self, index: int) -> dict[str, Any]:
        done = self.failclosed(index, "status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def networks(self, index: int) -> set[str]:
        return {r["network"] for r in self.routes(index)["routes"]}

    def running_again(self) -> None:
        """Start whichever daemon is down and wait for the session (each test starts from a working tunnel)."""
        for index, daemon in self.dep.daemons.items():
            if not daemon.running:
                self.dep.start_daemon(index)
        self.dep.wait_established(60)

    def leaked(self, name: str, *, directions: tuple[tuple[Site, Site], ...] | None = None) -> tuple[int, list[dict]]:
        """Send marked datagrams both ways (the tunnel being down); how often the marker crossed the WAN."""
        marker = f"P3HW-LEAK-{secrets.token_hex(8)}"
        a, b = self.topo.a, self.topo.b
        reports = []
        with wan_capture(self.topo, self.workdir / f"{name}.pcapng") as pcap:
            for src, dst in directions or ((a, b), (b, a)):
                reports.append(send_marked(self.topo, src, dst, marker))
        return pcap.read_bytes().count(marker.encode()), reports


@pytest.fixture(scope="module")
def bed(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    workdir = tmp_path_factory.mktemp("failclosed")
    options = Options(heartbeat_time_s=HEARTBEAT_TIME_S, heartbeat_fail_s=HEARTBEAT_FAIL_S)
    with Topology.two_site(wan=WanParams()) as topo:
        add_default_routes(topo)
        dep = Deployment(topo, workdir, options)
        dep.write_configs()
        primary = dep.daemons[0].config_path
        spare = [f"{SPARE_REMOTE}/ip = 4", f"{SPARE_REMOTE}/address = 198.18.0.77",
                 f"{SPARE_REMOTE}/psk_file = {dep.psk_paths[1].name}",
                 f"{SPARE_REMOTE}/subnet1 = {SPARE_SUBNET.network_address}", f"{SPARE_REMOTE}/mask1 = 24"]
        primary.write_text(primary.read_text() + "\n".join(spare) + "\n")
        try:
            dep.start()
            dep.wait_established(30)
            yield Bed(topo, dep, workdir, primary.read_text())
        finally:
            dep.stop()


def marked_sent(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        assert report["attempted"] == MARKED_DATAGRAMS, report


def test_routes_are_installed_for_every_remote_subnet_and_lose_to_the_tunnel(bed: Bed) -> None:
    bed.running_again()
    a, b = bed.topo.a, bed.topo.b
    assert bed.networks(0) == {str(b.lan4), str(SPARE_SUBNET)}
    assert bed.networks(1) == {str(a.lan4)}
    assert all(r["state"] == "configured" for r in bed.routes(0)["routes"])
    # While the daemons run the TUN route wins: the tunnel carries the traffic.
    assert bed.topo.ping(a.lan_ns, host(b, 4), count=3, interval_s=0.1).received == 3


def test_session_lost_while_daemons_run_leaks_nothing(bed: Bed) -> None:
    bed.running_again()
    b = bed.topo.b
    bed.topo.set_wan(b.label, WanParams(loss_pct=100))
    try:
        for index in (0, 1):
            wait_for(bed.dep, lambda i=index: (bed.dep.peer_status(i) or {}).get("state") != "established",
                     HEARTBEAT_TIME_S + HEARTBEAT_FAIL_S + 20, f"site {index} to lose the session")
        count, reports = bed.leaked("session-lost")
        # The worker dropped them and counted them: routed to a peer without a session.
        statuses = [bed.dep.daemons[i].status() or {} for i in (0, 1)]
    finally:
        bed.topo.set_wan(b.label, WanParams())
    marked_sent(reports)
    assert count == 0
    for status in statuses:
        assert status["dataplane"]["drops"].get("DP_NO_ROUTE", 0) > 0, status["dataplane"]


@pytest.mark.parametrize(("index", "sig"), [(0, signal.SIGTERM), (0, signal.SIGKILL), (1, signal.SIGKILL)],
                         ids=["primary-sigterm", "primary-sigkill", "secondary-sigkill"])
def test_daemon_gone_leaks_nothing(bed: Bed, index: int, sig: int) -> None:
    bed.running_again()
    bed.dep.stop_daemon(index, sig)
    # The routes outlived the daemon, and the LAN host is told at once (before the marked
    # datagrams below use up the kernel's ICMP rate limit toward it).
    gone, other = (bed.topo.a, bed.topo.b) if index == 0 else (bed.topo.b, bed.topo.a)
    assert str(other.lan4) in bed.networks(index)
    ping = bed.topo.ping(gone.lan_ns, host(other, 4), count=1, wait_s=1)
    assert ping.received == 0 and "Unreachable" in ping.output, ping.output
    count, reports = bed.leaked(f"gone-{index}-{sig}")
    marked_sent(reports)
    assert count == 0


def test_reload_that_removes_a_remote_removes_its_route(bed: Bed) -> None:
    bed.running_again()
    daemon = bed.dep.daemons[0]
    assert str(SPARE_SUBNET) in bed.networks(0)
    lines = bed.primary_conf.splitlines(keepends=True)
    daemon.config_path.write_text("".join(line for line in lines if not line.startswith(f"{SPARE_REMOTE}/")))
    try:
        reloads = daemon.log().count("configuration reloaded")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        bed.dep.wait(lambda: daemon.log().count("configuration reloaded") > reloads, 10, "the reload")
        assert bed.networks(0) == {str(bed.topo.b.lan4)}
        assert bed.dep.established()
    finally:
        daemon.config_path.write_text(bed.primary_conf)


def test_failclosed_clear_removes_and_install_restores_the_routes_of_the_configuration(bed: Bed) -> None:
    bed.running_again()
    bed.dep.stop_daemon(1, signal.SIGTERM)
    done = bed.failclosed(1, "clear")
    assert done.returncode == 0, done.stderr
    assert f"removed unreachable {bed.topo.a.lan4}" in done.stdout
    status = bed.routes(1)
    assert status["routes"] == [] and status["missing"] == [str(bed.topo.a.lan4)]
    # `install` puts them back without the gateway (what a boot-time unit runs) ...
    done = bed.failclosed(1, "install")
    assert done.returncode == 0, done.stderr
    assert bed.networks(1) == {str(bed.topo.a.lan4)}
    done = bed.failclosed(1, "clear")
    assert done.returncode == 0 and bed.networks(1) == set(), done.stderr
    # ... and the gateway, started again, closes them again.
    bed.running_again()
    assert bed.networks(1) == {str(bed.topo.a.lan4)}


def test_fail_open_restores_the_old_behaviour(bed: Bed) -> None:
    """The witness: with fail_open = 1 the same capture sees the marker leave in clear."""
    bed.running_again()
    daemon = bed.dep.daemons[0]
    bed.dep.stop_daemon(0, signal.SIGTERM)
    daemon.config_path.write_text(bed.primary_conf.replace("localend", "fail_open = 1\nlocalend", 1))
    try:
        bed.dep.start_daemon(0)
        bed.dep.wait_established(60)
        assert bed.networks(0) == set()   # its routes left with the opt-out
        bed.dep.stop_daemon(0, signal.SIGKILL)
        count, reports = bed.leaked("fail-open", directions=((bed.topo.a, bed.topo.b),))
    finally:
        daemon.config_path.write_text(bed.primary_conf)
    marked_sent(reports)
    assert count >= MARKED_DATAGRAMS // 2


def test_ipv6_gateway_killed_leaks_nothing(stale_testbeds_removed: list[str], tmp_path: Path) -> None:
    """The same with an IPv6 WAN and IPv6 subnets: the routes are IPv6 unreachable routes (ICMPv6 no route)."""
    with Topology.two_site(wan=WanParams()) as topo:
        add_default_routes(topo)
        dep = Deployment(topo, tmp_path, Options(family=6))
        dep.write_configs()
        try:
            dep.start()
            dep.wait_established(30)
            bed = Bed(topo, dep, tmp_path, dep.daemons[0].config_path.read_text())
            a, b = topo.a, topo.b
            assert bed.networks(0) == {str(b.lan6)} and bed.networks(1) == {str(a.lan6)}
            dep.stop_daemon(0, signal.SIGKILL)
            ping = topo.ping(a.lan_ns, host(b, 6), count=1, wait_s=1)
            assert ping.received == 0 and "unreachable" in ping.output.lower(), ping.output
            marker = f"P3HW-LEAK-{secrets.token_hex(8)}"
            with wan_capture(topo, tmp_path / "v6.pcapng") as pcap:
                reports = [send_marked(topo, src, dst, marker, family=6) for src, dst in ((a, b), (b, a))]
            marked_sent(reports)
            assert pcap.read_bytes().count(marker.encode()) == 0
        finally:
            dep.stop()
