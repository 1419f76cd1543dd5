"""Suite-wide rules.

With ``P3HW_CI=1`` (set by ``.ci/run``) a skipped test is a failed test:
CI runs as root with TUN, DPDK and SoftHSM installed, so a skip there means
something is silently not tested.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("P3HW_CI") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"P3HW_CI=1: a skip is a failure in CI ({reason})"


#: Tests that set up something long-running first and check it last, so that the wait
#: (three minutes of strongSwan's dead-peer detection) overlaps the rest of the suite.
RUN_FIRST = ("test_strongswan_interop.py::test_strongswan_and_p3hw_set_up_ike_sas_both_ways",)
RUN_LAST = ("test_strongswan_interop.py::test_charon_dpd_for_three_minutes_keeps_the_ike_sas",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long waits overlap the suite (RUN_FIRST/RUN_LAST); ``root`` tests skip (locally) when not root."""
    first = [item for item in items if item.nodeid.endswith(RUN_FIRST)]
    last = [item for item in items if item.nodeid.endswith(RUN_LAST)]
    if first or last:
        middle = [item for item in items if item not in first and item not in last]
        items[:] = first + middle + last
    if os.geteuid() == 0:
        return
    skip_root = pytest.mark.skip(reason="needs root (CAP_NET_ADMIN)")
    for item in items:
        if "root" in item.keywords or "netns" in item.keywords:
            item.add_marker(skip_root)
