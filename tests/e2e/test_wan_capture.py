"""What an observer on the WAN sees: only P3 packets and IKE, never the inner plaintext.

tshark captures the secondary gateway's WAN interface from before the
daemons start (so the initial exchange is in the capture) until after a
marked UDP stream ("P3HW-MARKER-<random>") and a ping crossed the tunnel.
Every captured frame must be link control (ARP, IPv6 neighbour discovery),
UDP on the P3 port (IKE messages behind the non-ESP marker, and P3
packets), or raw ESP (IP protocol 50) with the ESP transport; at least one
IKE message must be there; and the marker's bytes must appear nowhere in
the capture file.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import deployed, host, udp_stream

from p3hw.constants import DEFAULT_PORT
from p3hw.simulators.deployment import Options
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns]

#: ICMPv6 neighbour discovery (RFC 4861: 133-137) and MLDv2 reports (143): link control.
ND_AND_MLD = {133, 134, 135, 136, 137, 143}
COUNT = 200


@dataclass
class Capture:
    transport: str
    pcap: Path
    marker: str
    received: dict[str, object]
    frames: list[dict[str, str]]


FIELDS = ["frame.number", "frame.len", "frame.protocols", "ip.proto", "ipv6.nxt", "udp.srcport", "udp.dstport",
          "icmpv6.type", "isakmp.exchangetype"]


def read_frames(topo: Topology, ns: str, pcap: Path) -> list[dict[str, str]]:
    # Decode the P3 port as UDP-encapsulated ESP (RFC 3948): IKE behind the
    # non-ESP marker then shows as isakmp.
    argv = ["tshark", "-r", str(pcap), "-d", f"udp.port=={DEFAULT_PORT},udpencap", "-T", "fields", "-E",
            "separator=|", "-E", "occurrence=f", *[x for f in FIELDS for x in ("-e", f)]]
    out = topo.run(ns, argv, timeout=60)
    assert out.returncode == 0, out.stderr
    return [dict(zip(FIELDS, line.split("|"), strict=True)) for line in out.stdout.splitlines() if line]


@pytest.fixture(scope="module", params=["udp", "esp"])
def capture(request: pytest.FixtureRequest, stale_testbeds_removed: list[str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    transport = request.param
    workdir = tmp_path_factory.mktemp(f"capture-{transport}")
    pcap = workdir / "wan.pcap"
    marker = f"P3HW-MARKER-{secrets.token_hex(8)}"
    with Topology.two_site() as topo:
        b = topo.b
        # -n: no name lookups; -s 0: whole frames; -w: raw bytes to search afterwards.
        tshark = topo.popen(b.gw_ns, ["tshark", "-n", "-q", "-s", "0", "-i", "wan0", "-w", str(pcap)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert tshark.stderr is not None
        started = ""
        while "Capturing on" not in started:  # dumpcap says so once the socket is open
            line = tshark.stderr.readline()
            assert line, f"tshark did not start: {started}"
            started += line
        with deployed(topo, workdir, Options(transport=transport)) as dep:
            _, received = udp_stream(topo, topo.a, b, 4, rate=1000, count=COUNT, size=300, marker=marker)
            assert topo.ping(topo.a.lan_ns, host(b, 4), count=3, interval_s=0.1).received == 3
            dep.stop()  # SHUTDOWN messages are part of what an observer sees too
        tshark.send_signal(signal.SIGINT)
        tshark.wait(15)
        frames = read_frames(topo, b.gw_ns, pcap)
        yield Capture(transport, pcap, marker, received, frames)


def test_marked_datagrams_crossed_the_tunnel_during_the_capture(capture: Capture) -> None:
    assert capture.received["unique"] == COUNT and capture.received["marker_seen"] == COUNT, capture.received


def test_marker_plaintext_never_appears_on_the_wan(capture: Capture) -> None:
    data = capture.pcap.read_bytes()
    assert len(data) > COUNT * 300  # the stream is in there, sealed
    assert capture.marker.encode() not in data
    assert capture.marker.encode().hex().encode() not in data


def test_wan_carries_only_p3_packets_and_ike(capture: Capture) -> None:
    ike = p3_udp = esp = 0
    sealed_bytes = 0  # frames, not datagrams: a UDP GSO train is captured as one frame
    strays = []
    for frame in capture.frames:
        protocols = frame["frame.protocols"].split(":")
        if "arp" in protocols:
            continue
        if "icmpv6" in protocols and frame["icmpv6.type"] and int(frame["icmpv6.type"]) in ND_AND_MLD:
            continue
        ports = {frame["udp.srcport"], frame["udp.dstport"]}
        if "udp" in protocols and ports == {str(DEFAULT_PORT)}:
            if "isakmp" in protocols:
                ike += 1
            else:
                p3_udp += 1
                sealed_bytes += int(frame["frame.len"])
            continue
        if capture.transport == "esp" and "udp" not in protocols and (frame["ip.proto"] == "50"
                                                                      or frame["ipv6.nxt"] == "50"):
            esp += 1
            sealed_bytes += int(frame["frame.len"])
            continue
        strays.append(frame)
    assert strays == [], strays[:10]
    assert ike >= 2, "the initial exchange (IKE_SA_INIT, IKE_AUTH) is not in the capture"
    # The marked stream crossed as P3 packets (raw ESP with that transport;
    # the P3 UDP port still carries IKE then).
    assert (p3_udp if capture.transport == "udp" else esp) > 0
    assert sealed_bytes >= COUNT * 300
