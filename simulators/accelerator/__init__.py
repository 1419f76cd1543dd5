"""The accelerator simulator: a software crypto device for the lookaside engine path.

The device is C, compiled into the dataplane extension: the lookaside
driver (native/src/lookaside.c) — descriptor rings in a shared-memory region
served by the device's own thread, with a per-op latency, a throughput cap
and injected faults (error completions, timeouts, corrupted output, the
device gone) — with OpenSSL as the simulated device's crypto
(simulators/accelerator/accel.c). This package is the Python side tests and
the benchmark use:

* :func:`site_pair` — two dataplane contexts (A seals to B) on any engine,
  with the same keys, so outputs can be compared byte for byte;
* :class:`Stream` — a seq-numbered stream of seal/open bursts A → B that
  checks every packet arrives once, in order and intact (zero loss is a
  property of the stream, not an assumption);
* :func:`arm` — inject a fault into one side's device.

See docs/engines.md for the failover rules.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from p3hw.crypto.keys import SaKeys, material_length
from p3hw.dataplane import Dataplane, EngineParams, EngineStatus, PeerConfig

FAULTS = ("error", "timeout", "corrupt", "gone")
A_ADDR, B_ADDR = "192.0.2.1", "198.51.100.2"
A_PEER_AT_B, B_PEER_AT_A = 1, 2
STREAM_MAGIC = b"P3ST"
#: Inner sizes a stream cycles through: small, mid and near-MTU packets (IMIX-like).
DEFAULT_SIZES = (64, 576, 1400, 64, 200, 64, 1000)


def keys(cipher: str = "aes-128-gcm", p3_id: int = 0x5A11, seed: int = 7) -> SaKeys:
    """Deterministic SA keys (the same for every engine under test)."""
    material = bytes((seed * 31 + i * 17) & 0xFF for i in range(material_length(cipher)))
    return SaKeys.from_material(p3_id, cipher, material)


def site_pair(engine: str = "accel-sim", params: EngineParams | None = None, fallback: str = "aesni",
              cipher: str = "aes-128-gcm", sa: SaKeys | None = None, hp_key: bytes = bytes(range(16)),
              params_b: EngineParams | None = None) -> tuple[Dataplane, Dataplane]:
    """Two contexts on *engine*: A (192.0.2.1) seals to B (198.51.100.2), over UDP.
    *params_b* (default: *params*) starts B's engine."""
    sa = sa or keys(cipher)
    a, b = Dataplane(4, 8), Dataplane(4, 8)
    for dp, p in ((a, params), (b, params_b or params)):
        if engine != "aesni":
            dp.set_engine(engine, p, fallback)
    a.add_peer(PeerConfig(B_PEER_AT_A, A_ADDR, B_ADDR))
    b.add_peer(PeerConfig(A_PEER_AT_B, B_ADDR, A_ADDR))
    a.set_hp_keys(B_PEER_AT_A, hp_out=hp_key)
    b.set_hp_keys(A_PEER_AT_B, hp_in=hp_key)
    a.add_outbound_sa(B_PEER_AT_A, sa)
    b.add_inbound_sa(A_PEER_AT_B, sa)
    return a, b


def stream_packet(number: int, size: int) -> bytes:
    """An IPv4/UDP inner packet of *size* octets carrying stream number *number*."""
    size = max(size, 40)
    udp_len = size - 20
    header = bytes([0x45, 0, size >> 8, size & 0xFF, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 5, 10, 2, 0, 9])
    udp = struct.pack("!HHHH", 40000, 9, udp_len, 0)
    body = STREAM_MAGIC + struct.pack("!Q", number)
    fill = bytes((number * 7 + i) & 0xFF for i in range(udp_len - 8 - len(body)))
    return header + udp + body + fill


def stream_number(inner: bytes) -> int | None:
    """The stream number of a packet made by :func:`stream_packet`, or None."""
    if len(inner) < 40 or inner[28:32] != STREAM_MAGIC:
        return None
    return int(struct.unpack("!Q", inner[32:40])[0])


def arm(dp: Dataplane, fault: str, after_ops: int = 0, count: int = 1) -> None:
    """Inject *fault* into *dp*'s simulated device (``none`` brings a gone device back)."""
    dp.inject_fault(fault, after_ops, count)


@dataclass
class StreamReport:
    sent: int = 0
    delivered: int = 0
    lost: list[int] = field(default_factory=list)          # stream numbers that never arrived intact
    out_of_order: int = 0
    duplicates: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # non-OK seal/open statuses seen

    @property
    def clean(self) -> bool:
        return not self.lost and not self.out_of_order and not self.duplicates and not self.statuses


class Stream:
    """Seq-numbered bursts from A to B through seal and open; counts what arrives."""

    def __init__(self, a: Dataplane, b: Dataplane, sizes: tuple[int, ...] = DEFAULT_SIZES) -> None:
        self.a, self.b, self.sizes = a, b, sizes
        self.report = StreamReport()
        self._next = 1
        self._last_seen = 0
        self._seen: set[int] = set()

    def burst(self, n: int = 64) -> list[bytes]:
        """Seal n stream packets on A and open them on B; returns the wire packets."""
        items = [(B_PEER_AT_A, stream_packet(self._next + i, self.sizes[(self._next + i) % len(self.sizes)]))
                 for i in range(n)]
        expect = {self._next + i: items[i][1] for i in range(n)}
        self._next += n
        self.report.sent += n
        sealed = self.a.seal(items)
        wire = []
        for s in sealed:
            if s.status != "OK":
                self.report.statuses[f"seal:{s.status}"] = self.report.statuses.get(f"seal:{s.status}", 0) + 1
            else:
                wire.append(s.data)
        opened = self.b.open([(w, A_ADDR, 5653) for w in wire], with_ip=False)
        for o in opened:
            if o.status != "OK":
                self.report.statuses[f"open:{o.status}"] = self.report.statuses.get(f"open:{o.status}", 0) + 1
                continue
            number = stream_number(o.data)
            if number is None or expect.get(number) != o.data:
                continue                    # corrupted: shows up as lost below
            if number in self._seen:
                self.report.duplicates += 1
                continue
            if number < self._last_seen:
                self.report.out_of_order += 1
            self._seen.add(number)
            self._last_seen = max(self._last_seen, number)
            self.report.delivered += 1
        self.report.lost = [k for k in range(1, self._next) if k not in self._seen]
        return wire


def status_line(side: str, status: EngineStatus) -> str:
    """One line for logs and the benchmark notes."""
    return (f"{side}: {status.active} ({status.engine} → fallback {status.fallback}), failovers "
            f"{status.failovers}, recoveries {status.recoveries}, re-run ops {status.rerun_ops}, "
            f"last fault {status.last_fault}, reason {status.reason or '-'}")
