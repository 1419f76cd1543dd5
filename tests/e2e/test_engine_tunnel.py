"""A gateway whose crypto runs on a lookaside engine (the accelerator simulator,
a DPDK crypto device) interoperates with one on AES-NI: the wire format does
not depend on the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.mark.parametrize("engine", ["accel-sim", pytest.param("cryptodev", marks=pytest.mark.dpdk)])
def test_primary_on_a_lookaside_engine_carries_traffic_to_a_secondary_on_aesni(engine: str, tmp_path: Path) -> None:
    options = Options(rekey_wait_s=1, extra_primary_lines=[f"crypto_engine = {engine}", "crypto_fallback = aesni"])
    with Topology.two_site() as topo, Deployment(topo, tmp_path, options) as dep:
        dep.wait_established(20)
        dep.wait(lambda: (dep.peer_status(0) or {}).get("rekeys_completed", 0) >= 2, 20, "two rekeys")
        result = topo.ping(topo.b.lan_ns, topo.a.host4, count=10, interval_s=0.05)
        assert result.received == 10, result.output
        primary, secondary = dep.daemons[0].status(), dep.daemons[1].status()
        assert primary is not None and secondary is not None
        assert primary["engine"]["engine"] == engine and primary["engine"]["active"] == engine
        assert primary["engine"]["engine_ops"] > 0 and primary["engine"]["failovers"] == 0
        assert secondary["engine"]["engine"] == "aesni"
        assert primary["dataplane"]["drops"] == {} and secondary["dataplane"]["drops"] == {}
