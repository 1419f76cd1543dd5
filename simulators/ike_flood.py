"""A spoofed IKE_SA_INIT flood onto the WAN segment (issue 16; docs/runtime.md "Queues").

Run inside the testbed's WAN namespace (``p3hw.simulators.netns``), where the
segment is a bridge: Ethernet frames go out of the bridge device itself
through an ``AF_PACKET`` socket, so every one can carry another source
address — what an attacker without a return path sends. The requests are
real IKE_SA_INIT messages (SA, KE, Ni) from the initiator machine, so the
responder cannot tell them from a secondary's first message without a
cookie round trip.

``python -m p3hw.simulators.ike_flood --iface wan --dst-mac 02:.. --dst 198.18.0.1
--sources 198.18.0.0/24 --exclude 198.18.0.1,198.18.0.2 --duration-s 180``
prints one JSON line at the end: frames sent, seconds, rate.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time

from p3hw.protocol.handshake import InitiatorHandshake
from p3hw.wire.ike import Identity
from p3hw.wire.packet import outer_packet

ETH_P_IP = 0x0800
NON_ESP_MARKER = bytes(4)
SOURCE_MAC = bytes.fromhex("02f100000001")       # locally administered
#: Distinct IKE_SA_INIT messages (each its own SPIi, nonce and key share) the frames cycle through.
TEMPLATES = 64
#: Distinct frames prepared before sending (source address and port vary).
FRAMES = 4096


def ike_sa_init_requests(count: int) -> list[bytes]:
    """*count* IKE_SA_INIT requests as a secondary would send them (from made-up identities)."""
    messages = []
    for i in range(count):
        initiator = InitiatorHandshake(Identity.ip(f"203.0.113.{i % 250 + 1}"), os.urandom(32))
        messages.append(initiator.start(0.0)[0])
    return messages


def frame(dst_mac: bytes, src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sport: int, dport: int,
          ike: bytes) -> bytes:
    """One Ethernet frame: IPv4 | UDP (zero checksum, RFC 768) | non-ESP marker | IKE message."""
    ip = outer_packet(NON_ESP_MARKER + ike, src.packed, dst.packed, (sport, dport))
    return dst_mac + SOURCE_MAC + struct.pack("!H", ETH_P_IP) + ip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p3hw.simulators.ike_flood", description=__doc__.splitlines()[0])
    parser.add_argument("--iface", required=True, help="interface to send from (the WAN bridge)")
    parser.add_argument("--dst-mac", required=True, help="the target gateway's MAC on the segment")
    parser.add_argument("--dst", required=True, help="the target gateway's IPv4 address")
    parser.add_argument("--port", type=int, default=5653)
    parser.add_argument("--sources", required=True, help="IPv4 network the spoofed sources are drawn from")
    parser.add_argument("--exclude", default="", help="comma-separated addresses never used as a source")
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)
    try:
        dst_mac = bytes.fromhex(args.dst_mac.replace(":", ""))
        dst = ipaddress.IPv4Address(args.dst)
        excluded = {ipaddress.IPv4Address(a) for a in args.exclude.split(",") if a}
        sources = [a for a in ipaddress.IPv4Network(args.sources).hosts() if a not in excluded]
    except ValueError as exc:
        print(f"P3-E122 bad argument: {exc}", file=sys.stderr)
        return 2
    if len(dst_mac) != 6 or not sources:
        print("P3-E122 bad argument: --dst-mac needs 6 octets and --sources at least one address", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    requests = ike_sa_init_requests(TEMPLATES)
    frames = [frame(dst_mac, rng.choice(sources), dst, rng.randrange(1024, 65536), args.port,
                    requests[i % TEMPLATES]) for i in range(FRAMES)]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.iface, 0))
    print("READY", flush=True)
    sent, errors = 0, 0
    started = time.monotonic()
    end = started + args.duration_s
    send = sock.send
    while time.monotonic() < end:
        for f in frames:
            try:
                send(f)
            except OSError:
                errors += 1
        sent += len(frames)
    elapsed = time.monotonic() - started
    print(json.dumps({"sent": sent - errors, "errors": errors, "seconds": round(elapsed, 1),
                      "rate_pps": round((sent - errors) / elapsed)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
