"""The sessions learn from the dataplane's counters whether traffic flows (docs/runtime.md "Liveness").

Liveness probes a peer that stays silent while this side sends it data
(p3hw/protocol/liveness.py). Python never sees a data packet, so the control
loop reads each established peer's packet counters (the native SA counters,
summed over the session's SAs) every `TRAFFIC_POLL_S` and hands the totals to
the session (`Session.observe_traffic`), which tells sent data from its own
control messages. No work per packet; a few counter reads per peer and poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from p3hw.constants import TRAFFIC_POLL_S


class _Driver(Protocol):
    def observe_traffic(self, now: float) -> None: ...


class TrafficFeed:
    def __init__(self, interval_s: float = TRAFFIC_POLL_S) -> None:
        self.interval_s = interval_s
        self.next_poll_s = 0.0

    def poll(self, now: float, drivers: Iterable[_Driver]) -> None:
        """Each driver reads its peer's counters (`PeerDriver.observe_traffic`), at most every interval_s."""
        if now < self.next_poll_s:
            return
        self.next_poll_s = now + self.interval_s
        for driver in drivers:
            driver.observe_traffic(now)
