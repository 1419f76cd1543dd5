"""Failure lines reach syslog with their reason code (spec §2.1.7 2, §5.1).

The daemons log every line to stderr and to the syslog socket. The
namespace tests read stderr (test_primary_killed.py); this one checks the
syslog path itself: p3hw.log.setup_logging pointed at a Unix datagram
socket we bound, standing in for /dev/log, gets the failure line, with the
facility and the ident in the syslog header (RFC 3164 <PRI>).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from p3hw.log import FACILITIES, failure, setup_logging


@pytest.fixture
def syslog_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield path, sock
    finally:
        sock.close()
        logging.getLogger("p3hw").handlers.clear()


def test_session_loss_line_reaches_syslog_with_its_reason_code(syslog_socket: tuple[str, socket.socket]) -> None:
    path, sock = syslog_socket
    logger = setup_logging(ident="p3hw", facility="local3", syslog_address=path)
    line = failure(logger, "HEARTBEAT_LOST", "session with 198.18.0.1 lost: no answer to heartbeats for 3 s; "
                                             "peer=198.18.0.1 role=secondary time_s=12.000")
    datagram = sock.recv(4096).decode()
    pri = FACILITIES["local3"] * 8 + 3  # severity err (3): a lost session is an error
    assert datagram.startswith(f"<{pri}>p3hw[{os.getpid()}]: P3-E500 session with 198.18.0.1 lost"), datagram
    assert line in datagram


def test_no_syslog_socket_still_logs_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = setup_logging(syslog_address=str(tmp_path / "absent"))
    try:
        failure(logger, "RECONNECT_FAILED", "cannot reach primary 198.18.0.1", logging.WARNING)
        assert "P3-E503 cannot reach primary 198.18.0.1" in capsys.readouterr().err
    finally:
        logger.handlers.clear()
