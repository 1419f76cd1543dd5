"""Rekey every second under load: no packet lost or reordered by a rekey.

``rekey_wait = 1`` for REKEY_RUN_S seconds (40 s here, chosen to keep the
e2e suite within its budget on a 2-core machine; the issue's 60 s only
lengthens the same steady state) while a sequence-numbered UDP stream runs
each way at a fixed rate and a paced TCP transfer runs beside them. On this
clean link (no WAN impairment) every loss or reordering would be the
rekeys', so the counts must be exactly zero.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from e2e_support import (
    assert_transfer_verified,
    deployed,
    next_port,
    peer,
    start_tcp_sender,
    start_tcp_sink,
    start_udp_receiver,
    start_udp_sender,
)

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

REKEY_RUN_S = 40
UDP_RATE_A_TO_B = 2000   # datagrams per second, primary's LAN -> secondary's LAN
UDP_RATE_B_TO_A = 1000
TCP_RATE_MBIT = 20


@pytest.fixture(scope="module")
def rekeying(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Topology, Deployment]]:
    with Topology.two_site() as topo:
        with deployed(topo, tmp_path_factory.mktemp("rekey"), Options(rekey_wait_s=1)) as dep:
            yield topo, dep


# This test found a race: the control plane's sends (IKE, sealed control
# packets) shared the worker's sendmmsg arrays, so at rekeys data packets
# were lost or sent twice (DP_REPLAY), some mangled (DP_AUTH_FAILED).
# p3dp_worker_send now uses its own sendto.
def test_rekey_every_second_loses_and_reorders_nothing(rekeying: tuple[Topology, Deployment]) -> None:
    topo, dep = rekeying
    a, b = topo.a, topo.b
    rekeys_before = [peer(dep, i)["rekeys_completed"] for i in (0, 1)]

    port_ab, port_ba, port_tcp = next_port(), next_port(), next_port()
    recv_ab = start_udp_receiver(topo, b, port_ab, "--max-s", str(REKEY_RUN_S + 30), "--idle-exit-s", "2")
    recv_ba = start_udp_receiver(topo, a, port_ba, "--max-s", str(REKEY_RUN_S + 30), "--idle-exit-s", "2")
    sink = start_tcp_sink(topo, a, port_tcp)
    tcp_bytes = int(TCP_RATE_MBIT * 1e6 / 8 * (REKEY_RUN_S - 2))
    started = time.monotonic()
    send_ab = start_udp_sender(topo, a, b, 4, port_ab, "--rate", str(UDP_RATE_A_TO_B),
                               "--duration-s", str(REKEY_RUN_S), "--size", "600")
    send_ba = start_udp_sender(topo, b, a, 4, port_ba, "--rate", str(UDP_RATE_B_TO_A),
                               "--duration-s", str(REKEY_RUN_S), "--size", "600")
    tcp = start_tcp_sender(topo, b, a, 4, port_tcp, tcp_bytes, rate_mbit=TCP_RATE_MBIT)

    sent_ab, sent_ba = send_ab.result(REKEY_RUN_S + 60), send_ba.result(REKEY_RUN_S + 60)
    got_ab, got_ba = recv_ab.result(60), recv_ba.result(60)
    tcp_sent, tcp_sunk = tcp.result(120), sink.result(30)
    elapsed = time.monotonic() - started

    rekeys = [peer(dep, i)["rekeys_completed"] - rekeys_before[i] for i in (0, 1)]
    status = [dep.daemons[i].status() for i in (0, 1)]
    facts = f"rekeys {rekeys} in {elapsed:.0f} s; dataplane {[s['dataplane'] for s in status]}"

    for sent, got in ((sent_ab, got_ab), (sent_ba, got_ba)):
        assert sent["errors"] == 0, sent
        lost = sent["sent"] - got["unique"]
        assert (lost, got["reordered"], got["duplicates"]) == (0, 0, 0), f"{sent} {got}; {facts}"
    assert_transfer_verified(tcp_sent, tcp_sunk, tcp_bytes)
    # Many rekeys, on both sides, all within the one session.
    assert min(rekeys) >= REKEY_RUN_S // 2, facts
    for index in (0, 1):
        entry = peer(dep, index)
        assert entry["sessions_started"] == 1 and entry["losses"] == [], entry
