"""Heartbeat failure: a silent WAN is detected (P3-E500), and the session comes back.

The WAN simulator on the secondary's link goes to 100% loss: neither side
hears the other any more. With heartbeat_time 1 s and heartbeat_fail 3 s
(the primary's keywords, sent to the secondary in CONFIG), both sides
declare the session lost with P3-E500 after heartbeat_fail seconds of
unanswered heartbeats. When the link is clean again the secondary's
retries re-establish the session.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from e2e_support import deployed, host, peer

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology
from p3hw.simulators.wan import WanParams

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

HEARTBEAT_TIME_S = 1
HEARTBEAT_FAIL_S = 3
#: Wait bound, not a timing assertion: detection is due heartbeat_time +
#: heartbeat_fail after the silence starts; the rest is slack for a busy machine.
DETECTION_WAIT_S = HEARTBEAT_TIME_S + HEARTBEAT_FAIL_S + 20


@pytest.fixture(scope="module")
def watched(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Topology, Deployment]]:
    options = Options(heartbeat_time_s=HEARTBEAT_TIME_S, heartbeat_fail_s=HEARTBEAT_FAIL_S)
    with Topology.two_site(wan=WanParams()) as topo:
        with deployed(topo, tmp_path_factory.mktemp("heartbeat"), options) as dep:
            yield topo, dep


def lost_with(dep: Deployment, index: int, code: str) -> bool:
    entry = dep.peer_status(index)
    return entry is not None and entry["state"] != "established" and code in entry["losses"]


@dataclass
class Silence:
    topo: Topology
    dep: Deployment
    loss_lines: dict[str, str]   # role -> its P3-E500 line
    detected_s: float            # from silencing the link to both sides' status saying lost (reported, not asserted)
    recovered: bool


@pytest.fixture(scope="module")
def silence(watched: tuple[Topology, Deployment]) -> Silence:
    topo, dep = watched
    b = topo.b
    # Let a heartbeat round pass first: the secondary has the primary's timers (CONFIG) by then.
    time.sleep(HEARTBEAT_TIME_S * 2)
    silenced = time.monotonic()
    topo.set_wan(b.label, WanParams(loss_pct=100))
    dep.wait(lambda: lost_with(dep, 1, "P3-E500") and lost_with(dep, 0, "P3-E500"), DETECTION_WAIT_S,
             "both sides to declare the session lost by heartbeat")
    detected_s = time.monotonic() - silenced
    lines = {}
    for index, role in ((0, "primary"), (1, "secondary")):
        line = re.search(r"^.* P3-E500 session with .*$", dep.daemons[index].log(), re.M)
        lines[role] = line.group(0) if line else ""
    topo.set_wan(b.label, WanParams())
    try:
        dep.wait(lambda: peer(dep, 1)["sessions_started"] == 2 and dep.established(), 60,
                 "the secondary's retry to re-establish the session")
        recovered = True
    except TimeoutError:
        recovered = False
    return Silence(topo, dep, lines, detected_s, recovered)


LOSS_LINE = re.compile(r"P3-E500 session with \S+ lost: no answer to heartbeats for ([\d.]+) s "
                       r"\(silent for ([\d.]+) s\)")


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_silent_wan_is_declared_lost_by_heartbeat_on_both_sides(silence: Silence, role: str) -> None:
    line = silence.loss_lines[role]
    found = LOSS_LINE.search(line)
    assert found is not None, (role, silence.dep.daemons[0 if role == "primary" else 1].log()[-2000:])
    assert f"role={role}" in line
    # Never declared lost before heartbeat_fail seconds of silence (a busy
    # machine can only make it later; the wait above bounds it from above).
    assert float(found.group(2)) >= HEARTBEAT_FAIL_S, (line, f"both sides lost after {silence.detected_s:.1f} s")


def test_secondary_loss_line_names_the_heartbeat_fail_in_force(silence: Silence) -> None:
    found = LOSS_LINE.search(silence.loss_lines["secondary"])
    assert found is not None
    assert float(found.group(1)) == HEARTBEAT_FAIL_S, silence.loss_lines["secondary"]


def test_session_comes_back_when_the_wan_does(silence: Silence) -> None:
    assert silence.recovered, silence.dep.daemons[1].log()[-2000:]
    assert silence.topo.ping(silence.topo.b.lan_ns, host(silence.topo.a, 4), count=3, interval_s=0.1).received == 3
