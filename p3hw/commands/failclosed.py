"""``p3hw failclosed status|clear``: the kernel routes that keep remote subnets closed.

A gateway with ``io = kernel`` leaves an ``unreachable`` route (proto 153) for
every remote subnet in the kernel, so that traffic for a remote never leaves
in clear while its tunnel is down -- including after the daemon stopped or
died (p3hw/runtime/failclosed.py, docs/runtime.md "Fail closed").

* ``status [-c CONF]``: list p3hw's routes in this network namespace; with a
  configuration, say which belong to its remotes and which are stale.
* ``clear -c CONF``: remove the routes of the configuration's remotes (the
  operator takes the gateway out of service and wants the LAN routed
  normally again). ``--stale`` removes instead the routes no remote of the
  configuration has.
* ``install -c CONF``: install them without starting the gateway -- at boot,
  before the network comes up (kernel routes do not survive a reboot), or
  before the first start.
"""

from __future__ import annotations

import argparse
import ipaddress
import json

from p3hw.config import Config, load_config
from p3hw.runtime.failclosed import FAILCLOSED_METRIC, install_routes, list_routes, remove_routes

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verb = parser.get_default("_path")[1]
    clearing = verb == "clear"
    parser.add_argument("-c", "--config", metavar="CONF", required=verb != "status",
                        help="the gateway's configuration file" + (" (to tell stale routes)" if verb == "status" else ""))
    if clearing:
        parser.add_argument("--stale", action="store_true",
                            help="remove the routes that no remote of CONF has, and keep CONF's")
    else:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _configured(config: Config) -> dict[IPNetwork, str]:
    return {subnet: f"remote {r.id} ({r.address})" for r in config.remotes for subnet in r.subnets}


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    configured = _configured(config) if config is not None else {}
    if args._path[1] == "install":
        assert config is not None
        if config.local.io == "dpdk" or config.local.fail_open:
            why = "io = dpdk" if config.local.io == "dpdk" else "fail_open = 1"
            print(f"{why}: no fail-closed routes for this configuration")
            return 0
        install_routes(list(configured))
        for network in configured:
            print(f"unreachable {network} proto 153 metric {FAILCLOSED_METRIC}  {configured[network]}")
        return 0
    if args._path[1] == "clear":
        assert config is not None
        routes = list_routes()
        if args.stale:
            targets = [r.network for r in routes if r.network not in configured]
        else:
            targets = list(configured)
        removed = remove_routes(targets)
        for network in removed:
            print(f"removed unreachable {network}")
        if not removed:
            print("no fail-closed route to remove")
        if config.local.fail_open == 0 and not args.stale and removed:
            print("note: a running gateway with this configuration installs them again at its next start")
        return 0
    routes = list_routes()
    rows = [{"network": str(r.network), "metric": r.metric, "table": r.table,
             "remote": configured.get(r.network) if config is not None else None,
             "state": ("configured" if r.network in configured else "stale") if config is not None else None}
            for r in routes]
    missing = [str(n) for n in configured if n not in {r.network for r in routes}]
    if args.json:
        print(json.dumps({"routes": rows, "missing": missing}, indent=2))
        return 0
    if not rows:
        print("no fail-closed routes: traffic for the remote subnets follows the other routes when no tunnel "
              "carries it")
    for row in rows:
        where = "" if row["state"] is None else f"  {row['state']}" + (f" {row['remote']}" if row["remote"] else "")
        print(f"unreachable {row['network']} proto 153 metric {row['metric']}{where}")
    if config is not None and config.local.io == "dpdk":
        print("io = dpdk: no kernel routes; the DPDK ports forward nothing when the daemon is gone")
        return 0
    for network in missing:
        if config is not None and config.local.fail_open:
            print(f"open        {network}  fail_open = 1: no route (traffic leaves by other routes when the "
                  "tunnel is down)")
        else:
            print(f"missing     {network}  {configured[ipaddress.ip_network(network)]}: installed when the "
                  "gateway starts")
    return 0

