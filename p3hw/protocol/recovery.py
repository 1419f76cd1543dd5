"""Session recovery (spec §2.1.7, DESIGN.md §4.6).

When a session is lost, both sides terminate the enterprise connections
that ran through it (TCP: a RST with an acceptable sequence number; other
protocols: ICMP destination unreachable — the runtime's flow tracker does
this) and log a message with the reason code and every fact known. The
secondary then retries the connection after 5 s, adding 5 s after each
failed attempt, up to once a minute (5, 10, 15, ... 60, 60, ...). The
primary never initiates (spec §2.1.2), so it only terminates and logs.

One `Recovery` per configured peer lives across sessions (the schedule
belongs to the peer, not to one session). Sans-I/O, in the vocabulary of
every machine here: inputs (`session_lost`, `connect_failed`, `connected`,
`handle_timer(now)` at `get_timer()`) queue actions; `events()` drains them.
"""

from __future__ import annotations

from dataclasses import dataclass

from p3hw.constants import RECONNECT_FIRST_WAIT_S, RECONNECT_MAX_WAIT_S, RECONNECT_STEP_S
from p3hw.reasons import reason


@dataclass(frozen=True)
class TerminateEnterpriseConnections:
    """Action: reset every enterprise flow through the session with *peer*."""

    peer: str
    reason_code: str


@dataclass(frozen=True)
class SyslogMessage:
    """Action: log *message* to the enterprise logging facility (spec §2.1.7 2)."""

    severity: str  # "err" | "warning" | "info", syslog(3) names
    reason_code: str
    message: str


@dataclass(frozen=True)
class ScheduleReconnect:
    """Action (secondary): start the handshake again at *at_s* (after *wait_s*)."""

    at_s: float
    wait_s: float
    attempt: int


@dataclass(frozen=True)
class Reconnect:
    """Action (secondary): the wait is over, start the initial exchange now."""

    attempt: int


RecoveryAction = TerminateEnterpriseConnections | SyslogMessage | ScheduleReconnect | Reconnect


def reconnect_wait_s(failures: int) -> float:
    """Wait before attempt number failures+1: 5, 10, 15, ... capped at 60 (§2.1.7 2)."""
    return float(min(RECONNECT_FIRST_WAIT_S + RECONNECT_STEP_S * failures, RECONNECT_MAX_WAIT_S))


def _facts_text(facts: dict[str, object]) -> str:
    return " ".join(f"{key}={value}" for key, value in facts.items())


class Recovery:
    def __init__(self, role: str, peer: str) -> None:
        if role not in ("primary", "secondary"):
            raise ValueError(f"role must be primary or secondary, not {role!r}")
        self.role = role
        self.peer = peer
        self.failures = 0
        self.reconnect_at_s: float | None = None
        self.waits_s: list[float] = []
        self._events: list[RecoveryAction] = []

    def events(self) -> list[RecoveryAction]:
        out, self._events = self._events, []
        return out

    def session_lost(self, now: float, reason_code: str, detail: str, facts: dict[str, object]) -> None:
        """The session with the peer is gone: terminate, log, and (secondary) retry."""
        known = {"peer": self.peer, "role": self.role, "time_s": f"{now:.3f}", **facts}
        meaning = reason(reason_code).meaning
        actions: list[RecoveryAction] = [
            TerminateEnterpriseConnections(self.peer, reason_code),
            SyslogMessage("err", reason_code, f"{reason_code} session with {self.peer} lost: {detail} ({meaning}); {_facts_text(known)}"),
        ]
        self.failures = 0
        if self.role == "secondary":
            actions.append(self._schedule(now))
        self._events.extend(actions)

    def connect_failed(self, now: float, detail: str) -> None:
        """An attempt to re-establish the session failed: log and wait longer."""
        if self.role != "secondary":
            return
        self.failures += 1
        schedule = self._schedule(now)
        self._events += [
            SyslogMessage(
                "warning", "P3-E503",
                f"P3-E503 cannot reach primary {self.peer}: {detail}; attempt {self.failures} failed, "
                f"next in {schedule.wait_s:g} s",
            ),
            schedule,
        ]

    def connected(self, now: float) -> None:
        self.failures = 0
        self.reconnect_at_s = None
        self._events.append(SyslogMessage("info", "", f"session with {self.peer} established at {now:.3f}"))

    def _schedule(self, now: float) -> ScheduleReconnect:
        wait = reconnect_wait_s(self.failures)
        self.waits_s.append(wait)
        self.reconnect_at_s = now + wait
        return ScheduleReconnect(self.reconnect_at_s, wait, self.failures + 1)

    def get_timer(self) -> float | None:
        return self.reconnect_at_s

    def handle_timer(self, now: float) -> None:
        if self.reconnect_at_s is None or now < self.reconnect_at_s:
            return
        self.reconnect_at_s = None
        self._events.append(Reconnect(self.failures + 1))
