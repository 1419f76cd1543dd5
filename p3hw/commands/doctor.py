"""``p3hw doctor``: what this machine can use, and why not (DESIGN.md §5)."""

from __future__ import annotations

import argparse
import json
import os

from p3hw import dataplane
from p3hw.reasons import P3Error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def checks() -> list[dict[str, object]]:
    """Each check: name, ok, detail."""
    found: list[dict[str, object]] = []
    try:
        abi = dataplane.abi_version()
        found.append({"name": "native dataplane", "ok": True, "detail": f"ABI {abi}"})
        features = dataplane.cpu_features()
        found.append({"name": "cpu", "ok": features["aesni"],
                      "detail": ", ".join(k for k, v in features.items() if v) or "no AES features"})
    except P3Error as exc:
        found.append({"name": "native dataplane", "ok": False, "detail": exc.message()})
    tun_ok = os.path.exists("/dev/net/tun")
    found.append({"name": "tun", "ok": tun_ok, "detail": "/dev/net/tun" if tun_ok else "P3-E611 /dev/net/tun missing"})
    root = os.geteuid() == 0
    found.append({"name": "privileges", "ok": root, "detail": "root" if root else "P3-E900 not root: no TUN, no netns"})
    return found


def run(args: argparse.Namespace) -> int:
    found = checks()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for c in found:
            print(f"{'ok ' if c['ok'] else 'NO '} {c['name']:<18} {c['detail']}")
    return 0
