"""Fixtures for root integration tests: network-namespace testbeds (docs/testbed.md).

Every fixture here builds namespaces, so tests using them must be marked
``@pytest.mark.root`` and ``@pytest.mark.netns`` (tests/conftest.py skips
those when not root, and fails the skip in CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from p3hw.simulators.netns import Topology, cleanup_stale
from p3hw.simulators.wan import WanParams


@pytest.fixture(scope="session")
def stale_testbeds_removed() -> list[str]:
    """Namespaces of earlier runs that died (SIGKILL, power loss) are gone before we build."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_ADMIN)")
    return cleanup_stale()


@pytest.fixture
def two_site(stale_testbeds_removed: list[str]) -> Iterator[Topology]:
    """LAN-A | gateway-A | WAN | gateway-B | LAN-B with plain (unencrypted) routes between the LANs."""
    with Topology.two_site(plain_routes=True) as topo:
        yield topo


@pytest.fixture
def bare_two_site(stale_testbeds_removed: list[str]) -> Iterator[Topology]:
    """The two sites with no route between the LANs: what a VPN daemon starts from."""
    with Topology.two_site() as topo:
        yield topo


@pytest.fixture(scope="module")
def impaired_two_site(stale_testbeds_removed: list[str]) -> Iterator[Topology]:
    """Two sites whose WAN link goes through the WAN simulator (reset it with ``set_wan``)."""
    with Topology.two_site(plain_routes=True, wan=WanParams()) as topo:
        yield topo
