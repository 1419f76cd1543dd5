"""Key arrays: generation, delivery in chunks, the index schedule, flush and regenerate."""

from __future__ import annotations

import random

import pytest

from p3hw.crypto.keyarray import (
    ARRAY_NONCE_BYTES,
    ArrayKind,
    KeyArrayStore,
    generate_key_array,
)
from p3hw.crypto.keysource import SoftwareKeySource
from p3hw.protocol.session import KeyArrayDelivered, KeyArrayFlushed, SessionConfig
from p3hw.reasons import P3Error
from p3hw.simulators.harness import Harness

SOURCE = SoftwareKeySource()


def test_same_index_with_a_fresh_nonce_never_gives_the_same_key() -> None:
    array = generate_key_array(ArrayKind.DATA, 1, 4, SOURCE)
    nonce_a, nonce_b = SOURCE.random_bytes(ARRAY_NONCE_BYTES), SOURCE.random_bytes(ARRAY_NONCE_BYTES)
    assert array.derive(2, nonce_a, 72) != array.derive(2, nonce_b, 72)
    # ...and both sides derive the same key from the same (index, nonce).
    assert array.derive(2, nonce_a, 72) == array.derive(2, nonce_a, 72)


def test_index_outside_the_array_is_e405() -> None:
    array = generate_key_array(ArrayKind.CONTROL, 1, 4, SOURCE)
    with pytest.raises(P3Error) as caught:
        array.derive(4, bytes(ARRAY_NONCE_BYTES), 64)
    assert caught.value.code == "P3-E405"


def test_array_is_reassembled_from_chunks_in_any_order() -> None:
    array = generate_key_array(ArrayKind.DATA, 3, 100, SOURCE)
    chunks = array.chunks()
    assert len(chunks) == 4
    random.Random(5).shuffle(chunks)
    store = KeyArrayStore()
    results = [store.add_chunk(chunk) for chunk in chunks]
    assert results[:-1] == [None, None, None]
    assert results[-1] == array
    assert store.lookup(ArrayKind.DATA, 3) == array


def test_inconsistent_chunk_is_e400_and_missing_array_is_e404() -> None:
    store = KeyArrayStore()
    chunk = generate_key_array(ArrayKind.DATA, 1, 40, SOURCE).chunks()[1]
    with pytest.raises(P3Error) as caught:
        store.add_chunk({**chunk, "entries": chunk["entries"][:-1]})  # type: ignore[index]
    assert caught.value.code == "P3-E400"
    with pytest.raises(P3Error) as caught:
        store.lookup(ArrayKind.DATA, 1)
    assert caught.value.code == "P3-E404"


def _array_harness(**overrides: object) -> Harness:
    settings: dict[str, object] = {
        "rekey_wait_s": 1.0, "grace_s": 0.5, "retransmit_s": 0.5, "use_key_arrays": True, "array_size": 40,
        "data_array_time_s": 10.0, "control_array_time_s": 7.0,
    }
    settings.update(overrides)
    config = SessionConfig("primary", "aes-128-gcm", "10.255.0.1", "10.255.0.2", **settings)  # type: ignore[arg-type]
    return Harness(seed=3, primary_config=config, data_interval_s=0.01)


def _uses(harness: Harness, kind: str) -> list[tuple[float, int]]:
    assert harness.primary.session.primary is not None
    return [(at, index) for at, which, index in harness.primary.session.primary.stats.index_rekeys if which == kind]


def _assert_no_loss(harness: Harness) -> None:
    harness.quiesce()
    report = harness.report()
    assert report.data_delivered == report.data_sent
    assert report.data_rejected == {} and report.control_rejected == {}
    assert report.sessions_lost == [] and report.key_mismatch_violations == 0


def test_rekeys_name_an_index_at_the_configured_times() -> None:
    harness = _array_harness()
    harness.run_until(62.0)
    delivered = [a for a in harness.secondary.other_actions if isinstance(a, KeyArrayDelivered)]
    assert {(a.kind, a.generation) for a in delivered} == {(ArrayKind.DATA, 1), (ArrayKind.CONTROL, 1)}
    data_uses, control_uses = _uses(harness, "data"), _uses(harness, "control")
    assert [index for _, index in data_uses] == list(range(6))  # at ~10, 20, ... 60 s
    assert [index for _, index in control_uses] == list(range(8))  # at ~7, 14, ... 56 s
    for uses, period in ((data_uses, 10.0), (control_uses, 7.0)):
        assert period <= uses[0][0] < period + 1.1
        gaps = [later - earlier for (earlier, _), (later, _) in zip(uses, uses[1:], strict=False)]
        assert all(period <= gap < period + 1.1 for gap in gaps)
    assert len(harness.primary.rekeys_completed) >= 55
    for side in (harness.primary, harness.secondary):
        status = side.session.status()
        assert status.key_arrays == {"data": 1, "control": 1}
        assert status.rekeys_completed == len(harness.primary.rekeys_completed)
        assert status.inbound_p3_id == side.dataplane.installed[-1].p3_id
    # The secondary derived exactly the primary's keys from the index: nothing was lost.
    _assert_no_loss(harness)


def test_same_index_twice_installs_different_keys() -> None:
    harness = _array_harness(array_size=1, data_array_time_s=2.0, control_array_time_s=2.0)
    harness.run_until(21.0)
    data_uses = _uses(harness, "data")
    assert len(data_uses) >= 9 and {index for _, index in data_uses} == {0}
    for side in (harness.primary, harness.secondary):
        keys = [sa.key for sa in side.dataplane.installed]
        assert len(set(keys)) == len(keys)
    _assert_no_loss(harness)


def test_flush_stops_index_use_and_regenerate_resumes_it() -> None:
    harness = _array_harness()
    harness.run_until(25.0)
    harness.do(harness.primary, "flush_key_array", ArrayKind.DATA)
    harness.run_until(45.0)
    assert ArrayKind.DATA not in harness.secondary.session.arrays.current
    assert any(isinstance(a, KeyArrayFlushed) for a in harness.secondary.other_actions)
    assert all(at < 25.0 for at, _ in _uses(harness, "data"))
    assert any(at > 25.0 for at, _ in _uses(harness, "control"))  # the other array is untouched

    harness.do(harness.primary, "flush_key_array", ArrayKind.DATA, regenerate=True)
    harness.run_until(70.0)
    assert harness.secondary.session.arrays.current[ArrayKind.DATA].generation == 2
    resumed = [(at, index) for at, index in _uses(harness, "data") if at > 45.0]
    assert [index for _, index in resumed] == [0, 1]  # at ~55 and ~65 s, the new array from its start
    assert 55.0 <= resumed[0][0] < 56.1
    _assert_no_loss(harness)


def test_flush_and_regenerate_in_one_step_replaces_the_array() -> None:
    harness = _array_harness()
    harness.run_until(5.0)
    old = harness.secondary.session.arrays.current[ArrayKind.CONTROL]
    harness.do(harness.primary, "flush_key_array", ArrayKind.CONTROL, regenerate=True)
    harness.run_until(20.0)
    new = harness.secondary.session.arrays.current[ArrayKind.CONTROL]
    assert new.generation == 2 and set(new.entries).isdisjoint(old.entries)
    _assert_no_loss(harness)


def test_secondary_without_the_array_refuses_and_the_primary_retries_with_fresh_keys() -> None:
    harness = _array_harness()
    harness.run_until(9.5)
    harness.secondary.session.arrays.flush(ArrayKind.DATA, 1)  # e.g. lost by a restart
    harness.run_until(12.0)
    primary = harness.primary.session.primary
    assert primary is not None and primary.stats.rejected_attempts == 1
    assert harness.secondary.session.secondary is not None and harness.secondary.session.secondary.refused == 1
    assert len(harness.primary.rekeys_completed) >= 11  # the refused rekey was redone at once
    _assert_no_loss(harness)
