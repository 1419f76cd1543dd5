"""What a reload does to each remote: a changed timer keeps the session, any other change replaces it."""

from __future__ import annotations

from dataclasses import replace

from p3hw.config import RemoteHost, parse_config
from p3hw.runtime.reconfig import plan_reload, split_changed


def _remote(remote_id: int) -> RemoteHost:
    config = parse_config(f"localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\nlocalend\n"
                          f"{remote_id}/address = 203.0.113.{remote_id}\n{remote_id}/subnet1 = 10.{remote_id}.0.0\n"
                          f"{remote_id}/mask1 = 255.255.0.0\n")
    return config.remote(remote_id)


def test_new_timers_keep_the_remote_and_its_session() -> None:
    old = {1: _remote(1), 2: _remote(2)}
    new = {1: replace(old[1], heartbeat_time_s=7.0, heartbeat_fail_s=45.0), 2: replace(old[2], rekey_wait_s=60.0)}
    plan = plan_reload(old, new)
    assert (plan.removed, plan.added, sorted(plan.retimed)) == ([], [], [1, 2])


def test_any_other_change_replaces_the_remote_and_unchanged_ones_are_left_alone() -> None:
    old = {1: _remote(1), 2: _remote(2), 3: _remote(3)}
    new = {1: replace(old[1], port=4500, heartbeat_time_s=7.0), 2: old[2], 4: _remote(4)}
    plan = plan_reload(old, new)
    assert (sorted(plan.removed), sorted(plan.added), plan.retimed) == ([1, 3], [1, 4], [])


def test_config_set_keys_split_into_live_and_next_session() -> None:
    live, later = split_changed(["rekey_wait", "3/heartbeat_time", "3/cipher", "array_size"])
    assert (live, later) == (["rekey_wait", "3/heartbeat_time"], ["3/cipher", "array_size"])
