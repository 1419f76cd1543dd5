"""``p3hw demo``: one primary and two secondaries in network namespaces.

Builds the star testbed (simulators/netns.py), writes the three
configurations, starts the real daemons with a ``rekey_wait`` of a few
seconds, and runs traffic through the tunnels for ``DEMO_SECONDS`` (default
60): a ping from each secondary's LAN to the primary's LAN and a TCP stream
(iperf3). A status line is printed every second; the summary states the
rekeys done on each session and how many data packets were lost.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p3hw.reasons import P3Error

PING_INTERVAL_S = 0.2
#: The demo's TCP stream is paced so the ping measures the tunnel, not a
#: saturated queue (saturation is what `make bench` measures).
TCP_RATE = "200M"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("DEMO_SECONDS", "60")),
                        help="how long the traffic runs (env DEMO_SECONDS, default 60)")
    parser.add_argument("--rekey-wait", type=int, default=5, help="rekey_wait of every session (seconds)")
    parser.add_argument("--transport", choices=("udp", "esp"), default="udp")


def _ping_counts(output: str) -> tuple[int, int]:
    import re

    match = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise P3Error("NEED_ROOT", "the demo builds network namespaces: run it as root")
    if args.seconds < 5:
        raise P3Error("USAGE", "--seconds must be at least 5")
    from p3hw.simulators.deployment import Deployment, Options
    from p3hw.simulators.netns import Topology

    print(f"p3hw demo: 1 primary + 2 secondaries in network namespaces, rekey every {args.rekey_wait} s, "
          f"{args.seconds} s of traffic ({args.transport} transport)")
    workdir = Path(tempfile.mkdtemp(prefix="p3hw-demo-"))
    with Topology.star(2) as topo:
        deployment = Deployment(topo, workdir, Options(rekey_wait_s=args.rekey_wait, transport=args.transport,
                                                       heartbeat_time_s=5, heartbeat_fail_s=20))
        with deployment:
            deployment.wait_established(30)
            primary = topo.primary
            print(f"sessions up: primary {deployment.wan_address(primary)} LAN {primary.lan4}; " + "; ".join(
                f"secondary {deployment.wan_address(s)} LAN {s.lan4}" for s in topo.secondaries))
            count = int(args.seconds / PING_INTERVAL_S)
            pings = [topo.popen(site.lan_ns, ["ping", "-n", "-q", "-i", str(PING_INTERVAL_S), "-c", str(count),
                                              str(primary.host4)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                     for site in topo.secondaries]
            server = topo.popen(primary.lan_ns, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            tcp = topo.popen(topo.secondaries[0].lan_ns,
                             ["iperf3", "-c", str(primary.host4), "-t", str(max(args.seconds - 2, 1)), "-J",
                              "-b", TCP_RATE],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            started = time.monotonic()
            while any(p.poll() is None for p in pings):
                time.sleep(1.0)
                _status_line(deployment, time.monotonic() - started)
            print()
            tcp_out, _ = tcp.communicate(timeout=30)
            server.wait(timeout=10)
            results = [_ping_counts(p.communicate()[0]) for p in pings]
            status = deployment.daemons[0].status() or {}
        return _summary(status, results, tcp_out, topo)


def _status_line(deployment: object, elapsed_s: float) -> None:
    status = deployment.daemons[0].status()  # type: ignore[attr-defined]
    if status is None:
        return
    peers = status["peers"]
    up = sum(1 for p in peers if p["state"] == "established")
    rekeys = sum(p["rekeys_completed"] for p in peers)
    dp = status["dataplane"] or {}
    drops = sum((dp.get("drops") or {}).values())
    # One line rewritten in place on a terminal; one line a second into a log.
    start = "\r" if sys.stdout.isatty() else ""
    end = "" if sys.stdout.isatty() else "\n"
    sys.stdout.write(f"{start}[{elapsed_s:5.1f} s] sessions {up}/{len(peers)}  rekeys {rekeys:4d}  "
                     f"sealed {dp.get('sealed_packets', 0):9d}  opened {dp.get('opened_packets', 0):9d}  "
                     f"drops {drops}{end}")
    sys.stdout.flush()


def _summary(status: dict, pings: list[tuple[int, int]], tcp_json: str, topo: object) -> int:
    import json

    print("== summary ==")
    for peer in status.get("peers", []):
        print(f"session with {peer['address']}: {peer['state']}, {peer['rekeys_completed']} rekeys, "
              f"{peer['sessions_started']} session(s) started, losses {peer['losses'] or 'none'}")
    sent = sum(t for t, _ in pings)
    received = sum(r for _, r in pings)
    lost = sent - received
    try:
        tcp = json.loads(tcp_json)
        gbits = tcp["end"]["sum_received"]["bits_per_second"] / 1e9
        print(f"TCP stream: {gbits:.2f} Gbit/s through the tunnel, {tcp['end']['sum_sent']['retransmits']} "
              "retransmissions")
    except (ValueError, KeyError, TypeError):
        print("TCP stream: iperf3 gave no result")
    rekeys = sum(p["rekeys_completed"] for p in status.get("peers", []))
    print(f"rekeys done: {rekeys}; ping packets sent {sent}, answered {received}, lost {lost}")
    drops = (status.get("dataplane") or {}).get("drops") or {}
    print(f"dataplane drops on the primary: {drops or 'none'}")
    if lost == 0 and rekeys > 0:
        print("zero data packets lost across all rekeys")
        return 0
    print(f"P3-E502 the demo lost {lost} data packets or did no rekey")
    return 1
