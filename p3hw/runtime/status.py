"""The gateway's status: a typed model, its JSON, and the --status-file (docs/status.md).

`PeerDriver.status()` gives a `PeerStatus`; `Gateway.status()` puts them in
a `GatewayStatus` with the dataplane's, worker's, I/O's and engine's; the
admin socket, the metrics endpoint and the status file all serve
`GatewayStatus.to_dict()`. Fields marked optional are left out of the JSON
while they are None (a peer without a session has no inbound P3 ID).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from typing import Any

from p3hw.fsutil import StatusFileWriter

#: How often --status-file is rewritten.
STATUS_INTERVAL_S = 0.5

_OPTIONAL = {"optional": True}


@dataclass
class PeerStatus:
    """One remote host (spec §2.1.1.1 2): its session, keys and counters."""

    id: int
    address: str
    state: str  # "established" | "connecting" | "waiting" | "down"
    subnets: list[str]
    outer: str
    since_s: float | None
    sessions_started: int
    rekeys_completed: int
    losses: list[str]
    #: the peer's p3hw version from its CONFIG; None for an end that sends none (docs/install.md)
    peer_version: str | None = None
    outbound_p3_id: int | None = field(default=None, metadata=_OPTIONAL)
    inbound_p3_id: int | None = field(default=None, metadata=_OPTIONAL)
    control_retransmissions: int | None = field(default=None, metadata=_OPTIONAL)
    heartbeat_rtt_ms: float | None = field(default=None, metadata=_OPTIONAL)
    key_type: str | None = field(default=None, metadata=_OPTIONAL)
    #: the heartbeat timers in force (the secondary's are the primary's, from its CONFIG)
    heartbeat_time_s: float | None = field(default=None, metadata=_OPTIONAL)
    heartbeat_fail_s: float | None = field(default=None, metadata=_OPTIONAL)
    next_rekey_s: float | None = field(default=None, metadata=_OPTIONAL)
    key_source: str = "software"
    last_rekey_s: float | None = field(default=None, metadata=_OPTIONAL)
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    #: inbound_p3_id .. heartbeat_rtt_ms are shown for a live session even when None
    session_live: bool = field(default=False, metadata={"internal": True})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        live_keys = ("inbound_p3_id", "control_retransmissions", "heartbeat_rtt_ms", "key_type")
        for f in fields(self):
            if f.metadata.get("internal"):
                continue
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional") and not (self.session_live and f.name in live_keys):
                continue
            out[f.name] = list(value) if isinstance(value, list) else value
        return out


@dataclass
class DataplaneCounters:
    sealed_packets: int
    opened_packets: int
    control_packets: int
    drops: dict[str, int]


@dataclass
class GatewayStatus:
    """What `p3ctl status`, the metrics endpoint and --status-file show."""

    role: str
    address: str
    pid: int
    peers: list[PeerStatus]
    dataplane: DataplaneCounters | None
    worker: dict[str, Any] | None
    io: dict[str, Any]
    engine: dict[str, Any] | None
    termination: dict[str, Any] | None
    #: RSTs for segments of connections of an earlier session (docs/flows.md "After a restart")
    stale_resets: int = 0
    #: this p3hw's version (git describe at build time, docs/install.md)
    version: str = ""
    #: INFORMATIONAL requests answered on established IKE SAs (docs/handshake.md "After the exchange")
    ike: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role, "address": self.address, "pid": self.pid, "version": self.version,
            "peers": [p.to_dict() for p in self.peers],
            "dataplane": None if self.dataplane is None else dict(self.dataplane.__dict__),
            "worker": self.worker, "io": self.io, "engine": self.engine, "termination": self.termination,
            "stale_resets": self.stale_resets, "ike": self.ike,
        }


class StatusFile:
    """--status-file: rewritten at most every STATUS_INTERVAL_S, and once more on the way out.

    Private (0640, the admin socket's group) and atomic, never through a planted link; a full or
    read-only file system is logged once and the write retried (p3hw/fsutil.py)."""

    def __init__(self, path: str | None, logger: logging.Logger, *, group_from: str | None = None) -> None:
        self.path = path
        self.written_at = 0.0
        self._writer = StatusFileWriter(path, logger, group_from=group_from) if path is not None else None

    def due(self, now: float) -> bool:
        return self.path is not None and now - self.written_at >= STATUS_INTERVAL_S

    def write(self, now: float, status: dict[str, Any]) -> bool:
        assert self._writer is not None
        self.written_at = now
        return self._writer.write(json.dumps(status).encode())
