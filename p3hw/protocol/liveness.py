"""Heartbeats (Appendix A `heartbeat_time`, `heartbeat_fail`; DESIGN.md §4.5), and silent-peer probes.

Any authenticated control message from the peer proves it is alive. After
`heartbeat_time_s` seconds without one, this side sends a HEARTBEAT (and
another every `heartbeat_time_s` while still unanswered); if nothing has
come back `heartbeat_fail_s` seconds after the first unanswered heartbeat,
the peer is lost (P3-E500 HEARTBEAT_LOST). That is the spec's rule, and on
an idle link it is the only one.

A peer that goes silent while this side keeps sending it data is different:
every second of waiting is data sealed into a dead session (the peer may
have declared the session lost on its own, and its SHUTDOWN may have been
lost). So when this side has sent data since it last received anything from
the peer (data or control) and that was `heartbeat_time_s` ago, it probes:
a HEARTBEAT at once, then `SILENT_PEER_PROBES` in all spread over the probe
deadline, and if nothing at all comes back by then the peer is lost
(P3-E505 PEER_SILENT). The deadline is `max(SILENT_PEER_DEADLINE_MIN_S,
SILENT_PEER_RTT_FACTOR x the heartbeat round trip)`, never longer than
`heartbeat_fail_s` (p3hw/constants.py gives the reasoning; docs/protocol.md §6).
Anything received from the peer ends the probing.

Sans-I/O, in the vocabulary of every machine here: `handle_timer(now)` at
`get_timer()`; `events()` drains what is due (`LivenessAction`s).
The runtime reports traffic with `traffic(now, sent, received)`: whether the
dataplane sealed data for the peer, or opened anything from it, since the last
report (it reads the per-peer counters on its own clock, never per packet).
"""

from __future__ import annotations

from enum import Enum

from p3hw.constants import (
    DEFAULT_HEARTBEAT_FAIL_S,
    DEFAULT_HEARTBEAT_TIME_S,
    SILENT_PEER_DEADLINE_MIN_S,
    SILENT_PEER_PROBES,
    SILENT_PEER_RTT_FACTOR,
)


class LivenessAction(Enum):
    SEND_HEARTBEAT = "send_heartbeat"
    PEER_LOST = "peer_lost"      # heartbeat_fail passed (P3-E500)
    PEER_SILENT = "peer_silent"  # data went out, nothing came back, probes unanswered (P3-E505)


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
        #: anything from the peer: control heard, or data the dataplane opened
        self.last_received_s = now
        #: the last report of data sealed for the peer (None: none since the session began)
        self.last_sent_s: float | None = None
        self.probe_started_s: float | None = None
        self.last_probe_s: float | None = None
        self.probes_sent = 0  # heartbeats sent since probing started (unanswered, or probing would have ended)
        #: the last heartbeat round trip, when the session measured one
        self.rtt_s: float | None = None

    # --- inputs ---------------------------------------------------------------------

    def heard_from_peer(self, now: float) -> None:
        self.last_heard_s = max(self.last_heard_s, now)
        self.first_unanswered_s = None
        self.last_heartbeat_s = None
        self._received(now)

    def traffic(self, now: float, sent: bool, received: bool) -> None:
        """Since the last report, the dataplane sealed data for the peer (*sent*) or opened something from it."""
        if received:
            self._received(now)
        if sent:
            self.last_sent_s = now

    def _received(self, now: float) -> None:
        self.last_received_s = max(self.last_received_s, now)
        self.probe_started_s = None
        self.last_probe_s = None
        self.probes_sent = 0

    # --- the probe deadline ---------------------------------------------------------

    @property
    def probe_deadline_s(self) -> float:
        measured = SILENT_PEER_RTT_FACTOR * self.rtt_s if self.rtt_s is not None else 0.0
        return min(self.heartbeat_fail_s, max(SILENT_PEER_DEADLINE_MIN_S, measured))

    def _probe_start_s(self) -> float | None:
        """When probing starts (or started): data went out after the last receipt, heartbeat_time after it."""
        if self.probe_started_s is not None:
            return self.probe_started_s
        if self.last_sent_s is None or self.last_sent_s <= self.last_received_s:
            return None
        return self.last_received_s + self.heartbeat_time_s

    def _spec_lost_s(self) -> float | None:
        return None if self.first_unanswered_s is None else self.first_unanswered_s + self.heartbeat_fail_s

    def _silent_lost_s(self) -> float | None:
        """The probe deadline, when it comes strictly before the spec's (else the spec's rule decides)."""
        if self.probe_started_s is None:
            return None
        at = self.probe_started_s + self.probe_deadline_s
        spec = self._spec_lost_s()
        return at if spec is None or at < spec else None

    def _next_heartbeat_s(self) -> float:
        spec = (self.last_heard_s if self.last_heartbeat_s is None else self.last_heartbeat_s) + self.heartbeat_time_s
        start = self._probe_start_s()
        if start is None:
            return spec
        if self.last_probe_s is None:
            return min(spec, start)
        return min(spec, self.last_probe_s + self.probe_deadline_s / SILENT_PEER_PROBES)

    # --- time -----------------------------------------------------------------------

    def get_timer(self) -> float | None:
        if self.lost:
            return None
        deadlines = [self._next_heartbeat_s()]
        for at in (self._spec_lost_s(), self._silent_lost_s()):
            if at is not None:
                deadlines.append(at)
        return min(deadlines)

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
        spec = self._spec_lost_s()
        if spec is not None and now >= spec:
            self.lost = True
            return LivenessAction.PEER_LOST
        silent = self._silent_lost_s()
        if silent is not None and now >= silent:
            self.lost = True
            return LivenessAction.PEER_SILENT
        if now >= self._next_heartbeat_s():
            if self.first_unanswered_s is None:
                self.first_unanswered_s = now
            self.last_heartbeat_s = now
            start = self._probe_start_s()
            if start is not None and now >= start:
                if self.probe_started_s is None:
                    self.probe_started_s = now
                self.last_probe_s = now
                self.probes_sent += 1
            self.heartbeats_sent += 1
            return LivenessAction.SEND_HEARTBEAT
        return None
