"""kill -9 the primary (spec §2.1.7): reset, log, retry, re-establish.

A TCP connection runs from the secondary's LAN host through the tunnel to a
server in the primary's LAN. The primary is killed with SIGKILL (no
SHUTDOWN reaches the secondary); short heartbeat timers (sent by the
primary in its CONFIG) let the secondary notice within seconds. Then:

* the LAN host's socket gets ECONNRESET -- the gateway reset the flow --
  instead of waiting for a TCP timeout;
* the daemon's log (the same lines go to syslog; see test_syslog.py for the
  syslog path itself) has the reason-coded loss line P3-E500 with the peer
  and the facts, and the termination counts;
* the secondary retries after 5 s, then 10 s, ...;
* it re-establishes once the primary runs again.

The whole scenario runs once in a module fixture; each test checks one
outcome of it.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from e2e_support import Traffic, deployed, host, in_ns, next_port, peer, wait_for

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

HEARTBEAT_TIME_S = 1
HEARTBEAT_FAIL_S = 3


@dataclass
class Aftermath:
    topo: Topology
    dep: Deployment
    held: dict[str, Any]               # the LAN client's report: how its wait in recv ended
    log_at_loss: str                   # the secondary's log once the loss was handled
    log_at_retries: str                # ... once the second retry was scheduled
    status_at_loss: dict[str, Any]
    reestablished: bool
    ping_after: int


@pytest.fixture(scope="module")
def aftermath(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aftermath]:
    options = Options(heartbeat_time_s=HEARTBEAT_TIME_S, heartbeat_fail_s=HEARTBEAT_FAIL_S)
    with Topology.two_site() as topo:
        with deployed(topo, tmp_path_factory.mktemp("killed"), options) as dep:
            a, b = topo.a, topo.b
            port = next_port()
            server = Traffic(in_ns(topo, a.lan_ns), ["tcp-echo", "--port", str(port)])
            client = Traffic(in_ns(topo, b.lan_ns), ["tcp-hold", "--to", host(a, 4), "--port", str(port),
                                                     "--timeout-s", "30"], ready="CONNECTED")
            # Let the secondary see the flow both ways, and the primary's CONFIG
            # (heartbeat timers) arrive, before the kill.
            time.sleep(0.5)
            dep.stop_daemon(0, signal.SIGKILL)
            held = client.result(60)
            secondary = dep.daemons[1]
            wait_for(dep, lambda: "tcp_resets=" in secondary.log()
                     and "P3-E500" in secondary.log(), 30, "the secondary to log the loss")
            # the status file is rewritten twice a second: wait for the one after the loss
            wait_for(dep, lambda: bool((secondary.status() or {}).get("termination")), 5, "the status after the loss")
            status_at_loss = secondary.status() or {}
            log_at_loss = secondary.log()
            wait_for(dep, lambda: "(attempt 2)" in secondary.log(), 60, "the second reconnection to be scheduled")
            log_at_retries = secondary.log()
            dep.start_daemon(0)
            try:
                dep.wait_established(60)
                reestablished = True
            except TimeoutError:
                reestablished = False
            ping_after = topo.ping(b.lan_ns, host(a, 4), count=3, interval_s=0.1).received if reestablished else 0
            server.stop()
            yield Aftermath(topo, dep, held, log_at_loss, log_at_retries, status_at_loss, reestablished, ping_after)


def test_lan_tcp_connection_is_reset_not_left_to_time_out(aftermath: Aftermath) -> None:
    assert aftermath.held["outcome"] == "reset", aftermath.held
    assert aftermath.held["errno"] == "ECONNRESET", aftermath.held


def test_loss_is_logged_with_its_reason_code_peer_and_facts(aftermath: Aftermath) -> None:
    primary = aftermath.dep.wan_address(aftermath.topo.a)
    line = re.search(rf"^.* P3-E500 session with {re.escape(primary)} lost: .*$", aftermath.log_at_loss, re.M)
    assert line is not None, aftermath.log_at_loss[-2000:]
    for fact in (f"peer={primary}", "role=secondary", "time_s=", "control_sent=", "rekeys_completed="):
        assert fact in line.group(0), line.group(0)
    assert aftermath.status_at_loss["termination"]["tcp_resets"] >= 1, aftermath.status_at_loss
    assert "P3-E500" in aftermath.status_at_loss["peers"][0]["losses"], aftermath.status_at_loss


def test_loss_line_itself_carries_the_termination_counts(aftermath: Aftermath) -> None:
    line = re.search(r"^.* P3-E500 .*$", aftermath.log_at_loss, re.M)
    assert line is not None
    assert re.search(r"tcp_resets=[1-9]", line.group(0)), line.group(0)


def test_secondary_retries_after_5_then_10_seconds(aftermath: Aftermath) -> None:
    primary = aftermath.dep.wan_address(aftermath.topo.a)
    log = aftermath.log_at_retries
    first = log.find(f"reconnecting to {primary} in 5 s (attempt 1)")
    second = log.find(f"reconnecting to {primary} in 10 s (attempt 2)")
    assert 0 <= first < second, log[-3000:]
    # Between them the first attempt failed, with its own reason code.
    assert "P3-E503" in log[first:second], log[first:second]


def test_session_comes_back_when_the_primary_is_restarted(aftermath: Aftermath) -> None:
    assert aftermath.reestablished, aftermath.dep.daemons[1].log()[-2000:]
    entry = peer(aftermath.dep, 1)
    assert entry["state"] == "established" and entry["sessions_started"] == 2, entry
    assert aftermath.ping_after == 3
