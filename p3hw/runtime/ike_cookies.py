"""The IKE cookie secret the responder and the packet worker share (RFC 7296 §2.6; docs/runtime.md "Queues").

Under load the worker answers IKE_SA_INIT requests with a COOKIE itself,
before they reach the control plane, and queues only those that bring a
valid cookie back; the responder checks the same cookies when it has too
many half-open exchanges. Both use one secret, rotated here; the secret
before the last rotation stays valid, so no exchange in flight fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

#: How long one cookie secret is used (RFC 7296 §2.6: "the responder should change the value of
#: <secret> frequently").
COOKIE_SECRET_ROTATE_S = 600.0
COOKIE_SECRET_BYTES = 32


class CookieResponder(Protocol):
    def set_cookie_secret(self, version: int, secret: bytes) -> None: ...


class CookieWorker(Protocol):
    def set_ike_cookies(self, mode: str, version: int = 1, secret: bytes = b"") -> None: ...


class IkeCookieSecret:
    """Sets a fresh secret in the responder and the worker now, and every *rotate_s* after."""

    def __init__(self, responder: CookieResponder, worker: CookieWorker, now: float,
                 rotate_s: float = COOKIE_SECRET_ROTATE_S, rng: Callable[[int], bytes] = os.urandom) -> None:
        self._responder, self._worker, self._rng = responder, worker, rng
        self.rotate_s = rotate_s
        self.version = 0
        self.next_rotation = now
        self.handle_timer(now)

    def handle_timer(self, now: float) -> None:
        if now < self.next_rotation:
            return
        self.version = self.version % 255 + 1        # 1..255: the first octet of every cookie
        secret = self._rng(COOKIE_SECRET_BYTES)
        self._responder.set_cookie_secret(self.version, secret)
        self._worker.set_ike_cookies("under-load", self.version, secret)
        self.next_rotation = now + self.rotate_s
