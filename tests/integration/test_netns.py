"""The namespace testbed: it builds, it forwards, and it leaves nothing behind (docs/testbed.md)."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

from p3hw.reasons import P3Error
from p3hw.simulators.netns import LOCK_DIR, Topology, cleanup_stale, processes_in


def _root_links() -> set[str]:
    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: it holds no namespace.
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


def _assert_gone(topo: Topology, pids: list[int], root_links_before: set[str]) -> None:
    assert not set(topo.namespaces) & set(pyroute2_netns.listnetns())
    assert not [pid for pid in pids if _alive(pid)]
    assert not (LOCK_DIR / f"{topo.ns_base}.lock").exists()
    assert _root_links() == root_links_before  # nothing was ever created outside the namespaces


@pytest.mark.root
@pytest.mark.netns
def test_lan_hosts_reach_each_other_through_the_gateways_ipv4_and_ipv6(two_site: Topology) -> None:
    a, b = two_site.a, two_site.b
    for src, dst in ((a, b.host4), (a, b.host6), (b, a.host4), (b, a.host6)):
        result = two_site.ping(src.lan_ns, dst, count=3, interval_s=0.05)
        assert result.received == result.transmitted == 3, result.output


@pytest.mark.root
@pytest.mark.netns
def test_addresses_are_documentation_and_private_ranges(two_site: Topology) -> None:
    for site in two_site.sites:
        assert site.host4 in ipaddress.ip_network("10.0.0.0/8")
        assert site.gw_wan4 in ipaddress.ip_network("198.18.0.0/15")  # RFC 2544 benchmarking
        assert site.host6 in ipaddress.ip_network("fd00::/8") and site.gw_wan6 in ipaddress.ip_network("fd00::/8")
        listing = two_site.run(site.gw_ns, ["ip", "-o", "addr", "show", "dev", "wan0"]).stdout
        assert str(site.gw_wan4) in listing and str(site.gw_wan6) in listing


@pytest.mark.root
@pytest.mark.netns
def test_without_plain_routes_the_lans_cannot_reach_each_other(bare_two_site: Topology) -> None:
    # The gateways route only what a VPN daemon adds: no plaintext path around the tunnel.
    result = bare_two_site.ping(bare_two_site.a.lan_ns, bare_two_site.b.host4, count=1, wait_s=0.3)
    assert result.received == 0
    gateway_to_gateway = bare_two_site.ping(bare_two_site.a.gw_ns, bare_two_site.b.gw_wan4, count=1)
    assert gateway_to_gateway.received == 1


@pytest.mark.root
@pytest.mark.netns
def test_teardown_removes_namespaces_links_and_processes(stale_testbeds_removed: list[str]) -> None:
    links_before = _root_links()
    topo = Topology.two_site(plain_routes=True)
    with topo:
        assert set(topo.namespaces) <= set(pyroute2_netns.listnetns())
        tracked = topo.popen(topo.a.lan_ns, ["sleep", "60"])
        # A daemon that detaches is not tracked by popen; teardown still finds it by namespace.
        detached = topo.run(topo.b.gw_ns, ["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"]).stdout
        pids = [tracked.pid, int(detached)]
    _assert_gone(topo, pids, links_before)
    topo.teardown()  # a second teardown is harmless


@pytest.mark.root
@pytest.mark.netns
def test_teardown_happens_after_an_exception_in_the_with_block(stale_testbeds_removed: list[str]) -> None:
    links_before = _root_links()
    topo = Topology.star(2, plain_routes=True)
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="test failed midway"):
        with topo:
            pids.append(topo.popen(topo.secondaries[1].lan_ns, ["sleep", "60"]).pid)
            raise RuntimeError("test failed midway")
    _assert_gone(topo, pids, links_before)


@pytest.mark.root
@pytest.mark.netns
def test_star_with_three_secondaries_routes_through_the_primary(stale_testbeds_removed: list[str]) -> None:
    with Topology.star(3, plain_routes=True) as topo:
        assert len({site.lan4 for site in topo.sites}) == 4  # distinct subnets
        primary, s1, s2, s3 = topo.sites
        for src, dst in ((s1, primary), (s2, primary), (s3, primary), (primary, s3), (s1, s3)):
            for address in (dst.host4, dst.host6):
                result = topo.ping(src.lan_ns, address, count=2, interval_s=0.05)
                assert result.received == 2, result.output
        # The reply from s3's LAN host crosses three routers (gateway 3, the
        # primary's gateway as hub, gateway 1); a direct path would be two.
        trace = topo.ping(s1.lan_ns, s3.host4, count=1)
        assert "ttl=61" in trace.output


@pytest.mark.root
@pytest.mark.netns
def test_direct_wan_is_one_veth_pair_between_the_gateways(stale_testbeds_removed: list[str]) -> None:
    with Topology.two_site(plain_routes=True, direct_wan=True) as topo:
        assert topo.wan_ns is None
        result = topo.ping(topo.a.lan_ns, topo.b.host6, count=2, interval_s=0.05)
        assert result.received == 2, result.output


@pytest.mark.root
@pytest.mark.netns
def test_cleanup_stale_removes_a_killed_run_but_not_a_live_one(stale_testbeds_removed: list[str], tmp_path: Path) -> None:
    prefix = "p3tstale"
    script = (
        "import sys, time\n"
        "from p3hw.simulators.netns import Topology, WanParams\n"
        f"topo = Topology.two_site(prefix={prefix!r}, wan=WanParams()).build()\n"
        "topo.popen(topo.a.lan_ns, ['sleep', '60'])\n"
        "print(' '.join(topo.namespaces), flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    with Topology.two_site(prefix=prefix) as live:
        try:
            assert child.stdout is not None
            dead_namespaces = child.stdout.readline().split()
            assert len(dead_namespaces) == 5
        finally:
            child.send_signal(signal.SIGKILL)  # no teardown, no atexit: what an aborted run leaves
            child.wait()
        assert set(dead_namespaces) <= set(pyroute2_netns.listnetns())
        # The dead run's WAN simulator notices its parent is gone and exits by itself.
        wan_ns = next(ns for ns in dead_namespaces if ns.endswith("-wan"))
        deadline = time.monotonic() + 20
        while processes_in([wan_ns]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not processes_in([wan_ns])
        removed = cleanup_stale(prefix)
        assert sorted(removed) == sorted(dead_namespaces)
        present = set(pyroute2_netns.listnetns())
        assert not set(dead_namespaces) & present
        assert set(live.namespaces) <= present  # the live run (its lock is held) is untouched
        assert live.ping(live.a.gw_ns, live.b.gw_wan4, count=1).received == 1
    assert not set(live.namespaces) & set(pyroute2_netns.listnetns())


@pytest.mark.root
@pytest.mark.netns
def test_run_refuses_a_namespace_of_another_topology(two_site: Topology) -> None:
    with pytest.raises(P3Error) as error:
        two_site.run("not-ours", ["true"])
    assert error.value.code == "P3-E122"


@pytest.mark.root
@pytest.mark.netns
def test_popen_runs_inside_the_namespace(two_site: Topology) -> None:
    process = two_site.popen(two_site.b.lan_ns, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"], stdout=subprocess.PIPE, text=True)
    output, _ = process.communicate(timeout=10)
    assert str(two_site.b.host4) in output


def test_bad_topology_options_are_reason_coded_errors() -> None:
    for options in ({"secondaries": 0}, {"secondaries": 2, "direct_wan": True}, {"prefix": "Bad-Prefix"}):
        with pytest.raises(P3Error) as error:
            Topology(**options)
        assert error.value.code == "P3-E122"


@pytest.mark.root
@pytest.mark.netns
def test_sigterm_to_the_owner_tears_its_testbed_down(stale_testbeds_removed: list[str]) -> None:
    script = (
        "import time\n"
        "from p3hw.simulators.netns import Topology, WanParams\n"
        "topo = Topology.star(2, wan=WanParams()).build()\n"  # no with-block: the safety net must act
        "topo.popen(topo.primary.gw_ns, ['sleep', '60'])\n"
        "print(' '.join(topo.namespaces), flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    namespaces = child.stdout.readline().split()
    assert len(namespaces) == 7 and set(namespaces) <= set(pyroute2_netns.listnetns())
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 128 + signal.SIGTERM
    assert not set(namespaces) & set(pyroute2_netns.listnetns())
