"""Ping, TCP and UDP between two LANs through the real gateways (issue 5 tests).

IPv4 and IPv6 (the inner family follows the outer one: Appendix A, a
remote's subnets match its ``ip``), over the UDP and the raw ESP transport.
The testbed has no route between the LANs but the daemons' tunnel, so
whatever arrives went through it; the status counters say so too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import assert_transfer_verified, deployed, host, peer, tcp_transfer, udp_stream

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]

COMBOS = [(4, "udp"), (4, "esp"), (6, "udp"), (6, "esp")]


@pytest.fixture(scope="module")
def topo(stale_testbeds_removed: list[str]) -> Iterator[Topology]:
    # One testbed for the four deployments: each stops its daemons (and
    # their TUN and routes go) before the next starts.
    with Topology.two_site() as testbed:
        yield testbed


@pytest.fixture(scope="module", params=COMBOS, ids=[f"ipv{f}-{t}" for f, t in COMBOS])
def tunnel(request: pytest.FixtureRequest, topo: Topology, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Deployment]:
    family, transport = request.param
    workdir: Path = tmp_path_factory.mktemp(f"ipv{family}-{transport}")
    with deployed(topo, workdir, Options(family=family, transport=transport)) as dep:
        yield dep


def test_ping_crosses_the_tunnel_both_ways(topo: Topology, tunnel: Deployment) -> None:
    family = tunnel.options.family
    before = tunnel.daemons[0].status()["dataplane"]["opened_packets"]
    there = topo.ping(topo.b.lan_ns, host(topo.a, family), count=5, interval_s=0.05)
    back = topo.ping(topo.a.lan_ns, host(topo.b, family), count=5, interval_s=0.05)
    assert there.received == 5, there.output
    assert back.received == 5, back.output
    tunnel.wait(lambda: tunnel.daemons[0].status()["dataplane"]["opened_packets"] >= before + 10, 5,
                "the primary's status to count the pings")


def test_tcp_transfer_through_the_tunnel_is_checksum_verified(topo: Topology, tunnel: Deployment) -> None:
    nbytes = 4_000_000
    sent, sunk = tcp_transfer(topo, topo.b, topo.a, tunnel.options.family, nbytes)
    assert_transfer_verified(sent, sunk, nbytes)
    sent, sunk = tcp_transfer(topo, topo.a, topo.b, tunnel.options.family, nbytes)
    assert_transfer_verified(sent, sunk, nbytes)


def test_udp_stream_through_the_tunnel_arrives_whole_and_in_order(topo: Topology, tunnel: Deployment) -> None:
    sent, got = udp_stream(topo, topo.a, topo.b, tunnel.options.family, rate=2000, count=2000, size=1200)
    assert sent["sent"] == 2000 and sent["errors"] == 0, sent
    assert (got["unique"], got["duplicates"], got["reordered"]) == (2000, 0, 0), got
    for index in (0, 1):
        entry = peer(tunnel, index)
        assert entry["state"] == "established" and entry["sessions_started"] == 1, entry
