"""``p3hw bench``: benchmarks, side by side with references, as ratios (bench/results.md)."""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
from types import ModuleType

from p3hw.reasons import P3Error

SUITES = ("crypto", "engines", "lpm", "dpdk", "keygen", "tunnel")
NOT_YET: list[str] = []
BENCH_DIR = pathlib.Path(__file__).resolve().parents[2] / "bench"
RESULTS = BENCH_DIR / "results.md"


def write_section(suite: str, text: str, path: pathlib.Path = RESULTS) -> None:
    """bench/results.md is shared by the suites: replace (or append) *suite*'s marked section."""
    begin, end = f"<!-- bench:{suite}:begin -->", f"<!-- bench:{suite}:end -->"
    block = f"{begin}\n{text}\n{end}"
    old = path.read_text() if path.exists() else "# p3hw benchmark results\n"
    if begin in old and end in old:
        before, rest = old.split(begin, 1)
        new = before + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="all",
                        help="which benchmark: crypto, engines, lpm, dpdk, keygen, tunnel or all (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per P3 measurement (default 2)")
    parser.add_argument("--openssl-seconds", type=int, default=3,
                        help="seconds per 'openssl speed' run (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    tunnel = parser.add_argument_group("tunnel suite (root; bench/tunnel.py)")
    tunnel.add_argument("--tcp-seconds", type=int, default=10, help="iperf3 TCP run per path (default 10)")
    tunnel.add_argument("--tcp-runs", type=int, default=3,
                        help="TCP runs per path; the median counts (default 3)")
    tunnel.add_argument("--udp-seconds", type=int, default=10, help="iperf3 UDP run per path and rate (default 10)")
    tunnel.add_argument("--udp-rates", default="300,1000",
                        help="offered UDP rates in Mbit/s, comma-separated (default 300,1000)")
    tunnel.add_argument("--rekey-wait", type=int, default=1, help="p3hw rekey_wait during the runs (default 1)")
    tunnel.add_argument("--paths", default="plain,p3hw-udp,p3hw-esp,openvpn,strongswan",
                        help="which paths to measure, comma-separated (default: all five)")


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
    tunnel_options = _tunnel_options(args) if "tunnel" in suites else None
    if "tunnel" in suites and tunnel_options is None:
        return 2
    for suite in suites:
        if suite == "tunnel":
            _load(suite).run(**(tunnel_options or {}), write=not args.no_write)
        elif suite == "lpm":
            _load(suite).run(write=not args.no_write)
        elif suite == "keygen":
            _load(suite).run(seconds=args.seconds, write=not args.no_write)
        elif suite == "dpdk":
            _load("dpdk_forward").run(seconds=max(args.seconds, 3.0), write=not args.no_write)
        else:
            _load(suite).run(seconds=args.seconds, openssl_seconds=args.openssl_seconds, write=not args.no_write)
    if args.suite == "all" and NOT_YET:
        print("\nNot built yet:")
        for line in NOT_YET:
            print(f"  - {line}")
    return 0


def _tunnel_options(args: argparse.Namespace) -> dict[str, object] | None:
    """The tunnel suite's options, checked before anything is built (None: reported bad)."""
    try:
        rates = tuple(int(r) for r in args.udp_rates.split(",") if r.strip())
    except ValueError:
        rates = ()
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    known = ("plain", "p3hw-udp", "p3hw-esp", "openvpn", "strongswan")
    if not rates or any(r <= 0 for r in rates):
        print(f"p3hw bench: --udp-rates must be positive integers (Mbit/s), got {args.udp_rates!r}")
        return None
    if not paths or any(p not in known for p in paths):
        print(f"p3hw bench: --paths takes some of {', '.join(known)}, got {args.paths!r}")
        return None
    if args.tcp_seconds <= 0 or args.udp_seconds <= 0 or args.tcp_runs < 1 or args.rekey_wait < 1:
        print("p3hw bench: --tcp-seconds and --udp-seconds must be positive, --tcp-runs and --rekey-wait at least 1")
        return None
    return {"tcp_seconds": args.tcp_seconds, "udp_seconds": args.udp_seconds, "udp_rates": rates,
            "rekey_wait_s": args.rekey_wait, "only": paths, "tcp_runs": args.tcp_runs}
