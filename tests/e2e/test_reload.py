"""SIGHUP on the primary adds a remote without disturbing the established one, and new
heartbeat timers reach a running session (both sides) without restarting it.

The primary starts knowing only secondary 1. While a sequence-numbered
stream runs from secondary 1's LAN to the primary's, the primary's
configuration gains secondary 2 and gets SIGHUP; secondary 2 then starts
and connects. Secondary 1's session is the same one throughout (one session
started on each side, no loss) and its stream loses nothing.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from e2e_support import host, next_port, peer, start_udp_receiver, start_udp_sender

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

STREAM_S = 10
RATE = 500


def without_remote(config: str, remote_id: int) -> str:
    return "".join(line for line in config.splitlines(keepends=True) if not line.startswith(f"{remote_id}/"))


@pytest.fixture(scope="module")
def one_of_two(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Topology, Deployment, str]]:
    with Topology.star(2) as topo:
        dep = Deployment(topo, tmp_path_factory.mktemp("reload"), Options())
        dep.write_configs()
        primary_conf = dep.daemons[0].config_path
        full = primary_conf.read_text()
        primary_conf.write_text(without_remote(full, 2))
        try:
            dep.start_daemon(0)
            dep.start_daemon(1)
            dep.wait(lambda: (peer(dep, 0)["state"], peer(dep, 1)["state"]) == ("established", "established")
                     if dep.peer_status(0) and dep.peer_status(1) else False, 30, "secondary 1's session")
            yield topo, dep, full
        finally:
            dep.stop()


def test_sighup_adds_a_remote_and_leaves_the_established_session_alone(
        one_of_two: tuple[Topology, Deployment, str]) -> None:
    topo, dep, full = one_of_two
    primary, s1, s2 = topo.sites
    s1_wan = dep.wan_address(s1)
    assert [p["address"] for p in dep.daemons[0].status()["peers"]] == [s1_wan]

    port = next_port()
    receiver = start_udp_receiver(topo, primary, port, "--idle-exit-s", "2", "--max-s", str(STREAM_S + 40))
    sender = start_udp_sender(topo, s1, primary, 4, port, "--rate", str(RATE), "--duration-s", str(STREAM_S))

    dep.daemons[0].config_path.write_text(full)
    dep.daemons[0].proc.send_signal(signal.SIGHUP)
    dep.wait(lambda: "configuration reloaded: 2 remote(s)" in dep.daemons[0].log(), 10, "the primary to reload")
    dep.start_daemon(2)
    dep.wait(dep.established, 30, "secondary 2's session (and secondary 1's still up)")

    # The new secondary's LAN is reachable, from the primary's LAN and from secondary 1's (via the hub).
    assert topo.ping(s2.lan_ns, host(primary, 4), count=3, interval_s=0.1).received == 3
    assert topo.ping(s1.lan_ns, host(s2, 4), count=3, interval_s=0.1).received == 3

    sent, got = sender.result(STREAM_S + 30), receiver.result(40)
    assert sent["errors"] == 0 and sent["sent"] == STREAM_S * RATE, sent
    assert (sent["sent"] - got["unique"], got["reordered"]) == (0, 0), got
    for index, address in ((0, s1_wan), (1, None)):
        entry = peer(dep, index, address)
        assert entry["state"] == "established", entry
        assert entry["sessions_started"] == 1 and entry["losses"] == [], entry


def test_sighup_with_new_heartbeat_timers_keeps_the_session_and_the_secondary_takes_them(
        one_of_two: tuple[Topology, Deployment, str]) -> None:
    topo, dep, full = one_of_two
    s1_wan = dep.wan_address(topo.sites[1])
    primary = dep.daemons[0]
    reloads = primary.log().count("configuration reloaded")
    primary.config_path.write_text(full.rstrip("\n") + "\n1/heartbeat_time = 7\n1/heartbeat_fail = 45\n")
    primary.proc.send_signal(signal.SIGHUP)
    dep.wait(lambda: primary.log().count("configuration reloaded") > reloads, 10, "the primary to reload")
    dep.wait(lambda: peer(dep, 1).get("heartbeat_time_s") == 7, 10, "secondary 1 to take heartbeat_time 7 s")
    for index, address in ((0, s1_wan), (1, None)):
        entry = peer(dep, index, address)
        assert entry["state"] == "established", entry
        assert entry["sessions_started"] == 1 and entry["losses"] == [], entry  # the session was not restarted
        assert (entry["heartbeat_time_s"], entry["heartbeat_fail_s"]) == (7, 45), entry
