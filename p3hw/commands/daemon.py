"""``p3hw primary -c FILE`` and ``p3hw secondary -c FILE``: run a gateway in the foreground.

systemd-friendly: no forking, logs to stderr and syslog, exits on SIGTERM
after telling its peers (SHUTDOWN) and removing its routes; SIGHUP reloads
the configuration. A configuration with errors is refused with every error
listed (file:line: P3-Exxx ...), exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from p3hw.config import Config, load_config
from p3hw.log import failure, setup_logging
from p3hw.reasons import P3Error
from p3hw.runtime import hardening


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="configuration file (spec Appendix A)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--status-file", help="rewrite this JSON file with the gateway's status twice a second")
    parser.add_argument("--allow-core-dumps", action="store_true",
                        help="let the daemon dump core (it holds keys: off by default, docs/hardware.md)")


def run(args: argparse.Namespace) -> int:
    if not args.allow_core_dumps:
        hardening.disable_core_dumps()
    role = args._path[0]
    config = load_config(args.config, role=role)
    missing = [r for r in config.remotes if r.psk_file is None]
    if missing:
        ids = ", ".join(f"{r.id}/psk_file" for r in missing)
        raise P3Error("CONFIG_MISSING_VALUE", f"{args.config}: the daemon needs a pre-shared key per remote: add {ids}",
                      hint="'p3hw setup' writes one; the file must be mode 0600")
    if os.geteuid() != 0:
        raise P3Error("NEED_ROOT", f"p3hw {role} needs root (CAP_NET_ADMIN) for its TUN interface and routes")
    logger = setup_logging(ident=f"p3hw-{role}", facility=config.local.log_facility,
                           level=logging.DEBUG if args.verbose else logging.INFO)
    if config.local.fips:
        fips_self_tests(config, logger)
    from p3hw.runtime.gateway import Gateway

    try:
        gateway = Gateway(config, logger, config_path=args.config, status_file=args.status_file)
        return asyncio.run(gateway.run())
    except P3Error as error:
        return hardening.exit_status(error)    # a refused HSM PIN: 77, and systemd does not restart


def fips_self_tests(config: Config, logger: logging.Logger) -> None:
    """fips = 1: the power-on self-tests before anything opens (docs/fips.md); a failure ends the start."""
    from p3hw.crypto.keygen import make_key_source
    from p3hw.fips import power_on_self_tests
    from p3hw.runtime.engines import set_crypto_engine

    source = make_key_source(config, logger)
    try:
        report = power_on_self_tests(config, source, lambda plane: set_crypto_engine(plane, config.local))
    except P3Error as error:
        failure(logger, "FIPS_SELF_TEST", f"{error.detail}: the daemon does not start")
        raise
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    logger.info("FIPS mode: %d power-on self-tests passed (%s); native code checked: %s",
                len(report.passed), ", ".join(report.passed), ", ".join(report.libraries))
