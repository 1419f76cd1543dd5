"""Several workers' dataplanes behind one face (p3hw/runtime/shards.py, docs/dpdk.md "Several workers")."""

from __future__ import annotations

import os

from p3hw.crypto.keys import SaKeys, material_length
from p3hw.dataplane import Dataplane, FlowTable, PeerConfig
from p3hw.runtime.shards import ShardedDataplane, ShardedFlows

CIPHER = "aes-128-gcm"
LOCAL = "192.0.2.1"


def sa(p3_id: int) -> SaKeys:
    return SaKeys.from_material(p3_id, CIPHER, os.urandom(material_length(CIPHER)))


def inner(n: int) -> bytes:
    size = 60
    return bytes([0x45, 0, 0, size, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 1, 0, 2, 10, 2, 0, n]) + bytes(size - 20)


def sharded(n: int = 2) -> ShardedDataplane:
    planes = ShardedDataplane([Dataplane() for _ in range(n)])
    for peer in (2, 3, 4):
        planes.add_peer(PeerConfig(peer, LOCAL, f"198.51.100.{peer}"))
        planes.set_hp_keys(peer, hp_out=bytes(16), hp_in=bytes(16))
        planes.add_outbound_sa(peer, sa(0x100 + peer))
    return planes


def test_each_peer_lives_in_the_shard_its_id_names_and_nowhere_else() -> None:
    planes = sharded()
    assert [planes.shard(p) is planes.shards[p % 2] for p in (2, 3, 4)] == [True, True, True]
    # Sealing for peer 3 works in shard 1; shard 0 has never heard of it.
    assert planes.shards[1].seal([(3, inner(1))])[0].status == "OK"
    assert planes.shards[0].seal([(3, inner(1))])[0].status != "OK"
    assert planes.outbound_id(3) == 0x103 and planes.outbound_id(4) == 0x104


def test_a_mixed_batch_is_sealed_by_each_peers_shard_and_returned_in_order() -> None:
    planes = sharded()
    items = [(2, inner(1)), (3, inner(2)), (4, inner(3)), (3, inner(4))]
    sealed = planes.seal(items)
    assert [s.status for s in sealed] == ["OK"] * 4
    assert [s.p3_id for s in sealed] == [0x102, 0x103, 0x104, 0x103]
    assert [s.seq for s in sealed] == [1, 1, 1, 2]


def test_counters_are_the_sum_of_the_shards() -> None:
    planes = sharded()
    planes.seal([(2, inner(1)), (3, inner(2)), (3, inner(3))])
    planes.shards[0].seal([(9, inner(4))])              # no such peer: a drop in shard 0
    total = planes.counters()
    assert total.sealed_packets == 3
    assert total.sealed_packets == sum(s.counters().sealed_packets for s in planes.shards)
    assert total.dropped == 1


def test_engine_status_is_one_engine_across_the_shards() -> None:
    planes = sharded(3)
    planes.seal([(2, inner(1)), (3, inner(2)), (4, inner(3))])
    status = planes.engine_status()
    assert status.engine == "aesni" and not status.on_fallback and status.failovers == 0
    assert status.engine_ops == sum(s.engine_status().engine_ops for s in planes.shards) > 0


def test_flows_of_a_peer_are_found_in_its_shards_table() -> None:
    flows = ShardedFlows([FlowTable(64), FlowTable(64)])
    tcp = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 2, 10, 3, 0, 9,
                 0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0])
    flows.shard(3).observe(3, tcp, True, 1000)
    packets, done = flows.terminate(3, 2000)
    assert done.tcp_flows_reset == 1 and len(packets) == 1
    assert flows.shards[0].terminate(3, 2000)[1].tcp_flows_reset == 0
