"""Login termination across restarts (spec §2.1.7 1), docs/flows.md "After a restart").

A gateway that is killed and started again has forgotten the enterprise
connections that ran through its sessions, so the LAN hosts on its own side
would wait for their own timeouts. Two things make them give up at once:

* the flow table is saved every few seconds (and at a clean stop) to a file
  beside the admin socket; a starting daemon loads it and writes a RST (TCP)
  or an ICMP unreachable (other protocols) for each of those flows into its
  LAN, then removes the file;
* the worker answers a TCP segment that no session could carry and no flow
  knows with a RST the sender accepts (``p3dp_flows_reset_stale``): the
  connections started after the last save.

The file lives in ``/run`` by default (beside ``admin_socket``): it survives a
crash or a restart of the daemon, not a reboot, and is written without
touching a disk that may be flash.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Sequence
from pathlib import Path

from p3hw.dataplane import FlowTable, Terminated
from p3hw.fsutil import FailureLog, write_error, write_private_file
from p3hw.reasons import P3Error

#: How often the flow table is saved while the daemon runs (seconds). A
#: connection younger than this at a kill -9 is reset by the worker instead,
#: at its first segment after the restart.
SAVE_INTERVAL_S = 5.0
#: File header: magic, format version, wall-clock time of the save, table count.
_HEADER = struct.Struct("<4sIdI")
_MAGIC = b"P3FS"
_VERSION = 1


def state_path(admin_socket: str) -> Path:
    """Where a daemon with this admin socket keeps its flows: ``/run/p3hw/admin.flows`` by default."""
    return Path(admin_socket).with_suffix(".flows")


class FlowState:
    """The saved flow tables of one daemon."""

    def __init__(self, path: Path, log: logging.Logger) -> None:
        self.path = path
        self.log = log
        self._saved_at = 0.0
        self._writes = FailureLog(log, f"flow table {path}")

    def maybe_save(self, tables: Sequence[FlowTable], now: float) -> None:
        if now - self._saved_at >= SAVE_INTERVAL_S:
            self.save(tables, now)

    def save(self, tables: Sequence[FlowTable], now: float) -> None:
        """Write every table's live flows; a failure is logged once and retried at the next save."""
        self._saved_at = now
        now_ms = int(now * 1000)
        blobs = [t.export_state(now_ms) for t in tables]
        data = _HEADER.pack(_MAGIC, _VERSION, time.time(), len(blobs))
        data += b"".join(struct.pack("<I", len(b)) + b for b in blobs)
        self._writes.record(self._ensure_directory() or write_private_file(
            str(self.path), data, mode=0o600, what="flow table"))

    def _ensure_directory(self) -> P3Error | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return write_error(str(self.path), exc, "flow table")
        return None

    def restore(self, now: float) -> tuple[list[bytes], Terminated, int]:
        """The termination packets for the flows a previous run saved, and how many flows that was.

        The file is removed: the packets are written once.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], Terminated(), 0
        except OSError as exc:
            self.log.warning("P3-E901 cannot read the saved flow table %s: %s", self.path, exc.strerror or exc)
            return [], Terminated(), 0
        try:
            self.path.unlink()
        except OSError:
            pass
        blobs = _split(data)
        if blobs is None:
            self.log.warning("P3-E901 %s is not a flow table this p3hw wrote: ignored", self.path)
            return [], Terminated(), 0
        saved_at, parts = blobs
        extra_idle_ms = max(0, int((time.time() - saved_at) * 1000))
        now_ms = int(now * 1000)
        # Room for every saved flow: a fresh table is only used to write the packets.
        capacity = max(16, sum(_count(p) for p in parts))
        table = FlowTable(capacity)
        loaded = 0
        try:
            for part in parts:
                loaded += table.import_state(part, now_ms, extra_idle_ms)
        except P3Error:
            self.log.warning("P3-E901 %s was written by another p3hw build: ignored", self.path)
            return [], Terminated(), 0
        packets, done = table.terminate(None, now_ms)
        return packets, done, loaded


def _split(data: bytes) -> tuple[float, list[bytes]] | None:
    if len(data) < _HEADER.size:
        return None
    magic, version, saved_at, count = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        return None
    parts, at = [], _HEADER.size
    for _ in range(count):
        if at + 4 > len(data):
            return None
        (size,) = struct.unpack_from("<I", data, at)
        at += 4
        if at + size > len(data):
            return None
        parts.append(data[at:at + size])
        at += size
    return saved_at, parts


def _count(part: bytes) -> int:
    """Flows in one table's export (its header's count), for sizing the table that loads it."""
    return struct.unpack_from("<I", part, 12)[0] if len(part) >= 16 else 0
