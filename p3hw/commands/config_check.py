"""``p3hw config check FILE...``: validate configurations, show their effective values.

Exit 0 and print every effective value with where it came from (default,
local or remote, and the line); exit 2 and print every problem, one
``file:line: P3-Exxx message`` per line on stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

from p3hw.config import LOCAL_KEYWORDS, REMOTE_KEYWORDS, ROLES, Config, ConfigErrors, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="configuration file(s) to check")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("--role", choices=ROLES, help="check the file(s) as this role (default: from the file)")


def _origin_text(entry: dict[str, Any]) -> str:
    return entry["source"] if entry["line"] is None else f"{entry['source']} (line {entry['line']})"


def _format(config: Config) -> list[str]:
    """One block for the local host and one per remote; only the keywords this role uses."""
    data = config.to_dict()
    lines = [f"{config.file}: OK - {config.role} ({config.role_origin}), {len(config.remotes)} remote host(s)"]

    def block(title: str, values: dict[str, dict[str, Any]], keywords: dict[str, Any], prefix: str) -> None:
        lines.append(title)
        for name, entry in values.items():
            kw = keywords.get(name)
            if kw is not None and config.role not in kw.roles:
                continue
            value = "-" if entry["value"] is None else entry["value"]
            lines.append(f"  {prefix + name:<22} {value!s:<28} {_origin_text(entry)}")

    block("local:", data["local"], LOCAL_KEYWORDS, "")
    for remote in data["remotes"]:
        rid = remote["id"]
        values = {k: v for k, v in remote.items() if k not in ("id", "subnets")}
        # The overrides are effective values: show them under the remote keyword even when inherited.
        block(f"remote {rid}:", values, {**REMOTE_KEYWORDS, "port": None}, f"{rid}/")
        for n, subnet in enumerate(remote["subnets"], start=1):
            lines.append(f"  {f'{rid}/route{n}':<22} {subnet['value']:<28} {_origin_text(subnet)}")
    return lines


def run(args: argparse.Namespace) -> int:
    # A file may hold any character; a terminal that cannot show it must not turn that into a crash.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    status = 0
    results: list[dict[str, Any]] = []
    for path in args.files:
        try:
            config = load_config(path, role=args.role)
        except ConfigErrors as errors:
            status = 2
            print(errors.message(), file=sys.stderr)
            results.append({"file": path, "ok": False, "errors": [e.to_dict() for e in errors],
                            "omitted": errors.omitted})
            continue
        results.append({"file": path, "ok": True, "config": config.to_dict()})
        if not args.json:
            print("\n".join(_format(config)))
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return status
