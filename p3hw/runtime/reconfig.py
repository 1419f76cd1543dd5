"""What a new configuration changes for the running gateway (SIGHUP, `p3ctl config set`, `p3ctl reload`).

Pure functions over `p3hw.config.RemoteHost`s; the gateway carries the plan
out (docs/runtime.md "Reload").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from p3hw.config import RemoteHost

#: Settings a running session takes at once (Session.change_settings); any other change needs a new session.
LIVE_KEYWORDS = ("rekey_wait", "heartbeat_time", "heartbeat_fail")
#: Their RemoteHost attributes.
LIVE_ATTRIBUTES = ("rekey_wait_s", "heartbeat_time_s", "heartbeat_fail_s")


def split_changed(changed: list[str]) -> tuple[list[str], list[str]]:
    """The changed keys (``rekey_wait``, ``3/heartbeat_time``) that apply live, and those that wait for a session."""
    live = [key for key in changed if key.split("/", 1)[-1] in LIVE_KEYWORDS]
    return live, [key for key in changed if key not in live]


@dataclass
class ReloadPlan:
    """Remote ids: to take out (with their sessions), to bring in, and to give new timers live."""

    removed: list[int] = field(default_factory=list)
    added: list[int] = field(default_factory=list)
    retimed: list[int] = field(default_factory=list)


def only_timers_differ(old: RemoteHost, new: RemoteHost) -> bool:
    """*new* is *old* with other live timers (LIVE_ATTRIBUTES) and nothing else changed."""
    return old != new and replace(new, **{name: getattr(old, name) for name in LIVE_ATTRIBUTES}) == old


def plan_reload(old: dict[int, RemoteHost], new: dict[int, RemoteHost]) -> ReloadPlan:
    """Added and removed remotes; a remote whose timers alone changed keeps its session
    (`retimed`); one with any other change is taken out and brought back in."""
    plan = ReloadPlan()
    for remote_id, remote in old.items():
        if remote_id in new and only_timers_differ(remote, new[remote_id]):
            plan.retimed.append(remote_id)
        elif remote_id not in new or new[remote_id] != remote:
            plan.removed.append(remote_id)
    plan.added = [remote_id for remote_id in new if remote_id not in old or remote_id in plan.removed]
    return plan
