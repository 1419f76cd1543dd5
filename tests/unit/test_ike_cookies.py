"""One IKE cookie for the responder and the packet worker (RFC 7296 §2.6; docs/runtime.md "Queues").

Under load the worker answers IKE_SA_INIT with a cookie before the control
plane sees the request; the retry then reaches the responder, which may
check the cookie itself. Both must make the same cookie from the same
secret, and a rotation must not fail an exchange in flight.
"""

from __future__ import annotations

import os

from p3hw.dataplane import ike_cookie
from p3hw.protocol.handshake import InitiatorHandshake, PeerPolicy, ResponderHandshake
from p3hw.runtime.ike_cookies import IkeCookieSecret
from p3hw.wire.ike import (
    FLAG_RESPONSE,
    IKE_SA_INIT,
    N_COOKIE,
    Identity,
    IkeMessage,
    NoncePayload,
    NotifyPayload,
    decode_message,
    encode_message,
)

PSK = b"a pre-shared key of thirty-two!!"
SECONDARY = Identity.ip("198.18.0.2")
PRIMARY = Identity.ip("198.18.0.1")
ADDR = ("198.18.0.2", 5653)


class SecretsSeen:
    """Stands in for the worker: what IkeCookieSecret gave it (the worker itself is tested in
    tests/integration/test_worker_queues.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, bytes]] = []

    def set_ike_cookies(self, mode: str, version: int = 1, secret: bytes = b"") -> None:
        self.calls.append((mode, version, secret))


def loaded_responder() -> ResponderHandshake:
    return ResponderHandshake(PRIMARY, {SECONDARY: PeerPolicy(psk=PSK)}.get, cookie_threshold=0)


def nonce_of(message: IkeMessage) -> bytes:
    nonce = message.first(NoncePayload)
    assert isinstance(nonce, NoncePayload)
    return nonce.nonce


def test_worker_and_responder_make_the_same_cookie() -> None:
    responder = loaded_responder()
    secret = os.urandom(32)
    responder.set_cookie_secret(9, secret)
    first = InitiatorHandshake(SECONDARY, PSK).start(0.0)[0]
    answer = decode_message(responder.receive(first, 0.0, ADDR)[0])
    request = decode_message(first)
    cookie = answer.notify(N_COOKIE)
    assert cookie is not None
    assert cookie.notification_data == ike_cookie(secret, 9, nonce_of(request), ADDR[0], request.spi_i)


def worker_cookie_reply(request: bytes, secret: bytes, version: int, addr: str) -> bytes:
    """The reply the worker sends (native/src/ike_cookie.c): IKE_SA_INIT response, SPIr zero, N(COOKIE)."""
    message = decode_message(request)
    cookie = ike_cookie(secret, version, nonce_of(message), addr, message.spi_i)
    return encode_message(IkeMessage(message.spi_i, bytes(8), IKE_SA_INIT, FLAG_RESPONSE, 0,
                                     [NotifyPayload(N_COOKIE, cookie)]))


def test_a_cookie_from_the_worker_lets_the_exchange_go_on() -> None:
    responder = loaded_responder()
    secrets = SecretsSeen()
    IkeCookieSecret(responder, secrets, now=0.0)
    (mode, version, secret), = secrets.calls
    assert mode == "under-load"
    initiator = InitiatorHandshake(SECONDARY, PSK)
    first = initiator.start(0.0)[0]
    retry = initiator.receive(worker_cookie_reply(first, secret, version, ADDR[0]), 0.0)[0]
    answer = decode_message(responder.receive(retry, 0.0, ADDR)[0])
    assert answer.notify(N_COOKIE) is None and answer.spi_r != bytes(8)   # the exchange went on


def test_a_rotation_keeps_the_previous_secret_valid_but_not_the_one_before() -> None:
    secrets = SecretsSeen()
    results = []
    for rotations in (1, 2):
        responder = loaded_responder()
        cookies = IkeCookieSecret(responder, secrets, now=0.0, rotate_s=600.0)
        _, version, secret = secrets.calls[-1]
        initiator = InitiatorHandshake(SECONDARY, PSK)
        retry = initiator.receive(worker_cookie_reply(initiator.start(0.0)[0], secret, version, ADDR[0]), 0.0)[0]
        for n in range(rotations):
            cookies.handle_timer(600.0 * (n + 1))
        answer = decode_message(responder.receive(retry, 1.0, ADDR)[0])
        results.append(answer.notify(N_COOKIE) is None)
    assert results == [True, False]
    # each rotation gave the worker a new secret, numbered on
    assert [c[1] for c in secrets.calls] == [1, 2, 1, 2, 3]
    assert len({c[2] for c in secrets.calls}) == 5
