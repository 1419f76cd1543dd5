"""Impaired WAN link: a user-space relay between two Ethernet interfaces.

These machines have no ``sch_netem``, so the WAN is impaired in user space:
the relay sits in the testbed's ``wan`` namespace between two veth ends,
reads every frame that arrives on one (AF_PACKET) and writes it out of the
other, in both directions, after applying

* loss           -- ``loss_pct`` of frames are dropped (Bernoulli);
* rate cap       -- optional ``rate_mbit`` serialisation with a
                    ``queue_ms`` deep tail-drop queue;
* corruption     -- ``corrupt_pct`` of frames get one random bit flipped in
                    their transport payload (see ``_flip_payload_bit``);
* duplication    -- ``duplicate_pct`` of frames are sent twice;
* delay + jitter -- each frame waits ``delay_ms`` +/- uniform ``jitter_ms``
                    (jitter alone already reorders, as on a real path);
* reordering     -- ``reorder_pct`` of frames skip the delay and overtake
                    the queue (netem's semantics); with no delay configured
                    they are held ``reorder_hold_ms`` instead so that later
                    frames overtake them.

Only IP traffic is impaired: ARP and neighbour discovery cross untouched
(``is_link_control``). One seeded ``random.Random`` drives every decision, so a run with the same
seed and the same frame sequence makes the same decisions.

Counters are per direction and written as JSON to ``--stats FILE``: once
at start (snapshot 0, which also tells a waiting test that the relay is
ready), on every SIGUSR1, and on exit (SIGTERM/SIGINT). Invariant, per
direction and in total::

    received + duplicated == forwarded + dropped + dropped_queue + send_errors + in_flight

Run it inside a namespace::

    python -m p3hw.simulators.wan --a IF_A --b IF_B --loss 5 --delay-ms 20 \\
        --jitter-ms 10 --reorder 5 --seed 1 --stats FILE

It is meant for impairment tests, not throughput: a heap of scheduled
sends and one ``selectors`` loop over the two sockets.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import heapq
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p3hw.reasons import P3Error
from p3hw.wire.checksum import checksum_update

ETH_P_ALL = 0x0003
ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100

# <linux/if_packet.h>: socket options and the membership request layout.
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4

# <linux/virtio_net.h> struct virtio_net_hdr: flags, gso_type, hdr_len,
# gso_size, csum_start, csum_offset. With PACKET_VNET_HDR every frame read
# carries it and every frame written must start with it; passing it through
# unchanged keeps checksum offload (NEEDS_CSUM) and GSO super-frames valid
# on the far side instead of arriving with a half-computed checksum.
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58
# MLD query/report/done (130-132), RS, RA, NS, NA, redirect (133-137), MLDv2 report (143).
ICMPV6_LINK_CONTROL_TYPES = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})

RECV_BUFFER_BYTES = 262144  # a GSO super-frame is at most 64 KiB (no BIG TCP here)
RECV_BURST = 256  # frames read from one socket before the loop looks at timers
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class WanParams:
    """Impairments applied to each direction of one WAN link."""

    loss_pct: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder_pct: float = 0.0
    duplicate_pct: float = 0.0
    corrupt_pct: float = 0.0
    rate_mbit: float | None = None
    queue_ms: float = 100.0
    reorder_hold_ms: float = 5.0
    seed: int = 1

    def validate(self) -> WanParams:
        for name in ("loss_pct", "reorder_pct", "duplicate_pct", "corrupt_pct"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise P3Error("USAGE", f"WAN {name} = {value}: must be a percentage in 0..100")
        for name in ("delay_ms", "jitter_ms", "queue_ms", "reorder_hold_ms"):
            value = getattr(self, name)
            if not 0.0 <= value <= 60_000.0:
                raise P3Error("USAGE", f"WAN {name} = {value}: must be in 0..60000 ms")
        if self.rate_mbit is not None and not 0.0 < self.rate_mbit <= 100_000.0:
            raise P3Error("USAGE", f"WAN rate_mbit = {self.rate_mbit}: must be in (0, 100000]")
        return self

    def to_argv(self) -> list[str]:
        """The command-line options that make ``main`` use these parameters."""
        argv = [
            "--loss", repr(self.loss_pct),
            "--delay-ms", repr(self.delay_ms),
            "--jitter-ms", repr(self.jitter_ms),
            "--reorder", repr(self.reorder_pct),
            "--duplicate", repr(self.duplicate_pct),
            "--corrupt", repr(self.corrupt_pct),
            "--queue-ms", repr(self.queue_ms),
            "--reorder-hold-ms", repr(self.reorder_hold_ms),
            "--seed", str(self.seed),
        ]  # fmt: skip
        if self.rate_mbit is not None:
            argv += ["--rate-mbit", repr(self.rate_mbit)]
        return argv


@dataclass
class WanStats:
    """Counters of one direction (or the sum of both)."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    dropped_queue: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    send_errors: int = 0
    in_flight: int = 0
    bytes_received: int = 0
    bytes_forwarded: int = 0
    link_control: int = 0  # ARP / neighbour discovery frames passed unimpaired

    def __add__(self, other: WanStats) -> WanStats:
        return WanStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(WanStats)}
        )

    def balanced(self) -> bool:
        """Every frame read or copied is accounted for exactly once."""
        return self.received + self.duplicated == (
            self.forwarded + self.dropped + self.dropped_queue + self.send_errors + self.in_flight
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WanStats:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})


@dataclass
class WanReport:
    """One snapshot of a relay's counters, as written to its stats file."""

    snapshot: int
    final: bool
    pid: int
    a_to_b: WanStats
    b_to_a: WanStats
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> WanStats:
        return self.a_to_b + self.b_to_a

    def to_json(self) -> str:
        return json.dumps(
            {
                "snapshot": self.snapshot,
                "final": self.final,
                "pid": self.pid,
                "params": self.params,
                "a_to_b": dataclasses.asdict(self.a_to_b),
                "b_to_a": dataclasses.asdict(self.b_to_a),
                "total": dataclasses.asdict(self.total),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> WanReport:
        data = json.loads(text)
        return cls(
            snapshot=int(data["snapshot"]),
            final=bool(data["final"]),
            pid=int(data["pid"]),
            a_to_b=WanStats.from_dict(data["a_to_b"]),
            b_to_a=WanStats.from_dict(data["b_to_a"]),
            params=dict(data.get("params", {})),
        )

    @classmethod
    def read(cls, path: Path) -> WanReport | None:
        """The last snapshot in ``path``, or None before the relay wrote one."""
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            return None


def is_link_control(frame: bytes | bytearray, base: int) -> bool:
    """True for frames that are not IP traffic of a routed path: ARP, other
    non-IP ethertypes, and ICMPv6 neighbour discovery / MLD (RFC 4861, 3810).

    The bridge of the testbed stands in for a routed WAN between the
    gateways, on which there is no ARP or neighbour discovery between them;
    impairing these would only make address resolution fail (a corrupted
    neighbour advertisement) and stall the test, not exercise the VPN.
    """
    if len(frame) < base + ETH_HLEN:
        return True
    (ethertype,) = struct.unpack_from("!H", frame, base + 12)
    l3 = base + ETH_HLEN
    if ethertype == ETH_P_8021Q and len(frame) >= l3 + 4:
        (ethertype,) = struct.unpack_from("!H", frame, l3 + 2)
        l3 += 4
    if ethertype == ETH_P_IP:
        return False
    if ethertype != ETH_P_IPV6:
        return True
    if len(frame) < l3 + 41:
        return False
    next_header, icmp_at = frame[l3 + 6], l3 + 40
    if next_header == 0 and len(frame) >= l3 + 42:  # hop-by-hop options (MLD carries router alert)
        next_header, icmp_at = frame[l3 + 40], l3 + 40 + (frame[l3 + 41] + 1) * 8
    if icmp_at >= len(frame):
        return False
    return next_header == IPPROTO_ICMPV6 and frame[icmp_at] in ICMPV6_LINK_CONTROL_TYPES


def _ip_payload(frame: bytes | bytearray, base: int) -> tuple[int, int, int, int | None] | None:
    """(L4 start, payload start, end, checksum offset or None) of an IP frame, or None.

    ``base`` is where the Ethernet header starts; ``end`` is where the IP
    packet ends (Ethernet padding excluded). UDP, TCP and ICMP payloads
    start after their header and have a checksum offset; any other protocol
    (ESP, for one) is all payload with no checksum. IPv6 extension headers
    and IPv4 fragments other than the first are not followed.
    """
    if len(frame) < base + ETH_HLEN:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, base + 12)
    l3 = base + ETH_HLEN
    if ethertype == ETH_P_8021Q and len(frame) >= l3 + 4:
        (ethertype,) = struct.unpack_from("!H", frame, l3 + 2)
        l3 += 4
    if ethertype == ETH_P_IP and len(frame) >= l3 + 20:
        ihl = (frame[l3] & 0x0F) * 4
        (total_len, frag) = struct.unpack_from("!HxxH", frame, l3 + 2)
        proto, l4, end = frame[l3 + 9], l3 + ihl, min(len(frame), l3 + total_len)
        if frag & 0x1FFF:
            return (l4, l4, end, None) if end > l4 else None
    elif ethertype == ETH_P_IPV6 and len(frame) >= l3 + 40:
        (payload_len,) = struct.unpack_from("!H", frame, l3 + 4)
        proto, l4, end = frame[l3 + 6], l3 + 40, min(len(frame), l3 + 40 + payload_len)
    else:
        return None
    if proto == IPPROTO_UDP and end > l4 + 8:
        return l4, l4 + 8, end, l4 + 6
    if proto == IPPROTO_TCP and end >= l4 + 20:
        payload = l4 + (frame[l4 + 12] >> 4) * 4
        return (l4, payload, end, l4 + 16) if end > payload else None
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and end > l4 + 8:
        return l4, l4 + 8, end, l4 + 2
    if proto not in (IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP, IPPROTO_ICMPV6) and end > l4:
        return l4, l4, end, None
    return None


def _flip_payload_bit(frame: bytearray, rng: random.Random) -> None:
    """Flip one random bit of the IP packet's payload and keep its checksum right.

    The point of corruption here is to hand the receiving application damage
    that the link's CRC missed, which is what an end-to-end integrity check
    (P3's authentication tag, over UDP or raw ESP) exists for; so a complete
    UDP/TCP/ICMP checksum is patched by the RFC 1624 incremental update
    (HC' = ~(~HC + ~m + m')). A frame whose checksum is still to be computed
    (NEEDS_CSUM) needs no patch; ESP has no checksum. Anything that is not
    an IP packet with a payload gets a bit flipped after the Ethernet header.
    """
    hdr_flags = frame[0]
    offsets = _ip_payload(frame, VNET_HDR_LEN)
    if offsets is None:
        start = VNET_HDR_LEN + ETH_HLEN
        if len(frame) <= start:
            start = VNET_HDR_LEN
        bit = rng.randrange((len(frame) - start) * 8)
        frame[start + bit // 8] ^= 1 << (bit % 8)
        return
    l4, payload, end, csum_at = offsets
    bit = rng.randrange((end - payload) * 8)
    at = payload + bit // 8
    word_at = l4 + ((at - l4) & ~1)  # the 16-bit word holding the byte, aligned to the L4 start
    old_word = (frame[word_at] << 8) | (frame[word_at + 1] if word_at + 1 < end else 0)
    frame[at] ^= 1 << (bit % 8)
    new_word = (frame[word_at] << 8) | (frame[word_at + 1] if word_at + 1 < end else 0)
    if csum_at is None:
        return
    if hdr_flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        return
    (old_csum,) = struct.unpack_from("!H", frame, csum_at)
    is_udp = csum_at == l4 + 6
    if is_udp and old_csum == 0:
        return  # IPv4 UDP without checksum (RFC 768)
    new_csum = checksum_update(old_csum, old_word, new_word)
    if is_udp and new_csum == 0:
        new_csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    struct.pack_into("!H", frame, csum_at, new_csum)


def open_link_socket(ifname: str) -> socket.socket:
    """A non-blocking AF_PACKET socket bound to ``ifname`` that sees all its frames."""
    try:
        # Protocol 0 receives nothing until bind(): no frame from another
        # interface sneaks in between socket() and bind().
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as exc:
        raise P3Error("NEED_ROOT", f"cannot open a packet socket: {exc.strerror}", "run the WAN simulator as root") from exc
    try:
        sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        try:
            # Linux >= 4.20: our own transmissions on this interface are not
            # looped back to us; the sll_pkttype check below covers older kernels.
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        sock.bind((ifname, ETH_P_ALL))
        ifindex = socket.if_nametoindex(ifname)
        # struct packet_mreq { int mr_ifindex; u16 mr_type; u16 mr_alen; u8 mr_address[8]; }
        mreq = struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            raise P3Error("OS_ERROR", f"interface {ifname!r} does not exist in this network namespace") from exc
        raise P3Error("OS_ERROR", f"cannot attach to interface {ifname!r}: {exc}") from exc
    return sock


class LinkModel:
    """The impairment decisions for both directions of a link, without I/O.

    Sans-I/O, like the protocol machines: feed it frames and the time
    (``accept``), take the frames that are due (``pop_due``) and tell it how
    sending went (``sent``). Tests drive it deterministically; ``Relay``
    wires it to two packet sockets.
    """

    def __init__(self, params: WanParams) -> None:
        self.params = params.validate()
        self.rng = random.Random(params.seed)
        self.stats = [WanStats(), WanStats()]  # index = direction: 0 is a -> b, 1 is b -> a
        self.link_free_at = [0.0, 0.0]
        # (due time, sequence, direction, frame); the sequence keeps equal
        # due times in arrival order and makes entries comparable.
        self.schedule: list[tuple[float, int, int, bytes]] = []
        self.sequence = 0

    def _chance(self, pct: float) -> bool:
        return pct > 0.0 and self.rng.random() * 100.0 < pct

    def accept(self, direction: int, frame: bytes, now: float) -> None:
        """Decide the fate of one received frame (virtio-net header + Ethernet frame)."""
        p = self.params
        stats = self.stats[direction]
        stats.received += 1
        stats.bytes_received += len(frame) - VNET_HDR_LEN
        if is_link_control(frame, VNET_HDR_LEN):
            # ARP and neighbour discovery belong to the emulation's bridge, not
            # to the routed path it stands for: they cross unimpaired.
            stats.link_control += 1
            self.sequence += 1
            heapq.heappush(self.schedule, (now, self.sequence, direction, frame))
            return
        if self._chance(p.loss_pct):
            stats.dropped += 1
            return
        leaves_queue_at = now
        if p.rate_mbit is not None:
            start = max(now, self.link_free_at[direction])
            if start - now > p.queue_ms / 1000.0:
                stats.dropped_queue += 1
                return
            self.link_free_at[direction] = start + (len(frame) - VNET_HDR_LEN) * 8 / (p.rate_mbit * 1e6)
            leaves_queue_at = self.link_free_at[direction]
        if self._chance(p.corrupt_pct):
            damaged = bytearray(frame)
            _flip_payload_bit(damaged, self.rng)
            frame = bytes(damaged)
            stats.corrupted += 1
        copies = 1
        if self._chance(p.duplicate_pct):
            copies = 2
            stats.duplicated += 1
        if self._chance(p.reorder_pct):
            stats.reordered += 1
            # netem: a reordered frame skips the delay line and overtakes it;
            # with no delay line it waits instead, so that later frames pass.
            delay_s = 0.0 if p.delay_ms > 0 else p.reorder_hold_ms / 1000.0
        else:
            delay_ms = p.delay_ms
            if p.jitter_ms > 0:
                delay_ms += self.rng.uniform(-p.jitter_ms, p.jitter_ms)
            delay_s = max(0.0, delay_ms) / 1000.0
        due = leaves_queue_at + delay_s
        for _ in range(copies):
            self.sequence += 1
            heapq.heappush(self.schedule, (due, self.sequence, direction, frame))

    def next_due(self) -> float | None:
        return self.schedule[0][0] if self.schedule else None

    def pop_due(self, now: float) -> Iterator[tuple[int, bytes]]:
        """(direction, frame) of every frame due by ``now``, in due order."""
        while self.schedule and self.schedule[0][0] <= now:
            _, _, direction, frame = heapq.heappop(self.schedule)
            yield direction, frame

    def sent(self, direction: int, frame: bytes, ok: bool) -> None:
        stats = self.stats[direction]
        if ok:
            stats.forwarded += 1
            stats.bytes_forwarded += len(frame) - VNET_HDR_LEN
        else:
            stats.send_errors += 1

    def counters(self) -> tuple[WanStats, WanStats]:
        """Both directions' counters, with what is still scheduled as ``in_flight``."""
        in_flight = [0, 0]
        for _, _, direction, _ in self.schedule:
            in_flight[direction] += 1
        a_to_b, b_to_a = (dataclasses.replace(s, in_flight=n) for s, n in zip(self.stats, in_flight, strict=True))
        return a_to_b, b_to_a


class Relay:
    """Both directions of one impaired link between two interfaces."""

    def __init__(self, if_a: str, if_b: str, params: WanParams, stats_path: Path | None = None) -> None:
        self.model = LinkModel(params)
        self.params = self.model.params
        self.if_a = if_a
        self.if_b = if_b
        self.stats_path = stats_path
        self.sockets = [open_link_socket(if_a)]
        try:
            self.sockets.append(open_link_socket(if_b))
        except P3Error:
            self.sockets[0].close()
            raise
        self.snapshot = 0
        self.buffer = bytearray(RECV_BUFFER_BYTES)

    def report(self, final: bool = False) -> WanReport:
        a_to_b, b_to_a = self.model.counters()
        return WanReport(
            snapshot=self.snapshot,
            final=final,
            pid=os.getpid(),
            a_to_b=a_to_b,
            b_to_a=b_to_a,
            params=dataclasses.asdict(self.params) | {"a": self.if_a, "b": self.if_b},
        )

    def write_stats(self, final: bool = False) -> None:
        text = self.report(final).to_json()
        self.snapshot += 1
        if self.stats_path is None:
            if final:
                print(text, flush=True)
            return
        tmp = self.stats_path.with_name(self.stats_path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.stats_path)  # readers never see half a file

    def send_due(self, now: float) -> None:
        for direction, frame in self.model.pop_due(now):
            try:
                self.sockets[1 - direction].send(frame)
            except OSError:
                # ENOBUFS, EMSGSIZE, a link gone down: the frame is lost, as on a wire.
                self.model.sent(direction, frame, ok=False)
            else:
                self.model.sent(direction, frame, ok=True)

    def receive_burst(self, direction: int, now: float) -> None:
        sock = self.sockets[direction]
        for _ in range(RECV_BURST):
            try:
                size, address = sock.recvfrom_into(self.buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ENETDOWN:
                    return
                raise
            if address[2] == PACKET_OUTGOING or size <= VNET_HDR_LEN:
                continue  # our own transmission looped back: relaying it would loop forever
            self.model.accept(direction, bytes(self.buffer[:size]), now)

    # -- the loop -----------------------------------------------------------

    def run(self, stop_after_s: float | None = None, parent_pid: int | None = None) -> WanReport:
        """Relay until SIGTERM/SIGINT (or ``stop_after_s``); returns the final counters.

        With ``parent_pid`` the relay also stops when that process is no
        longer its parent: a test killed with SIGKILL leaves no relay behind.
        """
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        handled = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
        # Signals arrive as bytes on wake_r and are handled between frames,
        # so a snapshot never catches a frame half-counted.
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        selector = selectors.DefaultSelector()
        selector.register(self.sockets[0], selectors.EVENT_READ, 0)
        selector.register(self.sockets[1], selectors.EVENT_READ, 1)
        selector.register(wake_r, selectors.EVENT_READ, -1)
        deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
        running = True
        try:
            self.write_stats()
            while running:
                now = time.monotonic()
                timeout = None
                next_due = self.model.next_due()
                if next_due is not None:
                    timeout = max(0.0, next_due - now)
                if deadline is not None:
                    timeout = max(0.0, deadline - now) if timeout is None else min(timeout, max(0.0, deadline - now))
                if parent_pid is not None:
                    timeout = PARENT_CHECK_S if timeout is None else min(timeout, PARENT_CHECK_S)
                for key, _ in selector.select(timeout):
                    if key.data == -1:
                        for signum in wake_r.recv(64):
                            if signum == signal.SIGUSR1:
                                self.write_stats()
                            elif signum in (signal.SIGTERM, signal.SIGINT):
                                running = False
                    else:
                        self.receive_burst(key.data, time.monotonic())
                self.send_due(time.monotonic())
                if deadline is not None and time.monotonic() >= deadline:
                    running = False
                if parent_pid is not None and os.getppid() != parent_pid:
                    running = False
            report = self.report(final=True)
            self.write_stats(final=True)
            return report
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            selector.close()
            wake_r.close()
            wake_w.close()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's exit(2) would carry no reason code
        raise P3Error("USAGE", f"wan: {message}", "see python -m p3hw.simulators.wan --help")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m p3hw.simulators.wan",
        description="Relay frames between two interfaces with loss, delay, jitter, reordering, duplication and corruption.",
    )
    parser.add_argument("--a", required=True, metavar="IF_A", help="first interface")
    parser.add_argument("--b", required=True, metavar="IF_B", help="second interface")
    parser.add_argument("--loss", type=float, default=0.0, metavar="PCT", help="frames dropped, percent")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- variation of the delay")
    parser.add_argument("--reorder", type=float, default=0.0, metavar="PCT", help="frames that overtake the delay line")
    parser.add_argument("--reorder-hold-ms", type=float, default=5.0, help="hold of a reordered frame when there is no delay")
    parser.add_argument("--duplicate", type=float, default=0.0, metavar="PCT", help="frames sent twice")
    parser.add_argument("--corrupt", type=float, default=0.0, metavar="PCT", help="frames with one payload bit flipped")
    parser.add_argument("--rate-mbit", type=float, default=None, help="rate cap per direction")
    parser.add_argument("--queue-ms", type=float, default=100.0, help="queue depth behind the rate cap")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random decisions")
    parser.add_argument("--stats", type=Path, default=None, metavar="FILE", help="JSON counters (start, SIGUSR1, exit)")
    parser.add_argument("--duration-s", type=float, default=None, help="stop after this long (default: until SIGTERM)")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process is no longer the parent")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        params = WanParams(
            loss_pct=args.loss,
            delay_ms=args.delay_ms,
            jitter_ms=args.jitter_ms,
            reorder_pct=args.reorder,
            duplicate_pct=args.duplicate,
            corrupt_pct=args.corrupt,
            rate_mbit=args.rate_mbit,
            queue_ms=args.queue_ms,
            reorder_hold_ms=args.reorder_hold_ms,
            seed=args.seed,
        ).validate()
        if args.a == args.b:
            raise P3Error("USAGE", f"wan: --a and --b are the same interface ({args.a})")
        relay = Relay(args.a, args.b, params, args.stats)
        try:
            relay.run(args.duration_s, args.parent_pid)
        finally:
            relay.close()
    except P3Error as exc:
        print(exc.message(), file=sys.stderr)
        return 2 if exc.reason.name == "USAGE" else 1
    except OSError as exc:
        print(P3Error("OS_ERROR", f"wan: {exc}").message(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
