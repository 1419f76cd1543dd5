"""FIPS mode in the real daemons (docs/fips.md): self-tests at start, approved algorithms on the wire.

A primary and a secondary with ``fips = 1`` run their power-on self-tests, negotiate ECP and
HMAC-SHA-256/AES-CMAC only, rekey with ECP-256 PFS, and carry traffic; a daemon whose self-test
fails does not start and says why with P3-E903.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from e2e_support import deployed, host, peer

from p3hw.fips import CORRUPT_ENV
from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]


@pytest.fixture(scope="module")
def fips_pair(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Topology, Deployment]]:
    options = Options(pfs=1, rekey_wait_s=2, extra_primary_lines=["fips = 1"], extra_secondary_lines=["fips = 1"])
    with Topology.two_site() as topo, deployed(topo, tmp_path_factory.mktemp("fips"), options) as dep:
        yield topo, dep


def test_both_daemons_pass_their_self_tests_before_starting(fips_pair: tuple[Topology, Deployment]) -> None:
    _, dep = fips_pair
    for daemon in dep.daemons.values():
        log = daemon.log()
        assert "FIPS mode: 13 power-on self-tests passed" in log, log[-2000:]
        assert "seal-aes-128-gcm-aesni" in log and "ecdh-p384" in log


def test_fips_pair_carries_traffic_across_ecp256_pfs_rekeys(fips_pair: tuple[Topology, Deployment]) -> None:
    topo, dep = fips_pair
    dep.wait(lambda: peer(dep, 0)["rekeys_completed"] >= 2, 20, "two PFS rekeys")
    result = topo.ping(topo.b.lan_ns, host(topo.a, 4), count=20, interval_s=0.1)
    assert result.received == 20, result.output
    assert "P3-E4" not in dep.daemons[0].log() and "P3-E4" not in dep.daemons[1].log()


def test_daemon_whose_self_test_fails_refuses_to_start(fips_pair: tuple[Topology, Deployment]) -> None:
    topo, dep = fips_pair
    primary = dep.daemons[0]
    env = {**os.environ, CORRUPT_ENV: "seal-aes-256-gcm-aesni"}
    proc = topo.popen(primary.site.gw_ns, [sys.executable, "-m", "p3hw.cli", "primary", "-c",
                                           str(primary.config_path)],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out, _ = proc.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert proc.returncode == 2, text
    assert "P3-E903 known-answer test seal-aes-256-gcm-aesni failed" in text
    assert "Traceback" not in text
