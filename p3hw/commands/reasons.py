"""``p3hw reasons``: list the reason-code catalogue."""

from __future__ import annotations

import argparse
import json

from p3hw.reasons import REASONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("code", nargs="?", help="show one code (P3-Exxx or its name)")


def run(args: argparse.Namespace) -> int:
    rows = list(REASONS.values())
    if args.code:
        wanted = args.code.upper()
        rows = [r for r in rows if wanted in (r.code, r.name)]
        if not rows:
            print(f"p3hw: P3-E122 no reason code {args.code!r} (see 'p3hw reasons')")
            return 2
    if args.json:
        print(json.dumps([{"code": r.code, "name": r.name, "meaning": r.meaning} for r in rows], indent=2))
    else:
        for r in rows:
            print(f"{r.code}  {r.name:<30} {r.meaning}")
    return 0
