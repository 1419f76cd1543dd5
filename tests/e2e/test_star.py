"""One primary, three secondaries with distinct subnets (spec §2.1.3).

The primary routes each secondary's LAN into that secondary's tunnel; each
secondary routes every other LAN through the primary. Traffic between two
secondaries crosses the primary: it arrives from tunnel 1 on the primary's
TUN and the primary's kernel routes it back into the TUN, toward tunnel 2.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import assert_transfer_verified, deployed, host, peer, tcp_transfer, udp_stream

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.fixture(scope="module")
def star(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Topology, Deployment]]:
    with Topology.star(3) as topo:
        with deployed(topo, tmp_path_factory.mktemp("star"), Options()) as dep:
            yield topo, dep


def test_primary_routes_each_secondary_subnet_into_its_own_tunnel(star: tuple[Topology, Deployment]) -> None:
    topo, dep = star
    primary = dep.daemons[0].status()
    routed = {p["address"]: p["subnets"] for p in primary["peers"]}
    assert routed == {str(s.gw_wan4): [str(s.lan4)] for s in topo.secondaries}
    for site in topo.secondaries:
        back = topo.ping(topo.primary.lan_ns, host(site, 4), count=3, interval_s=0.05)
        there = topo.ping(site.lan_ns, host(topo.primary, 4), count=3, interval_s=0.05)
        assert back.received == 3, (site.label, back.output)
        assert there.received == 3, (site.label, there.output)


def test_secondaries_reach_each_other_through_the_primary(star: tuple[Topology, Deployment]) -> None:
    topo, dep = star
    s1, s2, s3 = topo.secondaries
    sealed_before = dep.daemons[0].status()["dataplane"]["sealed_packets"]
    for src, dst in ((s1, s2), (s2, s3), (s3, s1)):
        result = topo.ping(src.lan_ns, host(dst, 4), count=3, interval_s=0.05)
        assert result.received == 3, (src.label, dst.label, result.output)
    nbytes = 2_000_000
    sent, sunk = tcp_transfer(topo, s1, s2, 4, nbytes)
    assert_transfer_verified(sent, sunk, nbytes)
    sent, got = udp_stream(topo, s3, s2, 4, rate=2000, count=1000)
    assert sent["sent"] == 1000 and (got["unique"], got["duplicates"], got["reordered"]) == (1000, 0, 0), got
    # The hub re-sealed what it forwarded (secondaries have no path to each other but through it).
    assert dep.daemons[0].status()["dataplane"]["sealed_packets"] > sealed_before + 1000
    for index in (1, 2, 3):
        assert peer(dep, index)["sessions_started"] == 1
