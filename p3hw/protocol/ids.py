"""Inbound P3 IDs: the one allocation policy (DESIGN.md §3).

A gateway's dataplane holds every session's inbound SAs in one table keyed
by P3 ID, so an ID must be unique among the IDs live in the gateway, and
(spec §2.1.4) a session never reuses one of its own. IDs are random and
never 0. One `P3IdAllocator` per gateway (or per side of a simulation);
the initial exchange takes its first ID from it and each session's rekeys
take theirs through `for_session`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol


class IdSource(Protocol):
    """What a session's rekey machine asks for a new inbound P3 ID."""

    def allocate(self) -> int: ...


class P3IdAllocator:
    """Random inbound P3 IDs, unique among the live ones, never reused in a session."""

    def __init__(self, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._rng = rng
        #: IDs held by some session's inbound SA (or handed out and not yet released)
        self.live: set[int] = set()

    def allocate(self, used_in_session: set[int] | None = None) -> int:
        """A new ID; recorded as live and, given the session's set, as used by that session."""
        while True:
            candidate = int.from_bytes(self._rng(4), "big")
            if candidate and candidate not in self.live and (
                    used_in_session is None or candidate not in used_in_session):
                self.live.add(candidate)
                if used_in_session is not None:
                    used_in_session.add(candidate)
                return candidate

    def hold(self, p3_id: int) -> None:
        """*p3_id* is live (an ID this allocator did not give, such as a test's fixed one)."""
        self.live.add(p3_id)

    def release(self, *p3_ids: int) -> None:
        """These IDs' SAs are gone from the dataplane; another session may have them."""
        self.live.difference_update(p3_ids)

    def for_session(self, used_in_session: set[int]) -> SessionIds:
        return SessionIds(self, used_in_session)


class SessionIds:
    """One session's view of the gateway's allocator (an `IdSource`)."""

    def __init__(self, allocator: P3IdAllocator, used_in_session: set[int]) -> None:
        self.allocator, self.used = allocator, used_in_session

    def allocate(self) -> int:
        return self.allocator.allocate(self.used)
