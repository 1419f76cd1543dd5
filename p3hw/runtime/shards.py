"""Several packet workers: one dataplane and one flow table per worker (docs/dpdk.md "Several workers").

On DPDK ports a gateway may run ``dpdk_workers`` worker threads. Worker i
owns the peers with ``peer_id % n == i``: their SAs, sequence numbers and
replay windows live in worker i's context only, and packets another worker
receives for them are handed over (native/src/worker.c). The gateway talks
to the set through the same calls as to one :class:`Dataplane`; each call
about a peer goes to its shard, counters are summed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from p3hw.crypto.keys import SaKeys, SessionKeys
from p3hw.dataplane import (
    Counters,
    Dataplane,
    EngineParams,
    EngineStatus,
    FlowTable,
    PeerConfig,
    Sealed,
    Terminated,
)


class ShardedDataplane:
    """One :class:`Dataplane` per worker; peer ``p`` lives in shard ``p % n``."""

    def __init__(self, shards: Sequence[Dataplane]) -> None:
        if not shards:
            raise ValueError("at least one shard")
        self.shards = list(shards)

    def shard(self, peer_id: int) -> Dataplane:
        return self.shards[Dataplane.lane_of(peer_id, len(self.shards))]

    # -- the whole gateway
    def set_local_address(self, addr: str) -> None:
        for dp in self.shards:
            dp.set_local_address(addr)

    def set_engine(self, kind: str, params: EngineParams | None = None, fallback: str = "aesni") -> None:
        for dp in self.shards:
            dp.set_engine(kind, params, fallback)

    def counters(self) -> Counters:
        total = Counters()
        for dp in self.shards:
            c = dp.counters()
            for f in fields(Counters):
                if f.name != "drops":
                    setattr(total, f.name, getattr(total, f.name) + getattr(c, f.name))
            for name, n in c.drops.items():
                total.drops[name] = total.drops.get(name, 0) + n
        return total

    def engine_status(self) -> EngineStatus:
        """The shards' engines summed; failed (on the fallback) when any shard's engine is."""
        statuses = [dp.engine_status() for dp in self.shards]
        failed = next((s for s in statuses if s.on_fallback), None)
        first = failed or statuses[0]
        faults: dict[str, int] = {}
        for s in statuses:
            for kind, n in s.faults.items():
                faults[kind] = faults.get(kind, 0) + n
        return EngineStatus(
            engine=first.engine, fallback=first.fallback, on_fallback=failed is not None,
            reason=next((s.reason for s in statuses if s.reason), None), last_fault=first.last_fault,
            failovers=sum(s.failovers for s in statuses), recoveries=sum(s.recoveries for s in statuses),
            rerun_ops=sum(s.rerun_ops for s in statuses), engine_ops=sum(s.engine_ops for s in statuses),
            fallback_ops=sum(s.fallback_ops for s in statuses), faults=faults,
            forged_opens=sum(s.forged_opens for s in statuses))

    # -- one peer: its shard
    def add_peer(self, cfg: PeerConfig) -> None:
        self.shard(cfg.peer_id).add_peer(cfg)

    def remove_peer(self, peer_id: int) -> None:
        self.shard(peer_id).remove_peer(peer_id)

    def install_session(self, peer_id: int, keys: SessionKeys) -> None:
        self.shard(peer_id).install_session(peer_id, keys)

    def set_hp_keys(self, peer_id: int, hp_out: bytes | None = None, hp_in: bytes | None = None) -> None:
        self.shard(peer_id).set_hp_keys(peer_id, hp_out, hp_in)

    def add_inbound_sa(self, peer_id: int, sa: SaKeys) -> None:
        self.shard(peer_id).add_inbound_sa(peer_id, sa)

    def add_outbound_sa(self, peer_id: int, sa: SaKeys, switch_after_seq: int = 0) -> None:
        self.shard(peer_id).add_outbound_sa(peer_id, sa, switch_after_seq)

    def remove_sa(self, direction: str, peer_id: int, p3_id: int) -> None:
        self.shard(peer_id).remove_sa(direction, peer_id, p3_id)

    def outbound_id(self, peer_id: int) -> int:
        return self.shard(peer_id).outbound_id(peer_id)

    def sa_counters(self, direction: str, peer_id: int, p3_id: int) -> Counters:
        return self.shard(peer_id).sa_counters(direction, peer_id, p3_id)

    def seal(self, items: Sequence[tuple[int, bytes]], *, with_ip: bool = False,
             dummy: bool = False) -> list[Sealed]:
        """Each (peer, packet) sealed by its peer's shard; results in the order given."""
        results: list[Sealed | None] = [None] * len(items)
        by_shard: dict[int, list[int]] = {}
        for i, (peer_id, _) in enumerate(items):
            by_shard.setdefault(Dataplane.lane_of(peer_id, len(self.shards)), []).append(i)
        for index, positions in by_shard.items():
            sealed = self.shards[index].seal([items[i] for i in positions], with_ip=with_ip, dummy=dummy)
            for i, s in zip(positions, sealed, strict=True):
                results[i] = s
        return [s for s in results if s is not None]


class ShardedFlows:
    """One :class:`FlowTable` per worker; a peer's flows are in its shard's table."""

    def __init__(self, shards: Sequence[FlowTable]) -> None:
        self.shards = list(shards)

    def shard(self, peer_id: int) -> FlowTable:
        return self.shards[Dataplane.lane_of(peer_id, len(self.shards))]

    def forget(self, peer: int) -> int:
        return self.shard(peer).forget(peer)

    def terminate(self, peer: int, now_ms: int) -> tuple[list[bytes], Terminated]:
        return self.shard(peer).terminate(peer, now_ms)
