"""``p3hw bench``: benchmarks, side by side with references, as ratios (bench/results.md)."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
from types import ModuleType

from p3hw.reasons import P3Error

SUITES = ("crypto",)
NOT_YET = [
    "lpm: route lookups with 10,000 IPv4 and 10,000 IPv6 prefixes (needs route.c)",
    "tunnel: TCP/UDP through p3hw vs plain veth, OpenVPN, strongSwan (needs the gateway runtime)",
    "engines and DPDK forwarding (needs the hardware backends)",
]
BENCH_DIR = pathlib.Path(__file__).resolve().parents[2] / "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="all", help="which benchmark: crypto or all (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per P3 measurement (default 2)")
    parser.add_argument("--openssl-seconds", type=int, default=3,
                        help="seconds per 'openssl speed' run (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")


def _load(name: str) -> ModuleType:
    """bench/ is a source-tree folder, not an installed package."""
    path = BENCH_DIR / f"{name}.py"
    if not path.exists():
        raise P3Error("DP_NOT_BUILT", f"benchmark {path} not found", hint="run from a p3hw source checkout")
    spec = importlib.util.spec_from_file_location(f"p3hw_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module           # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    suites = SUITES if args.suite == "all" else (args.suite,)
    if any(s not in SUITES for s in suites):
        print(f"p3hw bench: unknown suite {args.suite!r} (built: {', '.join(SUITES)})")
        return 2
    if args.seconds <= 0 or args.openssl_seconds <= 0:
        print("p3hw bench: --seconds and --openssl-seconds must be positive")
        return 2
    for suite in suites:
        _load(suite).run(seconds=args.seconds, openssl_seconds=args.openssl_seconds, write=not args.no_write)
    if args.suite == "all":
        print("\nNot built yet:")
        for line in NOT_YET:
            print(f"  - {line}")
    return 0
