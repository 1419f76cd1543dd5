"""What a local user can cost the admin server (issue 16): connections per uid, and the audit of refusals.

Any local user in the socket's group can connect, and one with no role can
still be refused over and over. So:

* root and the daemon's own uid are always served: they count against no limit;
* any other uid holds at most :data:`MAX_CONNECTIONS_PER_UID` connections
  (:data:`MAX_CONNECTIONS_NO_ROLE` without a role), and all of them together
  :data:`MAX_CONNECTIONS`; one more is answered P3-E708 and closed;
* a connection without a role is closed after :data:`NO_ROLE_IDLE_TIMEOUT_S`
  without a request (P3-E708), a user's after the server's idle timeout;
* refused requests (P3-E700 malformed, P3-E701 denied, P3-E708 limit) are
  audited one by one up to :data:`REFUSALS_AUDITED_PER_MINUTE` per uid per
  minute; the rest of that minute are counted in one summary row
  (command ``(refusals)``), so a flood of refusals writes a few rows, not
  thousands. The audit table itself is capped (``store.AUDIT_KEEP``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p3hw.admin.store import Store
from p3hw.reasons import P3Error, reason

#: Connections served at once for uids other than root and the daemon's (those are always served).
MAX_CONNECTIONS = 64
#: Connections one uid with a role may hold at once.
MAX_CONNECTIONS_PER_UID = 16
#: Connections one uid without a role may hold at once (it can only be refused).
MAX_CONNECTIONS_NO_ROLE = 2
#: A connection without a role that sends no request for this long is closed.
NO_ROLE_IDLE_TIMEOUT_S = 5.0
#: Refused requests audited one by one per uid and minute; the rest are counted in one summary row.
REFUSALS_AUDITED_PER_MINUTE = 20
REFUSAL_WINDOW_S = 60.0
#: The summary row is rewritten after this many more refusals (and at the end of its minute).
SUMMARY_UPDATE_EVERY = 100
#: Arguments of a refused request kept in its audit row (a refused request's arguments are the caller's).
REFUSED_ARGS_CHARS = 256
#: Results that count as refusals.
REFUSAL_CODES = frozenset({reason("ADMIN_MALFORMED").code, reason("ADMIN_DENIED").code, reason("ADMIN_LIMIT").code})
#: The command name of a summary row.
SUMMARY_COMMAND = "(refusals)"

log = logging.getLogger("p3hw.admin")


class ConnectionLimits:
    """Per-uid and total connection counts of the uids that are not always served."""

    def __init__(self) -> None:
        self.by_uid: dict[int | None, int] = {}
        self.total = 0

    def admit(self, uid: int | None, has_role: bool) -> None:
        """Count one more connection of *uid*, or raise P3-E708 (nothing counted)."""
        limit = MAX_CONNECTIONS_PER_UID if has_role else MAX_CONNECTIONS_NO_ROLE
        held = self.by_uid.get(uid, 0)
        if held >= limit:
            raise P3Error("ADMIN_LIMIT", f"uid {uid} holds {held} admin connections already, the most a "
                          f"{'user' if has_role else 'uid without a role'} may hold; this one is closed",
                          "each p3ctl call needs one connection: wait for the others to finish")
        if self.total >= MAX_CONNECTIONS:
            raise P3Error("ADMIN_LIMIT", f"{self.total} admin connections of other users are open, the most "
                          f"served at once; uid {uid} refused", "try again shortly (root is always served)")
        self.by_uid[uid] = held + 1
        self.total += 1

    def release(self, uid: int | None) -> None:
        held = self.by_uid.get(uid, 0) - 1
        if held > 0:
            self.by_uid[uid] = held
        else:
            self.by_uid.pop(uid, None)
        self.total = max(0, self.total - 1)


@dataclass
class _Window:
    start: float
    started_at: str
    written: int = 0
    suppressed: int = 0
    summary_id: int | None = None
    summary_count: int = 0
    who: dict[str, Any] = field(default_factory=dict)


class RefusalAudit:
    """Writes refusals to the audit log, at most REFUSALS_AUDITED_PER_MINUTE per uid and minute."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._windows: dict[int | None, _Window] = {}
        #: refusals counted in summary rows instead of written one by one (since start)
        self.suppressed_total = 0

    def record(self, uid: int | None, user: str, role: str | None, command: str, args: dict[str, Any],
               result: str, detail: str) -> None:
        now = self.clock()
        window = self._windows.get(uid)
        if window is None or now - window.start >= REFUSAL_WINDOW_S:
            if window is not None:
                self._finish(uid, window)
            self._expire(now)
            window = self._windows[uid] = _Window(now, _utc(), who={"uid": uid, "user": user, "role": role})
        if window.written < REFUSALS_AUDITED_PER_MINUTE:
            window.written += 1
            self.store.audit(uid, user, role, command, args, result, detail, args_chars=REFUSED_ARGS_CHARS)
            return
        window.suppressed += 1
        self.suppressed_total += 1
        if window.summary_id is None:
            log.warning("%s uid %s: more than %d refused admin requests this minute; further ones are counted, "
                        "not audited one by one", reason("ADMIN_LIMIT").code, uid, REFUSALS_AUDITED_PER_MINUTE)
            window.summary_id = self.store.audit(uid, user, role, SUMMARY_COMMAND, {}, reason("ADMIN_LIMIT").code,
                                                 self._summary(window))
            window.summary_count = window.suppressed
        elif window.suppressed - window.summary_count >= SUMMARY_UPDATE_EVERY:
            self._update(window)

    def flush(self) -> None:
        """Bring every summary row up to date (the server closes)."""
        for uid, window in list(self._windows.items()):
            self._finish(uid, window)
        self._windows.clear()

    def _finish(self, _uid: int | None, window: _Window) -> None:
        if window.summary_id is not None and window.summary_count != window.suppressed:
            self._update(window)

    def _expire(self, now: float) -> None:
        for uid, window in list(self._windows.items()):
            if now - window.start >= REFUSAL_WINDOW_S:
                self._finish(uid, window)
                del self._windows[uid]

    def _update(self, window: _Window) -> None:
        assert window.summary_id is not None
        self.store.audit_set_detail(window.summary_id, self._summary(window))
        window.summary_count = window.suppressed

    @staticmethod
    def _summary(window: _Window) -> str:
        who = window.who
        return (f"{window.suppressed} more refused request(s) from {who['user']} (uid {who['uid']}) in the minute "
                f"from {window.started_at}, not audited one by one (at most {REFUSALS_AUDITED_PER_MINUTE} a "
                "minute are)")


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
