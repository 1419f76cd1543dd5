"""kill -9 and restart a gateway: its own LAN's connections are reset, not left to time out (spec §2.1.7 1).

The far side resets its LAN hosts when it notices the loss (test_primary_killed.py). The
restarted gateway had forgotten its flows; it now

* loads the flow table its previous run saved and resets those connections at start, and
* answers a segment of a connection younger than that save (no session carries it, no flow
  knows it) with a RST the sender accepts.

Each scenario holds a TCP connection from the restarted gateway's LAN through the tunnel and
reports how the LAN host's wait in recv ended.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Traffic, deployed, host, in_ns, next_port, wait_for

from p3hw.runtime.flowstate import state_path
from p3hw.simulators.deployment import Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

HEARTBEAT_TIME_S = 1
HEARTBEAT_FAIL_S = 3
#: Longer than the test waits for anything: an outcome of "timeout" means nobody reset the connection.
HOLD_TIMEOUT_S = 60


@dataclass
class Restart:
    held: dict[str, Any]     # the LAN host's report
    log: str                 # the restarted daemon's log
    status: dict[str, Any]   # its status once the connection ended


def _restart_scenario(tmp: Path, killed: int, *, lose_saved_flows: bool = False,
                      poke_every_s: float = 0.0) -> Iterator[Restart]:
    options = Options(heartbeat_time_s=HEARTBEAT_TIME_S, heartbeat_fail_s=HEARTBEAT_FAIL_S)
    with Topology.two_site() as topo:
        with deployed(topo, tmp, options) as dep:
            sites = {0: topo.a, 1: topo.b}
            near, far = sites[killed], sites[1 - killed]
            port = next_port()
            server = Traffic(in_ns(topo, far.lan_ns), ["tcp-echo", "--port", str(port)])
            client = Traffic(in_ns(topo, near.lan_ns),
                             ["tcp-hold", "--to", host(far, 4), "--port", str(port), "--timeout-s",
                              str(HOLD_TIMEOUT_S), "--poke-every-s", str(poke_every_s)], ready="CONNECTED")
            saved = state_path(str(dep.admin_socket(near)))
            # The flow must be in a save of the daemon about to be killed.
            wait_for(dep, lambda: saved.exists() and saved.stat().st_size > 64, 15, "the flow table to be saved")
            dep.stop_daemon(killed, signal.SIGKILL)
            if lose_saved_flows:
                saved.unlink()
            if killed == 0:
                # The secondary notices, resets its side, and backs off: the primary restarts with no
                # session for a while, as after a crash.
                wait_for(dep, lambda: "(attempt 1)" in dep.daemons[1].log(), 30, "the secondary to back off")
            dep.start_daemon(killed)
            held = client.result(HOLD_TIMEOUT_S + 15)
            daemon = dep.daemons[killed]
            wait_for(dep, lambda: bool(daemon.status()), 10, "the restarted daemon's status")
            time.sleep(0.6)   # one more status write after the reset
            server.stop()
            yield Restart(held, daemon.log(), daemon.status() or {})


@pytest.fixture(scope="module")
def primary_restarted(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restart]:
    yield from _restart_scenario(tmp_path_factory.mktemp("restart-primary"), killed=0)


@pytest.fixture(scope="module")
def secondary_restarted(stale_testbeds_removed: list[str],
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restart]:
    yield from _restart_scenario(tmp_path_factory.mktemp("restart-secondary"), killed=1)


@pytest.fixture(scope="module")
def primary_restarted_without_saved_flows(stale_testbeds_removed: list[str],
                                          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restart]:
    yield from _restart_scenario(tmp_path_factory.mktemp("restart-unsaved"), killed=0, lose_saved_flows=True,
                                 poke_every_s=0.5)


def test_restarted_primary_resets_its_lan_hosts_connections_at_start(primary_restarted: Restart) -> None:
    assert primary_restarted.held["outcome"] == "reset", primary_restarted.held
    assert primary_restarted.held["errno"] == "ECONNRESET", primary_restarted.held
    assert "P3-E502 1 connection(s) of the previous run reset at start" in primary_restarted.log, \
        primary_restarted.log[-2000:]


def test_restarted_secondary_resets_its_lan_hosts_connections_at_start(secondary_restarted: Restart) -> None:
    assert secondary_restarted.held["outcome"] == "reset", secondary_restarted.held
    assert secondary_restarted.held["errno"] == "ECONNRESET", secondary_restarted.held
    assert "P3-E502 1 connection(s) of the previous run reset at start" in secondary_restarted.log, \
        secondary_restarted.log[-2000:]


def test_connection_younger_than_the_last_save_is_reset_at_its_next_segment(
        primary_restarted_without_saved_flows: Restart) -> None:
    restart = primary_restarted_without_saved_flows
    assert restart.held["outcome"] == "reset", restart.held
    assert restart.held["errno"] == "ECONNRESET", restart.held
    assert "previous run reset at start" not in restart.log
    assert restart.status["stale_resets"] >= 1, restart.status
