"""Heartbeats (Appendix A `heartbeat_time`, `heartbeat_fail`; DESIGN.md §4.5).

Any authenticated control message from the peer proves it is alive. After
`heartbeat_time_s` seconds without one, this side sends a HEARTBEAT (and
another every `heartbeat_time_s` while still unanswered); if nothing has
come back `heartbeat_fail_s` seconds after the first unanswered heartbeat,
the peer is lost (P3-E500 HEARTBEAT_LOST).

Sans-I/O, in the vocabulary of every machine here: `handle_timer(now)` at
`get_timer()`; `events()` drains what is due (`LivenessAction`s).
"""

from __future__ import annotations

from enum import Enum

from p3hw.constants import DEFAULT_HEARTBEAT_FAIL_S, DEFAULT_HEARTBEAT_TIME_S


class LivenessAction(Enum):
    SEND_HEARTBEAT = "send_heartbeat"
    PEER_LOST = "peer_lost"


class Liveness:
    def __init__(
        self,
        now: float,
        heartbeat_time_s: float = DEFAULT_HEARTBEAT_TIME_S,
        heartbeat_fail_s: float = DEFAULT_HEARTBEAT_FAIL_S,
    ) -> None:
        self.heartbeat_time_s = heartbeat_time_s
        self.heartbeat_fail_s = heartbeat_fail_s
        self.last_heard_s = now
        self.first_unanswered_s: float | None = None
        self.last_heartbeat_s: float | None = None
        self.lost = False
        self.heartbeats_sent = 0
        self._events: list[LivenessAction] = []

    def heard_from_peer(self, now: float) -> None:
        self.last_heard_s = max(self.last_heard_s, now)
        self.first_unanswered_s = None
        self.last_heartbeat_s = None

    def get_timer(self) -> float | None:
        if self.lost:
            return None
        if self.first_unanswered_s is None:
            return self.last_heard_s + self.heartbeat_time_s
        assert self.last_heartbeat_s is not None
        return min(self.first_unanswered_s + self.heartbeat_fail_s, self.last_heartbeat_s + self.heartbeat_time_s)

    def events(self) -> list[LivenessAction]:
        out, self._events = self._events, []
        return out

    def handle_timer(self, now: float) -> None:
        action = self._due(now)
        if action is not None:
            self._events.append(action)

    def _due(self, now: float) -> LivenessAction | None:
        if self.lost:
            return None
        if self.first_unanswered_s is not None and now >= self.first_unanswered_s + self.heartbeat_fail_s:
            self.lost = True
            return LivenessAction.PEER_LOST
        due = self.last_heard_s if self.last_heartbeat_s is None else self.last_heartbeat_s
        if now >= due + self.heartbeat_time_s:
            if self.first_unanswered_s is None:
                self.first_unanswered_s = now
            self.last_heartbeat_s = now
            self.heartbeats_sent += 1
            return LivenessAction.SEND_HEARTBEAT
        return None
