"""Session recovery (spec §2.1.7): termination, syslog, and the secondary's retry schedule."""

from __future__ import annotations

import pytest

from p3hw.protocol.recovery import (
    Reconnect,
    Recovery,
    ScheduleReconnect,
    SyslogMessage,
    TerminateEnterpriseConnections,
    reconnect_wait_s,
)


def test_secondary_retry_schedule_is_5_10_15_up_to_60_then_every_minute() -> None:
    recovery = Recovery("secondary", "198.51.100.1")
    now = 1000.0
    recovery.session_lost(now, "P3-E500", "no heartbeat answer", {})
    attempts_at = []
    for _ in range(15):
        timer = recovery.get_timer()
        assert timer is not None
        recovery.events()
        recovery.handle_timer(timer - 0.001)
        assert recovery.events() == []  # never early
        recovery.handle_timer(timer)
        [reconnect] = recovery.events()
        assert isinstance(reconnect, Reconnect)
        attempts_at.append(timer)
        now = timer + 2.0  # the attempt takes 2 s and fails
        recovery.connect_failed(now, "IKE_SA_INIT unanswered")
    waits = [recovery.waits_s[i] for i in range(15)]
    assert waits == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60, 60, 60]
    assert attempts_at[0] == 1005.0
    assert attempts_at[1] == 1005.0 + 2.0 + 10.0


@pytest.mark.parametrize("failures, wait", [(0, 5), (1, 10), (10, 55), (11, 60), (12, 60), (500, 60)])
def test_reconnect_wait(failures: int, wait: float) -> None:
    assert reconnect_wait_s(failures) == wait


def test_loss_terminates_connections_and_logs_every_known_fact() -> None:
    recovery = Recovery("secondary", "198.51.100.1")
    recovery.session_lost(
        42.5, "P3-E402", "SWITCH of rekey 7 unanswered after 4 retries",
        {"rekeys_completed": 6, "control_sent": 31, "peer_p3_address": "10.255.0.1"},
    )
    actions = recovery.events()
    assert actions[0] == TerminateEnterpriseConnections("198.51.100.1", "P3-E402")
    syslog = actions[1]
    assert isinstance(syslog, SyslogMessage) and syslog.severity == "err" and syslog.reason_code == "P3-E402"
    for fact in ("P3-E402", "SWITCH of rekey 7", "peer=198.51.100.1", "role=secondary", "time_s=42.500",
                 "rekeys_completed=6", "control_sent=31", "peer_p3_address=10.255.0.1", "four retries"):
        assert fact in syslog.message
    assert actions[2] == ScheduleReconnect(47.5, 5.0, 1)


def test_primary_terminates_and_logs_but_never_reconnects() -> None:
    recovery = Recovery("primary", "203.0.113.9")
    recovery.session_lost(10.0, "P3-E500", "no heartbeat answer", {})
    actions = recovery.events()
    assert [type(a) for a in actions] == [TerminateEnterpriseConnections, SyslogMessage]
    assert recovery.get_timer() is None
    recovery.connect_failed(11.0, "n/a")
    assert recovery.events() == []


def test_successful_reconnect_resets_the_schedule() -> None:
    recovery = Recovery("secondary", "198.51.100.1")
    recovery.session_lost(0.0, "P3-E500", "lost", {})
    recovery.handle_timer(5.0)
    recovery.connect_failed(6.0, "timeout")
    recovery.handle_timer(16.0)
    recovery.connected(17.0)
    recovery.events()
    recovery.session_lost(100.0, "P3-E500", "lost again", {})
    actions = recovery.events()
    assert actions[-1] == ScheduleReconnect(105.0, 5.0, 1)


def test_failed_attempt_is_logged_with_e503_and_next_wait() -> None:
    recovery = Recovery("secondary", "198.51.100.1")
    recovery.session_lost(0.0, "P3-E500", "lost", {})
    recovery.handle_timer(5.0)
    recovery.events()
    recovery.connect_failed(6.0, "IKE_SA_INIT unanswered")
    syslog, schedule = recovery.events()
    assert isinstance(syslog, SyslogMessage) and syslog.reason_code == "P3-E503"
    assert "next in 10 s" in syslog.message and "IKE_SA_INIT unanswered" in syslog.message
    assert schedule == ScheduleReconnect(16.0, 10.0, 2)
