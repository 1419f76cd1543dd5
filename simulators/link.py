"""A one-way simulated link in virtual time: delay, jitter, loss, reordering, duplication.

Nothing here sleeps or reads a clock: the owner asks `send(item, now)`,
then `next_arrival()` and `pop_arrivals(now)`, and moves virtual time
itself. All randomness comes from the `random.Random` given, so a seed
reproduces a run exactly.

Impairments (per packet, independently):

* ``loss``: probability the packet is dropped;
* ``duplicate``: probability a second copy is delivered (its own delay);
* ``reorder``: probability the packet is held back ``reorder_extra_s``
  longer than its neighbours, so later packets overtake it;
* ``jitter_s``: uniform extra delay in [0, jitter_s] (also reorders).

`drop_rules` lets a test drop chosen packets (e.g. "the first REKEY"):
each rule is called with the item and returns True to drop it.
`alter_rules` let a test change a packet in flight (a flipped bit): each is
called with the item and returns the item to deliver instead (or the same).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class LinkConfig:
    delay_s: float = 0.005
    jitter_s: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_extra_s: float = 0.02

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, not {value}")
        if self.delay_s < 0 or self.jitter_s < 0 or self.reorder_extra_s < 0:
            raise ValueError("delays must not be negative")

    @property
    def max_delay_s(self) -> float:
        return self.delay_s + self.jitter_s + (self.reorder_extra_s if self.reorder else 0.0)


@dataclass
class LinkStats:
    sent: int = 0
    dropped_random: int = 0
    dropped_by_rule: int = 0
    duplicated: int = 0
    held_back: int = 0
    delivered: int = 0


@dataclass
class Link(Generic[T]):
    config: LinkConfig
    rng: random.Random
    name: str = "link"
    drop_rules: list[Callable[[T], bool]] = field(default_factory=list)
    alter_rules: list[Callable[[T], T]] = field(default_factory=list)
    stats: LinkStats = field(default_factory=LinkStats)
    _in_flight: list[tuple[float, int, T]] = field(default_factory=list)
    _order: int = 0

    def _arrival(self, now: float) -> float:
        cfg = self.config
        at = now + cfg.delay_s
        if cfg.jitter_s:
            at += self.rng.uniform(0.0, cfg.jitter_s)
        if cfg.reorder and self.rng.random() < cfg.reorder:
            at += cfg.reorder_extra_s
            self.stats.held_back += 1
        return at

    def _enqueue(self, at: float, item: T) -> None:
        self._order += 1
        heapq.heappush(self._in_flight, (at, self._order, item))

    def send(self, item: T, now: float) -> bool:
        """Put *item* on the wire; False if the link dropped it."""
        self.stats.sent += 1
        if any(rule(item) for rule in self.drop_rules):
            self.stats.dropped_by_rule += 1
            return False
        if self.config.loss and self.rng.random() < self.config.loss:
            self.stats.dropped_random += 1
            return False
        for alter in self.alter_rules:
            item = alter(item)
        self._enqueue(self._arrival(now), item)
        if self.config.duplicate and self.rng.random() < self.config.duplicate:
            self.stats.duplicated += 1
            self._enqueue(self._arrival(now), item)
        return True

    def next_arrival(self) -> float | None:
        return self._in_flight[0][0] if self._in_flight else None

    def pop_arrivals(self, now: float) -> list[T]:
        out = []
        while self._in_flight and self._in_flight[0][0] <= now:
            out.append(heapq.heappop(self._in_flight)[2])
        self.stats.delivered += len(out)
        return out

    def in_flight(self) -> int:
        return len(self._in_flight)
