"""LPM lookups per second with 10,000 IPv4 and 10,000 IPv6 prefixes (issue target: >= 10 M/s).

Builds native/bench/bench_lpm.c against native/src/route.c with the same
optimisation as the extension (-O2) and runs it; one core.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
import tempfile

from p3hw.commands.bench import write_section

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGET_PER_S = 10_000_000


def measure() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "bench_lpm")
        subprocess.run(["cc", "-O2", "-I", str(ROOT / "native/include"), "-o", binary,
                        str(ROOT / "native/bench/bench_lpm.c"), str(ROOT / "native/src/route.c"), "-pthread"],
                       check=True)
        out = subprocess.run([binary], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(write: bool = True, **_: object) -> dict[str, float]:
    result = measure()
    v4, v6 = result["v4_lookups_per_s"], result["v6_lookups_per_s"]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        "## LPM routing table (one core)",
        "",
        f"{when} · {platform.machine()} · {os.cpu_count()} cores · native/bench/bench_lpm.c, bursts of lookups "
        "of random addresses that hit the table",
        "",
        "| family | prefixes | lookups/s | table MiB | target 10 M/s |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| IPv4 | {result['v4_prefixes']:,} | {v4:,.0f} | {result.get('v4_table_mib', 0):.1f} | "
        f"{'met' if v4 >= TARGET_PER_S else 'NOT met'} ({v4 / TARGET_PER_S:.1f}×) |",
        f"| IPv6 | {result['v6_prefixes']:,} | {v6:,.0f} | {result.get('v6_table_mib', 0):.1f} | "
        f"{'met' if v6 >= TARGET_PER_S else 'NOT met'} ({v6 / TARGET_PER_S:.1f}×) |",
    ])
    print(text)
    if write:
        write_section("lpm", text)
    return result
