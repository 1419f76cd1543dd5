"""The versions of the two ends of a session, exchanged in CONFIG (issue 14, docs/install.md).

The primary's CONFIG settings (JSON: its heartbeat timers) carry ``version`` too; a secondary that
sees one answers with a CONFIG of its own holding only ``version``. Each side shows the other's as
``peer_version`` in its status, so a mixed-version pair is visible. Ends without this simply send no
``version`` (and ignore keys they do not know): the field is then null.
"""

from __future__ import annotations

import json

import p3hw


def primary_settings(heartbeat_time_s: float, heartbeat_fail_s: float) -> str:
    """The primary's CONFIG settings: its liveness timers and its version."""
    return json.dumps({"heartbeat_time_s": heartbeat_time_s, "heartbeat_fail_s": heartbeat_fail_s,
                       "version": p3hw.__version__})


def version_in(settings: str) -> str | None:
    """The peer's version in CONFIG settings, or None (an older peer, or not JSON)."""
    try:
        value = json.loads(settings).get("version")
    except (ValueError, AttributeError):
        return None
    return value[:64] if isinstance(value, str) else None


def secondary_answer(settings: str) -> str | None:
    """What a secondary sends back for the primary's CONFIG: its own version, when the primary sent one."""
    if version_in(settings) is None:
        return None
    return json.dumps({"version": p3hw.__version__})
