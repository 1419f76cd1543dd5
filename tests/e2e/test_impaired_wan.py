"""Over a bad WAN (5% loss, 20 ms +- 10 ms delay, 5% reordering, each way).

Sessions stay up, rekeys complete (the control channel retransmits what
the link lost), and data flows. UDP loss is expected here -- it is the
link's -- so the stream is only required to get through for the most part;
TCP must deliver the whole transfer, checksum-verified.
"""

from __future__ import annotations

import re
import signal
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
from p3hw.simulators.wan import WanParams

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

BAD_WAN = WanParams(loss_pct=5, delay_ms=20, jitter_ms=10, reorder_pct=5, seed=7)
RUN_S = 20
REKEY_WAIT_S = 1


@pytest.fixture(scope="module")
def impaired(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Topology, Deployment]]:
    with Topology.two_site(wan=BAD_WAN) as topo:
        with deployed(topo, tmp_path_factory.mktemp("impaired"), Options(rekey_wait_s=REKEY_WAIT_S),
                            timeout_s=60) as dep:
            yield topo, dep


def test_sessions_survive_and_rekey_over_a_lossy_reordering_wan(impaired: tuple[Topology, Deployment]) -> None:
    topo, dep = impaired
    a, b = topo.a, topo.b
    rekeys_before = [peer(dep, i)["rekeys_completed"] for i in (0, 1)]
    port_udp, port_tcp = next_port(), next_port()
    receiver = start_udp_receiver(topo, b, port_udp, "--max-s", str(RUN_S + 30), "--idle-exit-s", "2")
    sink = start_tcp_sink(topo, a, port_tcp)
    sender = start_udp_sender(topo, a, b, 4, port_udp, "--rate", "500", "--duration-s", str(RUN_S))
    nbytes = 1_000_000
    tcp = start_tcp_sender(topo, b, a, 4, port_tcp, nbytes)
    sent, got = sender.result(RUN_S + 60), receiver.result(60)
    tcp_sent, tcp_sunk = tcp.result(120), sink.result(30)
    link = topo.wan_link(b.label).stats().total

    # The link did its damage...
    assert link.dropped > 0 and link.reordered > 0, link
    # ...and data still flowed: most UDP datagrams, all of the TCP transfer.
    assert sent["sent"] == RUN_S * 500
    assert got["unique"] > 0.8 * sent["sent"], got
    assert_transfer_verified(tcp_sent, tcp_sunk, nbytes)
    # The one session stayed up on both sides and kept rekeying.
    rekeys = [peer(dep, i)["rekeys_completed"] - rekeys_before[i] for i in (0, 1)]
    assert min(rekeys) >= RUN_S // (4 * REKEY_WAIT_S), rekeys
    for index in (0, 1):
        entry = peer(dep, index)
        assert entry["state"] == "established", entry
        assert entry["sessions_started"] == 1 and entry["losses"] == [], entry

    # Retries: the primary's control channel retransmitted what the link
    # lost. The count is in the facts of the session-end line; clear the
    # link first so that the secondary's SHUTDOWN reaches the primary.
    topo.set_wan(b.label, WanParams())
    dep.stop_daemon(1, signal.SIGTERM)
    dep.wait(lambda: "P3-E501" in dep.daemons[0].log(), 15, "the primary to log the secondary's SHUTDOWN")
    ended = re.search(r"P3-E501 .*control_retransmissions=(\d+)", dep.daemons[0].log())
    assert ended is not None, dep.daemons[0].log()[-2000:]
    assert int(ended.group(1)) > 0, ended.group(0)
