"""The Python face of the native dataplane.

The only module that imports the cffi extension ``p3hw._dataplane``
(STYLE.md: bindings in one place). C errors come back as negative reason
numbers and become ``P3Error`` here; per-packet results carry the reason
name instead of raising (a burst has many outcomes).

Two parts:

* :class:`Dataplane` — one native context: peers (sessions), SAs, buckets,
  ``seal``/``open`` bursts and counters (docs/dataplane.md).
* Bare primitives for test vectors and tools: :func:`aead_seal`,
  :func:`aead_open`, :func:`aes_ctr`, :func:`hmac_sha256` — OpenSSL EVP in C.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from p3hw import native_library
from p3hw.constants import DEFAULT_PORT
from p3hw.crypto.keys import CIPHERS, HP_KEY_BYTES, SaKeys, SessionKeys
from p3hw.log import failure
from p3hw.reasons import REASONS, P3Error

#: The ABI stamp this Python code was written against (native/src/cpu.c).
EXPECTED_ABI_VERSION = 10

try:
    from p3hw import _dataplane  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    _dataplane = None
    _IMPORT_ERROR: str | None = str(exc)
else:
    _IMPORT_ERROR = None

CPU_FEATURE_NAMES = {
    "aesni": "P3DP_CPU_AESNI",
    "pclmul": "P3DP_CPU_PCLMUL",
    "avx2": "P3DP_CPU_AVX2",
    "vaes": "P3DP_CPU_VAES",
    "vpclmulqdq": "P3DP_CPU_VPCLMULQDQ",
    "rdrand": "P3DP_CPU_RDRAND",
    "rdseed": "P3DP_CPU_RDSEED",
    "avx512f": "P3DP_CPU_AVX512F",
}



def _from_lib(constants: dict[str, str]) -> dict[str, int]:
    """Our name -> the value of the ``P3DP_*`` constant it stands for, as the extension was built
    (native/include/p3dp.h is the one place the numbers are written); empty without the extension."""
    try:
        return {name: int(getattr(_dataplane.lib, const)) for name, const in constants.items()}
    except AttributeError:       # no extension, or one of another ABI: native() says which
        return {}


#: CIPHERS name -> P3DP_AES_*.
CIPHER_IDS = _from_lib({
    "aes-128-gcm": "P3DP_AES_128_GCM",
    "aes-256-gcm": "P3DP_AES_256_GCM",
    "aes-128-ccm": "P3DP_AES_128_CCM",
    "aes-256-ccm": "P3DP_AES_256_CCM",
    "aes-128-ctr": "P3DP_AES_128_CTR",
    "aes-256-ctr": "P3DP_AES_256_CTR",
})
AEAD_CIPHERS = ("aes-128-gcm", "aes-256-gcm", "aes-128-ccm", "aes-256-ccm")

#: P3DP_KIND_* -> the kind's name in Opened and WorkerMessage.
KIND_NAMES = {v: k for k, v in _from_lib({
    "data": "P3DP_KIND_DATA", "control": "P3DP_KIND_CONTROL", "dummy": "P3DP_KIND_DUMMY", "ike": "P3DP_KIND_IKE",
}).items()}


def native() -> tuple[Any, Any]:
    """Return ``(ffi, lib)`` of the extension, or raise P3Error DP_NOT_BUILT / ABI_MISMATCH."""
    if _dataplane is None:
        raise P3Error("DP_NOT_BUILT", f"the native dataplane is not built: {_IMPORT_ERROR}",
                      hint="run 'make build'")
    got = int(_dataplane.lib.p3dp_abi_version())
    if got != EXPECTED_ABI_VERSION:
        raise P3Error("ABI_MISMATCH", f"extension ABI {got}, this p3hw expects {EXPECTED_ABI_VERSION}",
                      hint="rebuild with 'make build'")
    return _dataplane.ffi, _dataplane.lib


def reason_name(rc: int) -> str:
    """The reason name of a negative native code (``-203`` -> ``DP_REPLAY``), ``OK`` for 0."""
    if rc >= 0:
        return "OK"
    code = f"P3-E{-rc:03d}"
    return REASONS[code].name if code in REASONS else "INTERNAL"


def check(rc: int, what: str) -> int:
    """Turn a native return code into P3Error when negative."""
    if rc >= 0:
        return rc
    raise P3Error(reason_name(rc), f"{what} failed (P3-E{-rc:03d})")


def abi_version() -> int:
    _, lib = native()
    return int(lib.p3dp_abi_version())


def cpu_features() -> dict[str, bool]:
    """The CPU features the crypto engines can use, as the native code sees them."""
    _, lib = native()
    bits = int(lib.p3dp_cpu_features())
    return {name: bool(bits & int(getattr(lib, const))) for name, const in CPU_FEATURE_NAMES.items()}


# ---------------------------------------------------------------- primitives

def _cipher_id(cipher: str, allowed: Sequence[str]) -> int:
    if cipher not in allowed:
        raise P3Error("DP_BAD_CIPHER", f"unsupported cipher {cipher!r} (one of {', '.join(allowed)})")
    return CIPHER_IDS[cipher]


def _check_key(cipher: str, key: bytes) -> None:
    if len(key) != CIPHERS[cipher][0]:
        raise P3Error("DP_BAD_CIPHER", f"{cipher} needs a {CIPHERS[cipher][0]}-octet key, got {len(key)}")


def aead_seal(cipher: str, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes, tag_len: int = 16) -> bytes:
    """AES-GCM / AES-CCM encryption: returns ciphertext ‖ tag (tag_len octets)."""
    ffi, lib = native()
    cid = _cipher_id(cipher, AEAD_CIPHERS)
    _check_key(cipher, key)
    out = ffi.new("uint8_t[]", max(len(plaintext), 1))
    tag = ffi.new("uint8_t[16]")
    check(lib.p3dp_aead_seal(cid, key, nonce, len(nonce), aad, len(aad), plaintext, len(plaintext),
                             out, tag, tag_len), f"{cipher} seal")
    return bytes(ffi.buffer(out, len(plaintext))) + bytes(ffi.buffer(tag, tag_len))


def aead_open(cipher: str, key: bytes, nonce: bytes, aad: bytes, sealed: bytes, tag_len: int = 16) -> bytes:
    """Inverse of :func:`aead_seal`; raises P3Error DP_AUTH_FAILED on a bad tag."""
    ffi, lib = native()
    cid = _cipher_id(cipher, AEAD_CIPHERS)
    _check_key(cipher, key)
    if not 0 < tag_len <= 16 or len(sealed) < tag_len:
        raise P3Error("DP_BAD_ARGUMENT", f"sealed input shorter than its {tag_len}-octet tag")
    body, tag = sealed[:-tag_len], sealed[-tag_len:]
    out = ffi.new("uint8_t[]", max(len(body), 1))
    check(lib.p3dp_aead_open(cid, key, nonce, len(nonce), aad, len(aad), body, len(body),
                             out, tag, tag_len), f"{cipher} open")
    return bytes(ffi.buffer(out, len(body)))


def aes_ctr(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """AES-CTR (128 or 256 by key length) from a 16-octet initial counter block."""
    ffi, lib = native()
    if len(counter_block) != 16:
        raise P3Error("DP_BAD_ARGUMENT", "the counter block is 16 octets")
    if len(key) not in (16, 32):
        raise P3Error("DP_BAD_CIPHER", f"AES-CTR needs a 16- or 32-octet key, got {len(key)}")
    out = ffi.new("uint8_t[]", max(len(data), 1))
    check(lib.p3dp_aes_ctr(key, len(key), counter_block, data, len(data), out), "aes-ctr")
    return bytes(ffi.buffer(out, len(data)))


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    ffi, lib = native()
    out = ffi.new("uint8_t[32]")
    check(lib.p3dp_hmac_sha256(key, len(key), data, len(data), out), "hmac-sha256")
    return bytes(ffi.buffer(out, 32))


# ---------------------------------------------------------------- routes

class Routes:
    """Longest-prefix match table, IPv4 and IPv6 prefix -> peer id (native/src/route.c).

    The worker's routing stage fills each packet's peer before seal
    (docs/dataplane.md); lookups never block on updates.
    """

    def __init__(self) -> None:
        self._ffi, self._lib = native()
        table = self._lib.p3dp_routes_new()
        if table == self._ffi.NULL:
            raise P3Error("DP_TABLE_FULL", "cannot allocate a routing table")
        self._table = self._ffi.gc(table, self._lib.p3dp_routes_free)

    @staticmethod
    def _network(prefix: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            return ipaddress.ip_network(prefix, strict=True)
        except ValueError as exc:
            raise P3Error("DP_BAD_ARGUMENT", f"not a prefix (or host bits set): {prefix!r}") from exc

    def add(self, prefix: str, peer_id: int) -> None:
        net = self._network(prefix)
        if not 0 <= peer_id <= int(self._lib.P3DP_ROUTE_PEER_MAX):
            raise P3Error("DP_BAD_ARGUMENT", f"peer id {peer_id} out of range for routes")
        check(self._lib.p3dp_route_add(self._table, net.version, net.network_address.packed, net.prefixlen, peer_id),
              f"add route {prefix}")

    def delete(self, prefix: str) -> None:
        net = self._network(prefix)
        check(self._lib.p3dp_route_del(self._table, net.version, net.network_address.packed, net.prefixlen),
              f"delete route {prefix}")

    def lookup(self, addr: str) -> int | None:
        """The peer id of the longest matching prefix, or None."""
        family, packed = _addr_bytes(addr)
        peer = int(self._lib.p3dp_route_lookup(self._table, family, packed))
        return None if peer == 0xFFFFFFFF else peer

    def count(self, family: int) -> int:
        return int(self._lib.p3dp_route_count(self._table, family))

    @property
    def table(self) -> Any:
        """The native table, for the worker."""
        return self._table


# ---------------------------------------------------------------- dataplane

@dataclass(frozen=True)
class PeerConfig:
    """One session's outer path (DESIGN.md §3: found by outer addresses and port)."""

    peer_id: int
    local_addr: str
    remote_addr: str
    encap: str = "udp"            # "udp" (port 5653) or "esp" (IP protocol 50)
    local_port: int = DEFAULT_PORT
    remote_port: int = DEFAULT_PORT
    mtu: int = 1500

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.remote_addr).version


@dataclass
class Counters:
    sealed_packets: int = 0
    sealed_bytes: int = 0
    opened_packets: int = 0
    opened_bytes: int = 0
    control_packets: int = 0
    dummy_packets: int = 0
    ike_packets: int = 0
    drops: dict[str, int] = field(default_factory=dict)   # reason name -> count (non-zero only)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


@dataclass(frozen=True)
class Sealed:
    status: str                   # "OK" or a reason name (DP_TOO_BIG, ...)
    data: bytes                   # the sealed packet (outer IP/UDP too with with_ip)
    p3_id: int
    seq: int


@dataclass(frozen=True)
class Opened:
    status: str
    kind: str                     # data | control | dummy | ike
    peer: int | None
    data: bytes                   # the inner packet; for ike, the IKE message
    p3_id: int
    seq: int


#: Worker threads one packet worker may run (P3DP_MAX_WORKERS, DPDK ports only).
MAX_WORKERS = _from_lib({"max": "P3DP_MAX_WORKERS"}).get("max", 0)

#: Engine names (config keyword ``crypto_engine``) -> P3DP_ENGINE_* (docs/engines.md).
ENGINE_IDS = _from_lib({"none": "P3DP_ENGINE_NONE", "aesni": "P3DP_ENGINE_AESNI", "accel-sim": "P3DP_ENGINE_ACCEL_SIM",
                        "pkcs11": "P3DP_ENGINE_PKCS11", "cryptodev": "P3DP_ENGINE_CRYPTODEV"})
ENGINE_NAMES = {v: k for k, v in ENGINE_IDS.items()}
#: Fault kinds of a lookaside engine -> P3DP_FAULT_*.
FAULT_IDS = _from_lib({"none": "P3DP_FAULT_NONE", "error": "P3DP_FAULT_ERROR", "timeout": "P3DP_FAULT_TIMEOUT",
                       "corrupt": "P3DP_FAULT_CORRUPT", "gone": "P3DP_FAULT_GONE"})
FAULT_NAMES = {v: k for k, v in FAULT_IDS.items()}
#: The DPDK library (`make -C native dpdk`): the cryptodev engine (dlopened by set_engine("cryptodev")) and the
#: port backend (dlopened by a Worker on DPDK ports).
#: From a checkout build/libp3dpdk.so, from the Debian package /usr/lib/p3hw/libp3dpdk.so (docs/install.md).
DPDK_LIBRARY = native_library("libp3dpdk.so")
#: EAL arguments when none are configured: no hugepages, no shared runtime files (several DPDK
#: processes can run side by side), no PCI scan, the OpenSSL software crypto device.
DEFAULT_EAL_ARGS = "--no-huge -m 256 --no-shconf --no-pci --no-telemetry --log-level=*:warning --vdev=crypto_openssl0"


@dataclass(frozen=True)
class EngineParams:
    """How a crypto engine is started (p3dp_engine_params)."""

    latency_us: int = 0           # accel-sim: doorbell to completion, per op
    max_ops_per_s: int = 0        # accel-sim: throughput cap (0: none)
    timeout_us: int = 0           # an op not completed by then is a timeout fault (0: 100 ms)
    recover_ms: int = 0           # probe a failed engine this often and go back to it (0: never)
    ring_slots: int = 0           # accel-sim: descriptor ring slots, a power of two (0: 1024)
    module_path: str = ""         # pkcs11
    token_label: str = ""         # pkcs11
    pin: str = ""                 # pkcs11 (not kept by the engine after login)
    eal_args: str = ""            # cryptodev: EAL arguments, used once per process ("": DEFAULT_EAL_ARGS)


@dataclass(frozen=True)
class EngineStatus:
    """Which engine runs the crypto and what happened to it (docs/engines.md)."""

    engine: str
    fallback: str
    on_fallback: bool
    reason: str | None            # "P3-E609" once the engine has failed, else None
    last_fault: str               # none | error | timeout | corrupt | gone
    failovers: int
    recoveries: int
    rerun_ops: int
    engine_ops: int
    fallback_ops: int
    faults: dict[str, int]        # faulted ops by kind (non-zero only)
    forged_opens: int             # auth failures the fallback confirmed (real forgeries)

    @property
    def active(self) -> str:
        """The engine new ops go to."""
        return self.fallback if self.on_fallback else self.engine


def _addr_bytes(addr: str) -> tuple[int, bytes]:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError as exc:
        raise P3Error("DP_BAD_ARGUMENT", f"not an IP address: {addr!r}") from exc
    return ip.version, ip.packed


def _counters_from(ffi: Any, raw: Any) -> Counters:
    drops = {}
    for i in range(len(raw.drops)):
        if raw.drops[i]:
            code = f"P3-E{200 + i:03d}"
            drops[REASONS[code].name if code in REASONS else code] = int(raw.drops[i])
    return Counters(
        sealed_packets=int(raw.sealed_packets), sealed_bytes=int(raw.sealed_bytes),
        opened_packets=int(raw.opened_packets), opened_bytes=int(raw.opened_bytes),
        control_packets=int(raw.control_packets), dummy_packets=int(raw.dummy_packets),
        ike_packets=int(raw.ike_packets), drops=drops)


class Dataplane:
    """One native dataplane context (not thread-safe: one owner at a time)."""

    def __init__(self, max_peers: int = 1024, max_inbound_sas: int = 4096) -> None:
        self._ffi, self._lib = native()
        ctx = self._lib.p3dp_ctx_new(max_peers, max_inbound_sas)
        if ctx == self._ffi.NULL:
            raise P3Error("DP_BAD_ARGUMENT", f"cannot create a dataplane for {max_peers} peers / "
                          f"{max_inbound_sas} SAs")
        self._ctx = self._ffi.gc(ctx, self._lib.p3dp_ctx_free)
        self._peers: dict[int, PeerConfig] = {}

    def close(self) -> None:
        """Free the context now (keys wiped) instead of at garbage collection."""
        if self._ctx is not None:
            self._ffi.release(self._ctx)
            self._ctx = None

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def ctx(self) -> Any:
        if self._ctx is None:
            raise P3Error("DP_BAD_ARGUMENT", "the dataplane is closed")
        return self._ctx

    # -- crypto engine (docs/engines.md)

    def set_engine(self, kind: str, params: EngineParams | None = None, fallback: str = "aesni") -> None:
        """Choose the crypto engine and its fallback (``aesni`` or ``none``) before any peer is added."""
        if kind not in ENGINE_IDS or kind == "none":
            raise P3Error("DP_BAD_ARGUMENT",
                          f"unknown crypto engine {kind!r} (aesni, accel-sim, pkcs11, cryptodev)")
        if fallback not in ("aesni", "none"):
            raise P3Error("DP_BAD_ARGUMENT", f"crypto fallback must be aesni or none, got {fallback!r}")
        if self._peers:
            raise P3Error("DP_BAD_ARGUMENT", "choose the crypto engine before adding peers")
        p = params or EngineParams()
        ffi = self._ffi
        raw = ffi.new("p3dp_engine_params *")
        for name in ("latency_us", "max_ops_per_s", "timeout_us", "recover_ms", "ring_slots"):
            value = getattr(p, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
                raise P3Error("DP_BAD_ARGUMENT", f"engine parameter {name} out of range: {value!r}")
            setattr(raw, name, value)
        keep = [ffi.new("char[]", getattr(p, name).encode()) for name in ("module_path", "token_label", "pin")]
        if kind == "cryptodev":
            library = p.module_path or DPDK_LIBRARY
            if not os.path.exists(library):
                raise P3Error("CRYPTODEV", f"the DPDK cryptodev engine is not built here ({library} is missing; "
                              "`make -C native dpdk` builds it where DPDK is installed)")
            # DPDK's EAL is initialised once per process: only the first cryptodev engine's arguments count.
            keep[0] = ffi.new("char[]", library.encode())
            keep.append(ffi.new("char[]", (p.eal_args or DEFAULT_EAL_ARGS).encode()))
            raw.eal_args = keep[3]
        raw.module_path, raw.token_label, raw.pin = keep[:3]
        try:
            check(self._lib.p3dp_ctx_set_engine(self.ctx, ENGINE_IDS[kind], raw, ENGINE_IDS[fallback]),
                  f"start crypto engine {kind}")
        finally:
            ffi.memmove(keep[2], b"\0" * len(p.pin), len(p.pin))

    def engine_status(self) -> EngineStatus:
        raw = self._ffi.new("p3dp_engine_status *")
        self._lib.p3dp_ctx_engine_status(self.ctx, raw)
        faults = {FAULT_NAMES[i]: int(raw.faults[i]) for i in range(1, len(raw.faults)) if raw.faults[i]}
        return EngineStatus(
            engine=ENGINE_NAMES.get(int(raw.engine), "?"), fallback=ENGINE_NAMES.get(int(raw.fallback), "?"),
            on_fallback=bool(raw.on_fallback), reason=f"P3-E{-int(raw.reason):03d}" if raw.reason else None,
            last_fault=FAULT_NAMES.get(int(raw.last_fault), "?"), failovers=int(raw.failovers),
            recoveries=int(raw.recoveries), rerun_ops=int(raw.rerun_ops), engine_ops=int(raw.engine_ops),
            fallback_ops=int(raw.fallback_ops), faults=faults, forged_opens=int(raw.forged_opens))

    def inject_fault(self, fault: str, after_ops: int = 0, count: int = 1) -> None:
        """Lookaside engines (accel-sim, pkcs11): after *after_ops* good ops, the next *count* ops get *fault*
        (``gone``: the device is gone until ``inject_fault("none")``)."""
        if fault not in FAULT_IDS:
            raise P3Error("DP_BAD_ARGUMENT", f"unknown fault {fault!r} ({', '.join(FAULT_IDS)})")
        if not (0 <= after_ops <= 0xFFFFFFFF and 0 <= count <= 0xFFFFFFFF):
            raise P3Error("DP_BAD_ARGUMENT", "after_ops and count are 32-bit counts")
        check(self._lib.p3dp_accel_inject(self.ctx, FAULT_IDS[fault], after_ops, count), f"inject {fault}")

    @staticmethod
    def lane_of(peer_id: int, lanes: int) -> int:
        """The worker of ``lanes`` that owns ``peer_id`` (p3dp_lane_of: the rule is written once, in C)."""
        if not (0 <= peer_id <= 0xFFFFFFFF and 0 <= lanes <= 0xFFFFFFFF):
            raise P3Error("DP_BAD_ARGUMENT", f"peer {peer_id} or worker count {lanes} is not a 32-bit count")
        _, lib = native()
        return int(lib.p3dp_lane_of(peer_id, lanes))

    def _direction(self, direction: str) -> int:
        return int(self._lib.P3DP_DIR_IN if direction == "in" else self._lib.P3DP_DIR_OUT)

    def pkcs11_sealed_keys(self) -> tuple[int, int]:
        """PKCS#11 engine: (SA keys that are sensitive, non-extractable token objects, all SA keys)."""
        sealed, total = self._ffi.new("uint32_t *"), self._ffi.new("uint32_t *")
        check(self._lib.p3dp_pkcs11_sealed_keys(self.ctx, sealed, total), "pkcs11 key check")
        return int(sealed[0]), int(total[0])

    # -- configuration

    def set_local_address(self, addr: str) -> None:
        """This P3 system's inner address: opened packets to it go to the control queue."""
        family, packed = _addr_bytes(addr)
        check(self._lib.p3dp_ctx_set_local_address(self.ctx, family, packed), "set local address")

    def set_buckets(self, frame_sizes: Sequence[int]) -> None:
        """Frame-size buckets (ascending, each >= 32); each peer adds its MTU cap."""
        sizes = list(frame_sizes)
        if any(not isinstance(s, int) or s < 0 or s > 0xFFFFFFFF for s in sizes):
            raise P3Error("DP_BAD_ARGUMENT", f"bad bucket list {sizes!r}")
        arr = self._ffi.new("uint32_t[]", sizes or [0])
        check(self._lib.p3dp_ctx_set_buckets(self.ctx, arr, len(sizes)), f"set buckets {sizes}")

    @property
    def buckets(self) -> list[int]:
        arr = self._ffi.new("uint32_t[16]")
        n = int(self._lib.p3dp_ctx_get_buckets(self.ctx, arr, 16))
        return [int(arr[i]) for i in range(n)]

    def add_peer(self, peer: PeerConfig) -> None:
        lf, local = _addr_bytes(peer.local_addr)
        rf, remote = _addr_bytes(peer.remote_addr)
        if lf != rf:
            raise P3Error("DP_BAD_ARGUMENT", f"peer {peer.peer_id}: local and remote address families differ")
        if peer.encap not in ("udp", "esp"):
            raise P3Error("DP_BAD_ARGUMENT", f"peer {peer.peer_id}: encap must be udp or esp")
        if not (0 <= peer.local_port <= 0xFFFF and 0 <= peer.remote_port <= 0xFFFF and 0 < peer.mtu <= 0xFFFF):
            raise P3Error("DP_BAD_ARGUMENT", f"peer {peer.peer_id}: port or MTU out of range")
        cfg = self._ffi.new("p3dp_peer_config *")
        cfg.peer_id = peer.peer_id
        cfg.family = rf
        cfg.encap = self._lib.P3DP_ENCAP_UDP if peer.encap == "udp" else self._lib.P3DP_ENCAP_ESP
        cfg.local_port = peer.local_port
        cfg.remote_port = peer.remote_port
        cfg.mtu = peer.mtu
        self._ffi.memmove(cfg.local_addr, local, len(local))
        self._ffi.memmove(cfg.remote_addr, remote, len(remote))
        check(self._lib.p3dp_peer_add(self.ctx, cfg), f"add peer {peer.peer_id}")
        self._peers[peer.peer_id] = peer

    def remove_peer(self, peer_id: int) -> None:
        check(self._lib.p3dp_peer_remove(self.ctx, peer_id), f"remove peer {peer_id}")
        self._peers.pop(peer_id, None)

    def set_hp_keys(self, peer_id: int, hp_out: bytes | None = None, hp_in: bytes | None = None) -> None:
        """Header-protection keys; a new hp_in becomes current, the old one stays as previous."""
        for key in (hp_out, hp_in):
            if key is not None and len(key) != HP_KEY_BYTES:
                raise P3Error("DP_BAD_CIPHER", f"header-protection keys are {HP_KEY_BYTES} octets")
        null = self._ffi.NULL
        check(self._lib.p3dp_peer_set_hp_keys(self.ctx, peer_id, hp_out if hp_out is not None else null,
                                              hp_in if hp_in is not None else null), f"hp keys of {peer_id}")

    def drop_previous_hp_key(self, peer_id: int) -> None:
        check(self._lib.p3dp_peer_drop_previous_hp_key(self.ctx, peer_id), f"drop previous hp key of {peer_id}")

    def _sa_config(self, peer_id: int, sa: SaKeys) -> Any:
        cfg = self._ffi.new("p3dp_sa_config *")
        cfg.p3_id = sa.p3_id
        cfg.peer_id = peer_id
        cfg.cipher = CIPHER_IDS[sa.cipher]
        self._ffi.memmove(cfg.key, sa.key, len(sa.key))
        self._ffi.memmove(cfg.salt, sa.salt, len(sa.salt))
        self._ffi.memmove(cfg.auth_key, sa.auth_key, len(sa.auth_key))
        self._ffi.memmove(cfg.obfs_key, sa.obfs_key, len(sa.obfs_key))
        return cfg

    def _wipe(self, cfg: Any) -> None:
        self._ffi.memmove(cfg, b"\0" * self._ffi.sizeof("p3dp_sa_config"), self._ffi.sizeof("p3dp_sa_config"))

    def add_inbound_sa(self, peer_id: int, sa: SaKeys) -> None:
        cfg = self._sa_config(peer_id, sa)
        try:
            check(self._lib.p3dp_sa_add_inbound(self.ctx, cfg), f"add inbound SA {sa.p3_id:#x}")
        finally:
            self._wipe(cfg)

    def add_outbound_sa(self, peer_id: int, sa: SaKeys, switch_after_seq: int = 0) -> None:
        """Current at once if the peer has none; else pending until the current SA sealed switch_after_seq."""
        cfg = self._sa_config(peer_id, sa)
        try:
            check(self._lib.p3dp_sa_add_outbound(self.ctx, cfg, switch_after_seq), f"add outbound SA {sa.p3_id:#x}")
        finally:
            self._wipe(cfg)

    def remove_sa(self, direction: str, peer_id: int, p3_id: int) -> None:
        check(self._lib.p3dp_sa_remove(self.ctx, self._direction(direction), peer_id, p3_id),
              f"remove {direction}bound SA {p3_id:#x}")

    def install_session(self, peer_id: int, keys: SessionKeys) -> None:
        """Install a session's first keys: both hp keys and both data SAs."""
        self.set_hp_keys(peer_id, keys.hp_out_key, keys.hp_in_key)
        self.add_inbound_sa(peer_id, keys.inbound)
        self.add_outbound_sa(peer_id, keys.outbound)

    def next_seq(self, peer_id: int) -> int:
        return int(self._lib.p3dp_peer_next_seq(self.ctx, peer_id))

    def outbound_id(self, peer_id: int) -> int:
        return int(self._lib.p3dp_peer_outbound_id(self.ctx, peer_id))

    def set_next_seq(self, peer_id: int, p3_id: int, seq: int) -> None:
        check(self._lib.p3dp_sa_set_next_seq(self.ctx, peer_id, p3_id, seq), "set next seq")

    def counters(self) -> Counters:
        raw = self._ffi.new("p3dp_counters *")
        self._lib.p3dp_ctx_counters(self.ctx, raw)
        return _counters_from(self._ffi, raw)

    def sa_counters(self, direction: str, peer_id: int, p3_id: int) -> Counters:
        raw = self._ffi.new("p3dp_counters *")
        check(self._lib.p3dp_sa_counters(self.ctx, self._direction(direction), peer_id, p3_id, raw),
              f"counters of SA {p3_id:#x}")
        return _counters_from(self._ffi, raw)

    # -- bursts

    def seal(self, items: Sequence[tuple[int, bytes]], *, with_ip: bool = False,
             dummy: bool = False) -> list[Sealed]:
        """Seal (peer_id, inner packet) pairs. with_ip writes the outer IP/UDP header too
        (raw ESP, DPDK); without it the result is what a UDP socket sends."""
        ffi, lib = self._ffi, self._lib
        n = len(items)
        if n == 0:
            return []
        room = max(len(p) for _, p in items) + 2048
        pkts = ffi.new("p3dp_pkt[]", n)
        keep = []
        out = ffi.new("uint8_t[]", room * n)
        for i, (peer_id, inner) in enumerate(items):
            buf = ffi.from_buffer(inner) if inner else ffi.new("uint8_t[1]")
            keep.append(buf)
            pkts[i].in_buf = buf
            pkts[i].in_len = len(inner)
            pkts[i].out_buf = out + i * room
            pkts[i].out_cap = room
            pkts[i].peer = peer_id
            pkts[i].kind = lib.P3DP_KIND_DUMMY if dummy else lib.P3DP_KIND_DATA
        lib.p3dp_seal_burst(self.ctx, pkts, n, lib.P3DP_OUT_IP if with_ip else 0)
        return [Sealed(reason_name(p.status), bytes(ffi.buffer(p.out_buf, p.out_len)), int(p.p3_id), int(p.seq))
                for p in (pkts[i] for i in range(n))]

    def open(self, packets: Sequence[bytes | tuple[bytes, str, int]], *, with_ip: bool = True) -> list[Opened]:
        """Open received packets. with_ip: each is a whole IP packet (raw ESP, DPDK);
        else each is (P3 bytes, sender address, sender UDP port or 0 for ESP)."""
        ffi, lib = self._ffi, self._lib
        n = len(packets)
        if n == 0:
            return []
        datas: list[bytes] = []
        pkts = ffi.new("p3dp_pkt[]", n)
        keep = []
        for item in packets:
            datas.append(bytes(item if isinstance(item, (bytes, bytearray, memoryview)) else item[0]))
        sizes = [len(d) for d in datas]
        room = max(max(sizes), 1)
        out = ffi.new("uint8_t[]", room * n)
        for i, item in enumerate(packets):
            if with_ip:
                if not isinstance(item, (bytes, bytearray, memoryview)):
                    raise P3Error("DP_BAD_ARGUMENT", "with_ip=True takes whole IP packets")
                data = datas[i]
            else:
                if isinstance(item, (bytes, bytearray, memoryview)) or len(item) != 3:
                    raise P3Error("DP_BAD_ARGUMENT", "with_ip=False takes (bytes, address, port) tuples")
                data, addr, port = datas[i], item[1], item[2]
                family, packed = _addr_bytes(addr)
                if not 0 <= port <= 0xFFFF:
                    raise P3Error("DP_BAD_ARGUMENT", f"port {port} out of range")
                pkts[i].family = family
                pkts[i].port = port
                ffi.memmove(pkts[i].addr, packed, len(packed))
            buf = ffi.from_buffer(data) if data else ffi.new("uint8_t[1]")
            keep.append(buf)
            pkts[i].in_buf = buf
            pkts[i].in_len = len(data)
            pkts[i].out_buf = out + i * room
            pkts[i].out_cap = room
        lib.p3dp_open_burst(self.ctx, pkts, n, lib.P3DP_IN_IP if with_ip else 0)
        results = []
        for i in range(n):
            p = pkts[i]
            kind = KIND_NAMES.get(int(p.kind), "data")
            if p.status == 0 and kind == "ike":
                data = datas[i][int(p.payload_off):]
            else:
                data = bytes(ffi.buffer(p.out_buf, p.out_len))
            peer = None if p.peer == lib.P3DP_NO_PEER else int(p.peer)
            results.append(Opened(reason_name(p.status), kind, peer, data, int(p.p3_id), int(p.seq)))
        return results


class EngineStatusSource(Protocol):
    """A dataplane, or several (p3hw/runtime/shards.py): what EngineWatch reads."""

    def engine_status(self) -> EngineStatus: ...


class EngineWatch:
    """Turns crypto-engine changes into log lines that carry their reason code (spec §5.1).

    The dataplane moves to the fallback engine on its own (docs/engines.md);
    the control plane calls :meth:`poll` now and then (the gateway's
    housekeeping tick) and logs what happened since the last call.
    """

    def __init__(self, dataplane: EngineStatusSource, logger: logging.Logger) -> None:
        self._dataplane = dataplane
        self._logger = logger
        self._last = dataplane.engine_status()

    def poll(self) -> list[str]:
        now = self._dataplane.engine_status()
        last, lines = self._last, []
        lost = sum(now.faults.values()) - sum(last.faults.values())
        if now.failovers > last.failovers:
            lines.append(failure(self._logger, "ACCEL_FAULT",
                                 f"crypto engine {now.engine} failed ({now.last_fault}); traffic moved to "
                                 f"{now.fallback}, {now.rerun_ops - last.rerun_ops} ops re-run there "
                                 f"(failovers {now.failovers})"))
        elif lost > 0 and now.fallback == "none":
            lines.append(failure(self._logger, "ACCEL_FAULT",
                                 f"crypto engine {now.engine} failed {lost} ops ({now.last_fault}); "
                                 "no fallback engine is configured, those packets were dropped"))
        if now.recoveries > last.recoveries:
            line = (f"crypto engine back on {now.engine} after its health probe passed "
                    f"(recoveries {now.recoveries})")
            self._logger.info(line)
            lines.append(line)
        self._last = now
        return lines


# ---------------------------------------------------------------- flow tracking (native/src/flows.c)

@dataclass(frozen=True)
class Terminated:
    """What p3dp_flows_terminate wrote for one peer (spec §2.1.7 login termination)."""

    tcp_flows_reset: int = 0
    tcp_resets: int = 0
    icmp_unreachables: int = 0
    flows_silent: int = 0


class FlowTable:
    """Flows through the tunnels, kept so a lost session can reset them (docs/flows.md)."""

    TERMINATE_BATCH = 256

    def __init__(self, capacity: int = 65536, tcp_idle_ms: int = 3 * 3600 * 1000,
                 other_idle_ms: int = 180 * 1000) -> None:
        self._ffi, self._lib = native()
        ptr = self._lib.p3dp_flows_new(capacity, tcp_idle_ms, other_idle_ms)
        if ptr == self._ffi.NULL:
            raise P3Error("DP_BAD_ARGUMENT", f"cannot make a flow table of {capacity} flows")
        self.table: Any = self._ffi.gc(ptr, self._lib.p3dp_flows_free)

    def observe(self, peer: int, packet: bytes, from_lan: bool, now_ms: int) -> int:
        """Show one inner packet to the tracker (tests and tools; the worker calls the C directly)."""
        direction = self._lib.P3DP_FLOW_FROM_LAN if from_lan else self._lib.P3DP_FLOW_TO_LAN
        return check(self._lib.p3dp_flows_observe(self.table, peer, packet, len(packet), direction, now_ms),
                     "flow observe")

    def live(self, peer: int, now_ms: int) -> int:
        return int(self._lib.p3dp_flows_count(self.table, peer, now_ms))

    def forget(self, peer: int) -> int:
        return int(self._lib.p3dp_flows_forget(self.table, peer))

    def export_state(self, now_ms: int) -> bytes:
        """The live flows as bytes for :meth:`import_state` after a restart (docs/flows.md)."""
        ffi, lib = self._ffi, self._lib
        needed = ffi.new("size_t *")
        lib.p3dp_flows_export(self.table, now_ms, ffi.NULL, 0, needed)
        while True:
            out = ffi.new("uint8_t[]", needed[0] + 4096)   # room for flows that start meanwhile
            rc = lib.p3dp_flows_export(self.table, now_ms, out, len(out), needed)
            if rc >= 0:
                return bytes(ffi.buffer(out, needed[0]))

    def import_state(self, data: bytes, now_ms: int, extra_idle_ms: int) -> int:
        """Load flows written by :meth:`export_state`, aged by *extra_idle_ms*; how many were loaded."""
        return check(self._lib.p3dp_flows_import(self.table, data, len(data), now_ms, extra_idle_ms),
                     "flow state import")

    def stale_resets(self) -> int:
        """RSTs sent for segments of connections of an earlier session (docs/flows.md)."""
        stats = self._ffi.new("p3dp_flows_stats *")
        self._lib.p3dp_flows_stats_get(self.table, stats)
        return int(stats.stale_resets)

    def terminate(self, peer: int | None, now_ms: int) -> tuple[list[bytes], Terminated]:
        """The RSTs and ICMP unreachables to write toward the LAN for *peer*'s live flows (None: every peer's)."""
        ffi, lib = self._ffi, self._lib
        if peer is None:
            peer = lib.P3DP_NO_PEER
        batch = self.TERMINATE_BATCH
        out = ffi.new("uint8_t[]", batch * lib.P3DP_FLOWS_MAX_PACKET)
        lens = ffi.new("size_t[]", batch)
        done = ffi.new("p3dp_flows_terminated *")
        packets: list[bytes] = []
        totals = dict.fromkeys(("tcp_flows_reset", "tcp_resets", "icmp_unreachables", "flows_silent"), 0)
        while True:
            n = check(lib.p3dp_flows_terminate(self.table, peer, now_ms, out, len(out), lens, batch, done),
                      "flow terminate")
            buf, offset = ffi.buffer(out), 0
            for i in range(n):
                packets.append(bytes(buf[offset:offset + lens[i]]))
                offset += lens[i]
            for key in totals:
                totals[key] += int(getattr(done, key))
            if done.flows_remaining == 0 or n == 0:
                return packets, Terminated(**totals)


# ---------------------------------------------------------------- the packet worker (native/src/worker.c)

@dataclass(frozen=True)
class WorkerMessage:
    """A packet the worker hands to the control plane."""

    kind: str          # "ike" (behind the non-ESP marker) or "control" (opened, to this P3 system)
    peer: int | None   # the session it came through (control only)
    addr: str          # the sender's outer address
    port: int          # its UDP port (0 for raw ESP)
    data: bytes


@dataclass(frozen=True)
class WorkerStats:
    lan_rx_packets: int
    lan_tx_packets: int
    wan_rx_packets: int
    wan_tx_packets: int
    no_route_drops: int
    control_queue_drops: int
    io_errors: int
    neighbour_drops: int = 0      # DPDK ports: no MAC for the next hop yet (a request was sent)
    link_replies: int = 0         # DPDK ports: ARP replies, neighbour advertisements, echo replies
    link_drops: int = 0           # DPDK ports: frames not for the gateway, or malformed
    tx_full_drops: int = 0        # DPDK ports: the transmit queue stayed full
    handoffs: int = 0             # several workers: packets handed to the worker owning their peer
    handoff_drops: int = 0        # ... dropped because that worker's ring was full
    pauses: int = 0               # Worker.paused() entries (control messages never pause it)
    control_sent: int = 0         # control packets the worker sealed and sent (send_control)
    send_queue_drops: int = 0     # send_control / send_lan refused: the worker's down queue was full
    ike_rate_drops: int = 0       # IKE messages over the global or per-source rate, not queued
    ike_queue_drops: int = 0      # IKE messages dropped: the IKE queue to the control plane was full
    ike_cookies_sent: int = 0     # IKE_SA_INIT answered with a COOKIE by the worker (under load)


@dataclass(frozen=True)
class DpdkPorts:
    """Two DPDK ethdev ports instead of the TUN and the socket (docs/dpdk.md).

    Addresses are interfaces (``10.1.0.1/24``): the gateway's own address on
    the port and the prefix that is on-link there; gateways are next hops for
    everything off-link (None: all on-link).
    """

    lan_port: str
    wan_port: str
    lan_address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    wan_address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    udp_port: int = 5653
    lan_gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    wan_gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    eal_args: str = ""
    mtu: int = 1500
    library: str = ""
    #: worker threads, one per queue of each port (docs/dpdk.md "Several workers"); with more
    #: than one, give the Worker one dataplane (and flow table) per worker
    workers: int = 1
    #: CPUs to pin the workers to, in order (empty: the scheduler decides)
    cpus: tuple[int, ...] = ()


class Worker:
    """The native packet worker: moves every data packet, no Python on the way.

    It owns *dataplane* while it runs; change SAs and peers only inside
    ``with worker.paused():`` (the worker parks between two bursts).
    """

    MESSAGE_ROOM = 65536

    def __init__(self, dataplane: Dataplane | Sequence[Dataplane], routes: Routes,
                 flows: FlowTable | Sequence[FlowTable] | None, *, lan_fd: int = -1, wan_fd: int = -1,
                 esp_fd: int = -1, esp_family: int = 4, dpdk: DpdkPorts | None = None) -> None:
        self._ffi, self._lib = native()
        planes = [dataplane] if isinstance(dataplane, Dataplane) else list(dataplane)
        tables = [flows] * len(planes) if flows is None or isinstance(flows, FlowTable) else list(flows)
        workers = dpdk.workers if dpdk is not None else 1
        if not 1 <= len(planes) <= MAX_WORKERS or len(planes) != workers or len(tables) != len(planes):
            raise P3Error("DP_BAD_ARGUMENT", f"{len(planes)} dataplane(s) and {len(tables)} flow table(s) for "
                          f"{workers} worker(s): give one of each per worker (at most {MAX_WORKERS})")
        if len(planes) > 1 and any(t is tables[0] for t in tables[1:]) and tables[0] is not None:
            raise P3Error("DP_BAD_ARGUMENT", "each worker needs its own flow table")
        cfg = self._ffi.new("p3dp_worker_config *")
        cfg.lan_fd, cfg.wan_fd, cfg.esp_fd, cfg.esp_family = lan_fd, wan_fd, esp_fd, esp_family
        keep = []
        if dpdk is not None:
            keep = self._dpdk_config(cfg, dpdk)
        lanes = self._ffi.new("p3dp_worker_lanes *")
        lanes.n = len(planes)
        for i, (plane, table) in enumerate(zip(planes, tables, strict=True)):
            lanes.ctx[i] = plane.ctx
            lanes.flows[i] = table.table if table is not None else self._ffi.NULL
            lanes.cpu[i] = dpdk.cpus[i] if dpdk is not None and i < len(dpdk.cpus) else -1
        # keep what the C side points at alive as long as the worker
        self._dataplane, self._routes, self._flows = planes, routes, tables
        err = self._ffi.new("int *")
        ptr = self._lib.p3dp_worker_new_lanes(lanes, routes.table, cfg, err)
        del keep
        if ptr == self._ffi.NULL:
            if dpdk is not None and err[0] in (-606, -607):
                what = "DPDK is not usable here" if err[0] == -606 else "a DPDK port cannot be used"
                raise P3Error(reason_name(err[0]), f"{what}: ports {dpdk.lan_port} (LAN) and {dpdk.wan_port} "
                              "(WAN); the reason is on stderr above (docs/dpdk.md)")
            raise P3Error("DP_BAD_ARGUMENT", "cannot create the packet worker (descriptors or memory)")
        self.dpdk = dpdk
        self._ptr: Any = ptr
        self._buf = self._ffi.new("uint8_t[]", self.MESSAGE_ROOM)
        self._info = self._ffi.new("p3dp_worker_msg *")

    def _dpdk_config(self, cfg: Any, dpdk: DpdkPorts) -> list[Any]:
        ffi = self._ffi
        lan, wan = dpdk.lan_address, dpdk.wan_address
        if lan.version != wan.version:
            raise P3Error("DPDK_PORT", f"the LAN address {lan} and the WAN address {wan} are of different families")
        keep = [ffi.new("char[]", text.encode()) for text in (
            dpdk.library or DPDK_LIBRARY, dpdk.eal_args or DEFAULT_EAL_ARGS, dpdk.lan_port, dpdk.wan_port)]
        cfg.dpdk_library, cfg.eal_args, cfg.dpdk_lan_port, cfg.dpdk_wan_port = keep
        cfg.family = wan.version
        cfg.lan_prefix_len, cfg.wan_prefix_len = lan.network.prefixlen, wan.network.prefixlen
        cfg.udp_port, cfg.mtu = dpdk.udp_port, dpdk.mtu
        cfg.lan_addr = lan.ip.packed.ljust(16, b"\0")
        cfg.wan_addr = wan.ip.packed.ljust(16, b"\0")
        for name, gateway in (("lan", dpdk.lan_gateway), ("wan", dpdk.wan_gateway)):
            if gateway is not None:
                if gateway.version != wan.version:
                    raise P3Error("DPDK_PORT", f"the {name.upper()} gateway {gateway} is not IPv{wan.version}")
                setattr(cfg, f"has_{name}_gateway", 1)
                setattr(cfg, f"{name}_gateway", gateway.packed.ljust(16, b"\0"))
        return keep

    @property
    def notify_fd(self) -> int:
        """Readable when the worker has messages for the control plane."""
        return int(self._lib.p3dp_worker_notify_fd(self._ptr))

    def start(self) -> None:
        check(self._lib.p3dp_worker_start(self._ptr), "worker start")

    def stop(self) -> None:
        self._lib.p3dp_worker_stop(self._ptr)

    def close(self) -> None:
        if self._ptr is not None:
            self._lib.p3dp_worker_free(self._ptr)
            self._ptr = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Park the worker between two bursts while the control plane changes the dataplane."""
        check(self._lib.p3dp_worker_pause(self._ptr), "worker pause")
        try:
            yield
        finally:
            self._lib.p3dp_worker_resume(self._ptr)

    def receive(self) -> list[WorkerMessage]:
        """Drain the messages waiting for the control plane."""
        messages = []
        while True:
            n = check(self._lib.p3dp_worker_recv(self._ptr, self._buf, self.MESSAGE_ROOM, self._info), "worker recv")
            if n == 0:
                return messages
            info = self._info
            family = int(info.family)
            packed = bytes(self._ffi.buffer(info.addr, 16 if family == 6 else 4))
            addr = str(ipaddress.ip_address(packed)) if family in (4, 6) else ""
            kind = KIND_NAMES.get(int(info.kind), "data")
            peer = None if info.peer == 0xFFFFFFFF else int(info.peer)
            messages.append(WorkerMessage(kind, peer, addr, int(info.port), bytes(self._ffi.buffer(self._buf, n))))

    def send(self, addr: str, port: int, data: bytes, *, via_esp: bool = False) -> None:
        """Send bytes as they are to (addr, port) through the WAN socket (IKE; control packets: send_control)."""
        family, packed = _addr_bytes(addr)
        check(self._lib.p3dp_worker_send(self._ptr, 1 if via_esp else 0, family, packed, port, data, len(data)),
              f"send to {addr}")

    def send_control(self, peer_id: int, inner: bytes) -> None:
        """Queue a control-channel packet for *peer_id*: sealed with its data SA by the worker that owns it.

        *inner* is the inner IP packet (control-key sealed, predefined IP/TCP
        header). The worker is woken, not paused; DP_TABLE_FULL when its queue
        is full.
        """
        check(self._lib.p3dp_worker_send_control(self._ptr, peer_id, inner, len(inner)),
              f"queue a control packet for peer {peer_id}")

    def send_lan(self, packet: bytes, *, wait_s: float = 0.0) -> None:
        """An IP packet into the LAN (flow termination), written by the worker: TUN or DPDK LAN port.

        With *wait_s*, a full queue is waited on (the worker empties it at
        every turn) for up to that long before DP_TABLE_FULL.
        """
        deadline = time.monotonic() + wait_s
        while True:
            rc = self._lib.p3dp_worker_send_lan(self._ptr, packet, len(packet))
            if reason_name(rc) != "DP_TABLE_FULL" or time.monotonic() >= deadline:
                check(rc, "send to the LAN")
                return
            time.sleep(QUEUE_FULL_RETRY_S)

    def set_ike_limits(self, global_rate: int, global_burst: int, source_rate: int, source_burst: int) -> None:
        """IKE messages per second (and burst) the worker queues for the control plane: all sources, each source.

        A rate of 0 turns that limit off. Pauses the worker once.
        """
        values = (global_rate, global_burst, source_rate, source_burst)
        if not all(0 <= v < 1 << 22 for v in values):
            raise P3Error("DP_BAD_ARGUMENT", f"IKE limits out of range: {values}")
        check(self._lib.p3dp_worker_set_ike_limits(self._ptr, *values), "set IKE limits")

    def set_ike_cookies(self, mode: str, version: int = 1, secret: bytes = b"") -> None:
        """IKE_SA_INIT cookies answered by the worker (RFC 7296 §2.6): "off", "under-load" or "always".

        The cookie is :func:`ike_cookie` with *secret* (1..64 octets) and
        *version*, as the responder makes it; the secret set before stays
        valid beside the new one. Pauses the worker once.
        """
        if mode not in COOKIE_MODES or not 0 <= version <= 255:
            raise P3Error("DP_BAD_ARGUMENT", f"IKE cookies {mode!r} version {version}: "
                          f"modes are {', '.join(COOKIE_MODES)}, versions 0..255")
        check(self._lib.p3dp_worker_set_ike_cookies(self._ptr, COOKIE_MODES[mode], version, secret, len(secret)),
              f"set IKE cookies ({len(secret)}-octet secret)")

    def stats(self) -> WorkerStats:
        raw = self._ffi.new("p3dp_worker_stats *")
        self._lib.p3dp_worker_get_stats(self._ptr, raw)
        return WorkerStats(**{name: int(getattr(raw, name)) for name in WorkerStats.__dataclass_fields__})


#: Worker.send_lan(wait_s=) tries this often again while the worker's queue is full (DP_TABLE_FULL).
QUEUE_FULL_RETRY_S = 0.0005
#: Worker.set_ike_cookies modes (P3DP_COOKIES_*).
COOKIE_MODES = {"off": 0, "under-load": 1, "always": 2}


def ike_cookie(secret: bytes, version: int, nonce_i: bytes, addr: str, spi_i: bytes) -> bytes:
    """The 17-octet IKE cookie the worker gives an IKE_SA_INIT request from *addr* (native/src/ike_cookie.h)."""
    ffi, lib = native()
    family, packed = _addr_bytes(addr)
    if len(spi_i) != 8 or not 0 <= version <= 255:
        raise P3Error("DP_BAD_ARGUMENT", f"SPIi of {len(spi_i)} octets (8 needed), version {version}")
    out = ffi.new("uint8_t[17]")
    check(lib.p3dp_ike_cookie(secret, len(secret), version, nonce_i, len(nonce_i), family, packed, spi_i, out),
          "IKE cookie")
    return bytes(ffi.buffer(out, 17))


# ---------------------------------------------------------------- hardware RNG

RNG_SOURCES = {"rdseed": 1, "rdrand": 2}


def rng_fill(source: str, length: int, max_retries: int) -> tuple[bytes, int]:
    """*length* octets from the CPU's RDSEED or RDRAND and the number of CF = 0 retries it took.

    P3-E605 when the CPU lacks the instruction, P3-E604 when a word still
    failed after *max_retries* retries (backends/rng/rng.c).
    """
    ffi, lib = native()
    if source not in RNG_SOURCES or not 0 < length <= 1 << 20 or not 0 <= max_retries <= 1 << 20:
        raise P3Error("RNG_UNAVAILABLE", f"bad hardware RNG request: {source} {length} octets")
    out = ffi.new("uint8_t[]", length)
    retries = ffi.new("uint64_t *")
    check(lib.p3dp_rng_fill(RNG_SOURCES[source], out, length, max_retries, retries), f"{source} of {length} octets")
    return bytes(ffi.buffer(out, length)), int(retries[0])
