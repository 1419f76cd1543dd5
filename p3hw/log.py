"""Logging to syslog (facility configurable, default ``daemon``) and stderr.

Spec §5.1: every failure message carries a reason code. ``failure()`` is the
one way to log one: it takes a reason name and puts its code first.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys

from p3hw.reasons import reason

LOGGER_NAME = "p3hw"

FACILITIES = logging.handlers.SysLogHandler.facility_names


def setup_logging(ident: str = "p3hw", facility: str = "daemon", level: int = logging.INFO,
                  syslog_address: str = "/dev/log") -> logging.Logger:
    """Send p3hw's log to stderr and, when a syslog socket exists, to syslog."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.addHandler(stderr)
    if facility not in FACILITIES:
        raise ValueError(f"unknown syslog facility {facility!r}")
    if os.path.exists(syslog_address):
        try:
            handler = logging.handlers.SysLogHandler(address=syslog_address, facility=FACILITIES[facility])
        except OSError:
            pass
        else:
            handler.setFormatter(logging.Formatter(f"{ident}[{os.getpid()}]: %(message)s"))
            logger.addHandler(handler)
    logger.propagate = False
    return logger


def failure(logger: logging.Logger, reason_name: str, message: str, level: int = logging.ERROR) -> str:
    """Log a failure line that starts with its reason code; return the line."""
    line = f"{reason(reason_name).code} {message}"
    logger.log(level, line)
    return line
