"""Traffic generators and checkers for the end-to-end tests, run inside a namespace.

Each subcommand is one small program that the tests start with
``ip netns exec NS python -m p3hw.simulators.traffic ...``. Servers print
one ``READY`` line once their socket is bound, so a test never sends into a
socket that does not exist yet; every program ends by printing one JSON
object (its report) as its last line on stdout.

* ``udp-recv`` / ``udp-send``: a sequence-numbered UDP stream at a fixed
  rate. The receiver counts unique, duplicate and reordered (arrived after
  a higher sequence number) datagrams; with the sender's ``sent`` count a
  test knows exactly how many were lost.
* ``tcp-sink`` / ``tcp-send``: a TCP transfer of a seeded pseudo-random byte
  stream. The sink answers EOF with the SHA-256 and length of what it got,
  and the sender compares them with what it sent (``verified``).
* ``tcp-echo`` / ``tcp-hold``: an echo server, and a client that connects,
  proves the path with one echo, then blocks in ``recv`` and reports how
  the wait ended -- ``reset`` (ECONNRESET), ``timeout``, ``eof`` or
  ``data``. That is what a user behind a gateway sees when the tunnel dies
  (spec §2.1.7: a reset, not a timeout).

Bad arguments and socket errors end with a reason-coded message, never a
traceback.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from p3hw.reasons import P3Error

#: Datagram header: magic and a 64-bit sequence number (network order).
SEQ_MAGIC = b"P3SQ"
SEQ_HEADER = struct.Struct("!4sQ")
#: The sink's answer to EOF: SHA-256 of the bytes received, then their count.
DIGEST_ANSWER = struct.Struct("!32sQ")
CHUNK = 64 * 1024
#: How long a sender sleeps at most between bursts: paces the stream in
#: bursts of about this length (time.sleep cannot wait 500 us accurately).
PACING_TICK_S = 0.002
SOCKET_BUFFER = 4 * 1024 * 1024
READY = "READY"


# -- the sequence checker (pure, also used by the tests directly) ---------------


@dataclass
class SeqStats:
    """What a receiver of a sequence-numbered stream saw."""

    received: int = 0            # datagrams of the stream, duplicates included
    unique: int = 0
    duplicates: int = 0
    reordered: int = 0           # arrived after a higher sequence number
    foreign: int = 0             # datagrams that are not of the stream
    marker_seen: int = 0         # datagrams carrying the --marker text
    first_seq: int | None = None
    max_seq: int | None = None
    bytes: int = 0
    _seen: set[int] = field(default_factory=set, repr=False)

    def add(self, payload: bytes, marker: bytes = b"") -> None:
        if len(payload) < SEQ_HEADER.size:
            self.foreign += 1
            return
        magic, seq = SEQ_HEADER.unpack_from(payload)
        if magic != SEQ_MAGIC:
            self.foreign += 1
            return
        self.received += 1
        self.bytes += len(payload)
        if marker and marker in payload:
            self.marker_seen += 1
        if seq in self._seen:
            self.duplicates += 1
            return
        self._seen.add(seq)
        self.unique += 1
        if self.first_seq is None:
            self.first_seq = seq
        if self.max_seq is not None and seq < self.max_seq:
            self.reordered += 1
        if self.max_seq is None or seq > self.max_seq:
            self.max_seq = seq

    @property
    def missing_below_max(self) -> int:
        """Sequence numbers 0..max_seq never received (the tail is only known to the sender)."""
        return 0 if self.max_seq is None else self.max_seq + 1 - self.unique

    def report(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        out["missing_below_max"] = self.missing_below_max
        return out


def seq_datagram(seq: int, size: int, marker: bytes = b"") -> bytes:
    head = SEQ_HEADER.pack(SEQ_MAGIC, seq) + marker
    return head + b"\0" * max(0, size - len(head))


# -- helpers ----------------------------------------------------------------------


class _Stop:
    """SIGTERM/SIGINT set a flag that the loops poll (they wake at least every 0.2 s)."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, _signum: int, _frame: object) -> None:
        self.requested = True


def _ready() -> None:
    print(READY, flush=True)


def _emit(report: dict[str, object]) -> None:
    print(json.dumps(report), flush=True)


def _bound_socket(kind: int, bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # "::" takes IPv4 too
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.bind((bind, port))
    return sock


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


# -- UDP --------------------------------------------------------------------------


def udp_recv(args: argparse.Namespace) -> dict[str, object]:
    stop = _Stop()
    stats = SeqStats()
    marker = args.marker.encode() if args.marker else b""
    with _bound_socket(socket.SOCK_DGRAM, args.bind, args.port) as sock:
        sock.setblocking(False)
        _ready()
        started = time.monotonic()
        last_packet: float | None = None
        while not stop.requested:
            now = time.monotonic()
            if args.max_s and now - started >= args.max_s:
                break
            if args.idle_exit_s and last_packet is not None and now - last_packet >= args.idle_exit_s:
                break
            readable, _, _ = select.select([sock], [], [], 0.2)
            if not readable:
                continue
            while True:
                try:
                    payload = sock.recv(65535)
                except BlockingIOError:
                    break
                stats.add(payload, marker)
            last_packet = time.monotonic()
    return {"mode": "udp-recv", **stats.report()}


def udp_send(args: argparse.Namespace) -> dict[str, object]:
    if args.rate <= 0:
        raise P3Error("USAGE", "--rate must be a positive number of datagrams per second")
    if args.count is None and args.duration_s is None:
        raise P3Error("USAGE", "give --count or --duration-s")
    if args.size < SEQ_HEADER.size:
        raise P3Error("USAGE", f"--size must be at least {SEQ_HEADER.size}")
    total = args.count if args.count is not None else int(args.rate * args.duration_s)
    marker = args.marker.encode() if args.marker else b""
    stop = _Stop()
    sent = errors = 0
    error_kinds: dict[str, int] = {}
    with socket.socket(_family(args.to), socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        destination = (args.to, args.port)
        started = time.monotonic()
        seq = 0
        while seq < total and not stop.requested:
            # Send everything due by now: a fixed rate, in bursts of about one tick.
            due = min(total, int((time.monotonic() - started) * args.rate) + 1)
            while seq < due:
                try:
                    sock.sendto(seq_datagram(seq, args.size, marker), destination)
                    sent += 1
                except OSError as exc:  # ENOBUFS, ECONNREFUSED from an ICMP error, ...
                    errors += 1
                    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    error_kinds[name] = error_kinds.get(name, 0) + 1
                seq += 1
            next_due = started + seq / args.rate
            time.sleep(max(0.0, min(PACING_TICK_S, next_due - time.monotonic())))
        elapsed = time.monotonic() - started
    return {"mode": "udp-send", "sent": sent, "attempted": seq, "errors": errors, "error_kinds": error_kinds,
            "elapsed_s": round(elapsed, 3)}


# -- TCP transfer with a checksum ------------------------------------------------------


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            break
        data += part
    return data


def tcp_sink(args: argparse.Namespace) -> dict[str, object]:
    with _bound_socket(socket.SOCK_STREAM, args.bind, args.port) as server:
        server.listen(1)
        server.settimeout(args.accept_timeout_s)
        _ready()
        try:
            conn, peer = server.accept()
        except TimeoutError:
            return {"mode": "tcp-sink", "outcome": "no connection"}
    digest = hashlib.sha256()
    received = 0
    with conn:
        conn.settimeout(args.idle_timeout_s)
        try:
            while chunk := conn.recv(CHUNK):
                digest.update(chunk)
                received += len(chunk)
            conn.sendall(DIGEST_ANSWER.pack(digest.digest(), received))
            outcome = "eof"
        except TimeoutError:
            outcome = "timeout"
        except OSError as exc:
            outcome = f"error {errno.errorcode.get(exc.errno or 0, exc.errno)}"
    return {"mode": "tcp-sink", "outcome": outcome, "peer": peer[0], "bytes": received,
            "sha256": digest.hexdigest()}


def tcp_send(args: argparse.Namespace) -> dict[str, object]:
    if args.bytes <= 0:
        raise P3Error("USAGE", "--bytes must be positive")
    digest = hashlib.sha256()
    sent = 0
    rng = random.Random(args.seed)
    started = time.monotonic()
    with socket.create_connection((args.to, args.port), timeout=args.timeout_s) as conn:
        while sent < args.bytes:
            chunk = rng.randbytes(min(CHUNK, args.bytes - sent))
            conn.sendall(chunk)
            digest.update(chunk)
            sent += len(chunk)
            if args.rate_mbit:
                # Pace the stream: never ahead of rate_mbit since the start.
                ahead = sent * 8 / (args.rate_mbit * 1e6) - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        conn.shutdown(socket.SHUT_WR)
        answer = _read_exactly(conn, DIGEST_ANSWER.size)
    elapsed = time.monotonic() - started
    report: dict[str, object] = {"mode": "tcp-send", "bytes": sent, "sha256": digest.hexdigest(),
                                 "elapsed_s": round(elapsed, 3)}
    if len(answer) == DIGEST_ANSWER.size:
        their_digest, their_count = DIGEST_ANSWER.unpack(answer)
        report["sink_bytes"] = their_count
        report["verified"] = their_digest == digest.digest() and their_count == sent
    else:
        report["verified"] = False
    return report


# -- a held connection: what the LAN socket sees when the tunnel dies --------------------


def tcp_echo(args: argparse.Namespace) -> dict[str, object]:
    stop = _Stop()
    connections = 0

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(CHUNK):
                    conn.sendall(data)
            except OSError:
                pass  # the peer reset or the tunnel died: nothing to echo any more

    with _bound_socket(socket.SOCK_STREAM, args.bind, args.port) as server:
        server.listen(16)
        server.settimeout(0.2)
        _ready()
        while not stop.requested:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            connections += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    return {"mode": "tcp-echo", "connections": connections}


def _wait_in_recv(conn: socket.socket, timeout_s: float, poke_every_s: float) -> bytes | None:
    """recv until data, EOF or an error; None at the timeout.

    With poke_every_s, send one octet that often and read the echoes back: only EOF, an error or the
    timeout ends the wait.
    """
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        conn.settimeout(min(left, poke_every_s) if poke_every_s > 0 else left)
        try:
            data = conn.recv(CHUNK)
        except TimeoutError:
            if poke_every_s > 0:
                conn.send(b".")
            continue
        if not data or poke_every_s <= 0:
            return data
    return None


def tcp_hold(args: argparse.Namespace) -> dict[str, object]:
    greeting = b"p3hw hold\n"
    with socket.create_connection((args.to, args.port), timeout=args.connect_timeout_s) as conn:
        conn.sendall(greeting)
        if _read_exactly(conn, len(greeting)) != greeting:
            return {"mode": "tcp-hold", "outcome": "no echo"}
        print("CONNECTED", flush=True)
        started = time.monotonic()
        try:
            data = _wait_in_recv(conn, args.timeout_s, args.poke_every_s)
            outcome = "timeout" if data is None else "data" if data else "eof"
            err = None
        except ConnectionResetError as exc:
            outcome, err = "reset", exc.errno
        except TimeoutError:
            outcome, err = "timeout", None
        except OSError as exc:  # EHOSTUNREACH after an ICMP error, ...
            outcome, err = "error", exc.errno
        waited = time.monotonic() - started
    return {"mode": "tcp-hold", "outcome": outcome, "errno": errno.errorcode.get(err, err) if err else None,
            "waited_s": round(waited, 3)}


# -- command line --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m p3hw.simulators.traffic", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)

    p = sub.add_parser("udp-recv", help="count a sequence-numbered UDP stream")
    p.add_argument("--bind", default="::")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--marker", default="", help="count datagrams that carry this text")
    p.add_argument("--idle-exit-s", type=float, default=0.0, help="exit this long after the last datagram")
    p.add_argument("--max-s", type=float, default=0.0, help="exit after this long in any case")
    p.set_defaults(run=udp_recv)

    p = sub.add_parser("udp-send", help="send a sequence-numbered UDP stream at a fixed rate")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=1000.0, help="datagrams per second")
    p.add_argument("--count", type=int)
    p.add_argument("--duration-s", type=float)
    p.add_argument("--size", type=int, default=200, help="datagram payload bytes")
    p.add_argument("--marker", default="", help="text put in every datagram after the header")
    p.set_defaults(run=udp_send)

    p = sub.add_parser("tcp-sink", help="receive one TCP transfer and answer its SHA-256")
    p.add_argument("--bind", default="::")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--accept-timeout-s", type=float, default=60.0)
    p.add_argument("--idle-timeout-s", type=float, default=60.0)
    p.set_defaults(run=tcp_sink)

    p = sub.add_parser("tcp-send", help="send a seeded byte stream and check the sink's SHA-256")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate-mbit", type=float, default=0.0, help="pace the stream (0: as fast as it goes)")
    p.add_argument("--timeout-s", type=float, default=60.0)
    p.set_defaults(run=tcp_send)

    p = sub.add_parser("tcp-echo", help="echo server (until SIGTERM)")
    p.add_argument("--bind", default="::")
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(run=tcp_echo)

    p = sub.add_parser("tcp-hold", help="connect, echo once, then wait in recv and report how it ended")
    p.add_argument("--to", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connect-timeout-s", type=float, default=10.0)
    p.add_argument("--timeout-s", type=float, default=60.0)
    p.add_argument("--poke-every-s", type=float, default=0.0,
                   help="send one octet this often while waiting (0: stay silent)")
    p.set_defaults(run=tcp_hold)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = args.run(args)
    except P3Error as exc:
        print(exc.message(), file=sys.stderr)
        return 2 if exc.reason.name == "USAGE" else 1
    except TimeoutError as exc:
        print(P3Error("OS_ERROR", f"traffic {args.mode}: timed out ({exc})").message(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(P3Error("OS_ERROR", f"traffic {args.mode}: {exc}").message(), file=sys.stderr)
        return 1
    _emit(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
