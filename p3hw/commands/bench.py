"""``p3hw bench``: benchmarks, side by side with references, as ratios (bench/results.md)."""

from __future__ import annotations

import argparse

NOT_YET = [
    "crypto: P3 seal/open against 'openssl speed -evp' (needs the dataplane core)",
    "lpm: route lookups with 10,000 IPv4 and 10,000 IPv6 prefixes (needs route.c)",
    "tunnel: TCP/UDP through p3hw vs plain veth, OpenVPN, strongSwan (needs the gateway runtime)",
    "engines and DPDK forwarding (needs the hardware backends)",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="all", help="which benchmark (default: all)")


def run(args: argparse.Namespace) -> int:
    print("p3hw bench: nothing is benchmarked yet. Not built:")
    for line in NOT_YET:
        print(f"  - {line}")
    return 0
