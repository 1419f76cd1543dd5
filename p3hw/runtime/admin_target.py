"""The gateway as the admin server sees it (`p3hw.admin.server.AdminTarget`, docs/admin.md).

`GatewayAdmin` turns the admin verbs into calls on the peers' drivers:
forced rekeys, shutdowns, key arrays, settings changed live, and reload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from p3hw.config import Config
from p3hw.reasons import P3Error
from p3hw.runtime.peer import PeerDriver
from p3hw.runtime.reconfig import split_changed

if TYPE_CHECKING:
    from p3hw.runtime.gateway import Gateway


class GatewayAdmin:
    """`AdminTarget` for one running `Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def role(self) -> str:
        return self.gateway.role

    @property
    def config(self) -> Config:
        return self.gateway.config

    @property
    def config_path(self) -> str | None:
        return self.gateway.config_path

    def status(self) -> dict[str, Any]:
        return self.gateway.status()

    def _act(self, peer_ids: list[int], act: Callable[[PeerDriver, float], str | None]) -> dict[str, object]:
        """Run *act* on each remote named; say which were done and why not (a reason-coded line)."""
        now = time.monotonic()
        done: list[int] = []
        refused: dict[str, str] = {}
        for peer_id in peer_ids:
            driver = self.gateway.peers.get(peer_id)
            if driver is None:
                refused[str(peer_id)] = f"P3-E702 no remote {peer_id} in the configuration"
                continue
            try:
                why_not = act(driver, now)
            except P3Error as exc:
                refused[str(peer_id)] = exc.message()
                continue
            if why_not is not None:
                refused[str(peer_id)] = why_not
                continue
            done.append(peer_id)
        self.gateway.wake()
        return {"done": done, "refused": refused}

    def rekey(self, peer_ids: list[int]) -> dict[str, object]:
        """Forced rekeying (spec §2.1.1.1 Keys 2); only the primary rekeys (§2.1.6)."""
        if self.role != "primary":
            return {"done": [], "refused": {str(i): "P3-E406 only the primary initiates a rekey" for i in peer_ids}}
        return self._act(peer_ids, lambda d, now: None if d.rekey(now) else "P3-E406 a rekey is already under way")

    def shutdown(self, peer_ids: list[int]) -> dict[str, object]:
        """Session shutdown (spec §2.1.1.1 4): SHUTDOWN to the peer, connections terminated."""
        return self._act(peer_ids, lambda d, now: d.shutdown(now))

    def keyarray(self, op: str, peer_ids: list[int], regenerate: bool) -> dict[str, object]:
        """Key arrays (spec §2.1.1.1 Keys 1 and 3): generate, or flush and optionally regenerate."""
        if self.role != "primary":
            return {"done": [], "refused": {str(i): "P3-E406 key arrays are the primary's" for i in peer_ids}}
        if op not in ("generate", "flush"):
            return {"done": [], "refused": {str(i): f"P3-E700 unknown key-array operation {op!r}" for i in peer_ids}}
        action = "flush+regenerate" if op == "flush" and regenerate else op
        return self._act(peer_ids, lambda d, now: d.key_arrays(action, now))

    def apply_config(self, config: Config, changed: list[str]) -> dict[str, object]:
        """Make *config* the one in force; timers change live, the rest with the next session."""
        live, later = split_changed(changed)
        self.gateway.apply_config(config)
        return {"live": live, "on_reload": later}

    def reload(self) -> dict[str, object]:
        """Re-read the configuration file, as SIGHUP does."""
        before = len(self.gateway.peers)
        self.gateway.reload()
        return {"reloaded": True, "remotes_before": before, "remotes": len(self.gateway.peers)}
