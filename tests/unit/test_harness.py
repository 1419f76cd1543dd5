"""The simulation harness itself: what crosses its links are real P3 packets
sealed by one native dataplane and opened by the other, and its counts of
loss, duplication, reordering and refusals are the dataplanes' own."""

from __future__ import annotations

import struct

import pytest

from p3hw.constants import DEFAULT_PORT
from p3hw.reasons import P3Error
from p3hw.simulators.harness import (
    IKE_SA_INIT,
    STREAM_MAGIC,
    DropIke,
    Harness,
    WirePacket,
    stream_packet,
    stream_seq_of,
)
from p3hw.simulators.link import LinkConfig


class Recorder:
    """A link rule that drops nothing and keeps a copy of every packet sent."""

    def __init__(self) -> None:
        self.packets: list[WirePacket] = []

    def __call__(self, packet: WirePacket) -> bool:
        self.packets.append(packet)
        return False


def test_the_link_carries_sealed_p3_packets_never_the_inner_ones() -> None:
    recorder = Recorder()
    harness = Harness(seed=1, handshake=True, drop_rules=[recorder])
    harness.run_until(0.5)
    harness.quiesce()
    kinds = {p.kind for p in recorder.packets}
    assert kinds == {"ike", "data", "control"}
    for packet in recorder.packets:
        wire = packet.data
        assert wire[0] == 0x45 and wire[9] == 17  # outer IPv4 + UDP, as the dataplane writes it
        assert struct.unpack("!HH", wire[20:24]) == (DEFAULT_PORT, DEFAULT_PORT)
        if packet.kind == "ike":
            assert wire[28:32] == bytes(4)  # the non-ESP marker (RFC 3948)
            continue
        assert wire[28:32] == b"\x01\x00\x00\x00"  # P3 Flags: version 1
        assert STREAM_MAGIC not in wire and b"10.255.0" not in wire  # payload and inner headers encrypted
    # Control messages and data of the same size class are the same length on the wire (spec §2.1.5).
    sizes = {p.kind: {len(q.data) for q in recorder.packets if q.kind == p.kind} for p in recorder.packets}
    assert sizes["data"] & sizes["control"]
    assert harness.report().dataplane_drops == {}


def test_a_bit_flipped_on_the_wire_is_refused_by_the_receiving_dataplane() -> None:
    harness = Harness(seed=2, handshake=True)
    flipped: list[int] = []

    def flip_one_ciphertext_bit(packet: WirePacket) -> WirePacket:
        if packet.kind != "data" or flipped:
            return packet
        flipped.append(packet.stream_seq)
        data = bytearray(packet.data)
        data[28 + 16 + 40] ^= 0x04  # inside the ciphertext, past the header-protection sample
        return WirePacket(bytes(data), packet.kind, stream_seq=packet.stream_seq)

    harness.to_primary.alter_rules.append(flip_one_ciphertext_bit)
    harness.run_until(0.2)
    harness.quiesce()
    report = harness.report()
    assert len(flipped) == 1
    assert report.data_rejected == {"DP_AUTH_FAILED": 1}
    assert report.dataplane_drops == {"DP_AUTH_FAILED": 1}  # the dataplane's counter agrees
    assert report.data_delivered == report.data_sent - 1
    assert report.corrupted == 0


def test_link_duplicates_are_refused_as_replays_and_delivered_once() -> None:
    duplicating = LinkConfig(duplicate=0.2)
    harness = Harness(seed=3, to_secondary=duplicating, to_primary=duplicating)
    harness.run_until(2.0)
    harness.quiesce()
    report = harness.report()
    assert report.data_duplicated_by_link > 100
    assert report.data_rejected == {"DP_REPLAY": report.data_duplicated_by_link}
    assert report.data_delivered == report.data_sent
    assert report.data_dropped_by_link == 0
    assert set(report.dataplane_drops) == {"DP_REPLAY"}


def test_link_loss_and_reordering_are_counted_apart_from_the_dataplane() -> None:
    lossy = LinkConfig(loss=0.1, reorder=0.1, jitter_s=0.002)
    harness = Harness(seed=4, to_secondary=lossy, to_primary=lossy)
    harness.run_until(2.0)
    harness.quiesce()
    report = harness.report()
    dropped = harness.to_secondary.stats.dropped_random + harness.to_primary.stats.dropped_random
    assert 0 < report.data_dropped_by_link <= dropped  # the rest were control packets
    assert report.data_delivered + report.data_dropped_by_link == report.data_sent
    assert report.data_out_of_order > 0 and report.rekey_out_of_order == 0  # all the link's doing
    assert report.data_rejected == {} and report.dataplane_drops == {}


def test_a_lost_ike_sa_init_request_is_retransmitted_and_the_exchange_completes() -> None:
    rule = DropIke(IKE_SA_INIT, response=False)
    harness = Harness(seed=5, handshake=True, drop_rules=[rule])
    assert rule.dropped == 1
    assert [d.time_s for d in harness.ike_capture][:2] == [0.0, 1.0]  # resent after the first 1 s timeout
    assert len(harness.ike_capture) == 5
    harness.run_for(0.5)
    assert harness.report().data_delivered > 0


def test_a_wrong_pre_shared_key_stops_the_harness_with_the_reason_code() -> None:
    with pytest.raises(P3Error) as raised:
        Harness(seed=6, handshake=True, psk=b"the primary's key", secondary_psk=b"another key")
    assert raised.value.code == "P3-E303"


def test_stream_packets_carry_their_counter() -> None:
    for src, dst in (("10.1.0.10", "10.2.0.10"), ("fd00:1::10", "fd00:2::10")):
        packet = stream_packet(src, dst, 123_456_789)
        assert stream_seq_of(packet) == 123_456_789
    assert stream_seq_of(b"") is None and stream_seq_of(bytes(60)) is None
