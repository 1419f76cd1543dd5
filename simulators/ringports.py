"""Ring-backed DPDK ports in this process, for tests and the forwarding benchmark.

``build/libp3dpdk_test.so`` (backends/dpdk/test/ringports.c, a test library
apart from the product's ``libp3dpdk.so``, whose EAL it shares) makes two
ethdev ports out of DPDK rings, a LAN port and a WAN port. A gateway's worker polls
them like any DPDK port (``DpdkPorts(lan_port=ports.lan_name, ...)``);
the test side puts Ethernet frames on their receive rings and takes what the
worker sent from their transmit rings. The EAL comes up once per process
(with the first arguments given), so one process has one pair.

The cdef below binds only the test library's own entry points; the product
API is reached through ``p3hw.dataplane`` alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from p3hw.dataplane import DPDK_LIBRARY
from p3hw.reasons import P3Error

#: The test library (``make -C native dpdk``), beside the product's DPDK library it links against.
DPDK_TEST_LIBRARY = os.path.join(os.path.dirname(DPDK_LIBRARY), "libp3dpdk_test.so")

EAL_ARGS = "--no-huge -m 512 --no-shconf --no-pci --no-telemetry --log-level=*:warning"
TEMPLATE_BYTES = 2048
RINGS = {"lan_rx": 0, "lan_tx": 1, "wan_rx": 2, "wan_tx": 3}

#: The test library's header: its declarations, between the markers, are this binding's cdef.
HEADER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backends", "dpdk", "test",
                      "ringports.h")


def _cdef() -> str:
    text = Path(HEADER).read_text()
    return text[text.index("/* RINGPORTS_CDEF_BEGIN */") + len("/* RINGPORTS_CDEF_BEGIN */"):
                text.index("/* RINGPORTS_CDEF_END */")]

_opened: RingPorts | None = None


class RingPorts:
    """The process's pair of ring ports (``RingPorts.open()``)."""

    def __init__(self, ffi: Any, lib: Any, queues: int) -> None:
        self._ffi, self._lib, self.queues = ffi, lib, queues
        names = [ffi.new("char[64]") for _ in range(2)]
        macs = [ffi.new("uint8_t[6]") for _ in range(2)]
        for wan in (0, 1):
            if lib.p3_dpdk_bench_port(wan, names[wan], macs[wan]):
                raise P3Error("DPDK_PORT", "the ring ports have no name or MAC")
        self.lan_name, self.wan_name = (ffi.string(n).decode() for n in names)
        self.lan_mac, self.wan_mac = (bytes(m) for m in macs)
        self._buf = ffi.new("uint8_t[]", TEMPLATE_BYTES)

    @classmethod
    def open(cls, eal_args: str = EAL_ARGS, library: str = DPDK_TEST_LIBRARY, queues: int = 1) -> RingPorts:
        """The process's ring ports, ``queues`` queues each way on each (one per worker)."""
        global _opened
        if _opened is None:
            import cffi

            ffi = cffi.FFI()
            ffi.cdef(_cdef())
            try:
                lib = ffi.dlopen(library)
            except OSError as exc:
                raise P3Error("DPDK_UNAVAILABLE", f"{library}: {exc} (make -C native dpdk)") from exc
            if lib.p3_dpdk_bench_ports(eal_args.encode(), queues) != 0:
                raise P3Error("DPDK_UNAVAILABLE", "the EAL or the ring ports did not come up (see stderr)")
            _opened = cls(ffi, lib, queues)
        elif _opened.queues != queues:
            raise P3Error("DPDK_PORT", f"this process's ring ports have {_opened.queues} queue(s), not {queues}")
        return _opened

    def put(self, ring: str, frame: bytes, queue: int = 0) -> None:
        """One frame onto ``lan_rx`` or ``wan_rx`` (of ``queue``): the port receives it."""
        if self._lib.p3_dpdk_ring_put(RINGS[ring], queue, frame, len(frame)) != 0:
            raise P3Error("DPDK_PORT", f"{ring} is full or the frame is too long ({len(frame)} octets)")

    def get(self, ring: str, queue: int = 0) -> bytes | None:
        """The next frame the port sent on ``lan_tx`` or ``wan_tx`` (of ``queue``), None when there is none."""
        n = self._lib.p3_dpdk_ring_get(RINGS[ring], queue, self._buf, TEMPLATE_BYTES)
        if n < 0:
            raise P3Error("DPDK_PORT", f"a frame on {ring} did not fit {TEMPLATE_BYTES} octets")
        return bytes(self._ffi.buffer(self._buf, n)) if n else None

    def drain(self, ring: str) -> list[bytes]:
        """Every frame waiting on ``ring``, all queues."""
        frames = []
        for queue in range(self.queues):
            while (frame := self.get(ring, queue)) is not None:
                frames.append(frame)
        return frames

    def drive(self, name: str) -> DrivenPort:
        """Start port ``name`` (one the EAL arguments brought up) for the test side to send and receive on."""
        mac = self._ffi.new("uint8_t[6]")
        port = self._lib.p3_dpdk_test_port_up(name.encode(), mac)
        if port < 0:
            raise P3Error("DPDK_PORT", f"port {name} cannot be started for the test side")
        return DrivenPort(self, port, bytes(mac))

    def _templates(self, frames: list[bytes]) -> tuple[Any, Any]:
        ffi = self._ffi
        flat = ffi.new("uint8_t[]", TEMPLATE_BYTES * len(frames))
        lens = ffi.new("uint32_t[]", len(frames))
        for i, frame in enumerate(frames):
            ffi.memmove(flat + i * TEMPLATE_BYTES, frame, len(frame))
            lens[i] = len(frame)
        return flat, lens

    def start_traffic(self, frames: list[bytes], wan_frame: bytes = b"", cpu: int = -1) -> None:
        """A thread keeps the LAN receive ring full of ``frames`` (cycled) and counts the WAN's output."""
        flat, lens = self._templates(frames)
        wan = wan_frame or self._ffi.NULL
        if self._lib.p3_dpdk_bench_start(flat, lens, len(frames), wan, len(wan_frame), cpu) != 0:
            raise P3Error("DPDK_PORT", "the traffic thread did not start")

    def start_sealed_traffic(self, peer_side: Any, peer_id: int, inner: list[bytes], eth: bytes,
                             cpu: int = -1) -> None:
        """The other way: a thread seals fresh packets from ``inner`` with ``peer_side`` (a Dataplane of its
        own, the far peer, to ``peer_id``) onto the WAN receive ring behind ``eth``, and counts the LAN's output."""
        from p3hw.dataplane import native

        ext_ffi, ext_lib = native()
        seal_fn = int(ext_ffi.cast("uintptr_t", ext_ffi.addressof(ext_lib, "p3dp_seal_burst")))
        ctx = int(ext_ffi.cast("uintptr_t", peer_side.ctx))
        flat, lens = self._templates(inner)
        if self._lib.p3_dpdk_bench_start_sealed(self._ffi.cast("void *", seal_fn), self._ffi.cast("void *", ctx),
                                                peer_id, flat, lens, len(inner), eth, cpu) != 0:
            raise P3Error("DPDK_PORT", "the sealing traffic thread did not start")

    def ring_full(self) -> int:
        """How often the traffic thread found the receive ring too full for a burst since it started:
        non-zero means the worker, not the traffic source, set the pace."""
        return int(self._lib.p3_dpdk_bench_ring_full())

    def stop_traffic(self) -> tuple[int, int, int]:
        """Stop it: (frames fed to the LAN, frames taken from the WAN, their octets)."""
        out = [self._ffi.new("uint64_t *") for _ in range(3)]
        self._lib.p3_dpdk_bench_stop(*out)
        return int(out[0][0]), int(out[1][0]), int(out[2][0])


class DrivenPort:
    """A DPDK port the test side drives (the far end of a net_memif pair, say)."""

    def __init__(self, ports: RingPorts, port: int, mac: bytes) -> None:
        self._ports, self._port, self.mac = ports, port, mac

    def send(self, frame: bytes) -> None:
        if self._ports._lib.p3_dpdk_test_send(self._port, frame, len(frame)) != 0:
            raise P3Error("DPDK_PORT", f"port {self._port} did not take a frame of {len(frame)} octets")

    def recv(self) -> bytes | None:
        n = self._ports._lib.p3_dpdk_test_recv(self._port, self._ports._buf, TEMPLATE_BYTES)
        if n < 0:
            raise P3Error("DPDK_PORT", f"a frame on port {self._port} did not fit {TEMPLATE_BYTES} octets")
        return bytes(self._ports._ffi.buffer(self._ports._buf, n)) if n else None
