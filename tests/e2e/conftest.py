"""Fixtures of the end-to-end tests (helpers are in e2e_support.py).

Every test that uses a testbed builds namespaces: mark it
``@pytest.mark.root`` and ``@pytest.mark.netns`` (tests/conftest.py skips it
when not root, and fails the skip in CI).
"""

from __future__ import annotations

import os

import pytest

from p3hw.simulators.netns import cleanup_stale


@pytest.fixture(scope="session")
def stale_testbeds_removed() -> list[str]:
    """Namespaces of earlier runs that died (SIGKILL, power loss) are gone before we build."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_ADMIN)")
    return cleanup_stale()
