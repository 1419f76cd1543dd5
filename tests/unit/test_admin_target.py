"""The admin verbs on a gateway's drivers (runtime/admin_target.py), without root:
real PeerDrivers over recording DataplanePorts (test_peer_driver.Pair)."""

from __future__ import annotations

from dataclasses import dataclass, field

from test_peer_driver import PEER, Pair

from p3hw.runtime.admin_target import GatewayAdmin
from p3hw.runtime.peer import PeerDriver


@dataclass
class StandIn:
    """What GatewayAdmin needs of a Gateway: its role, its drivers, and a way to wake its loop."""

    role: str
    peers: dict[int, PeerDriver]
    woken: list[bool] = field(default_factory=list)

    def wake(self) -> None:
        self.woken.append(True)


def _admin(role: str = "primary") -> tuple[GatewayAdmin, Pair, StandIn]:
    pair = Pair()
    pair.deliver()
    gateway = StandIn(role, {PEER: pair.drivers[role]})
    return GatewayAdmin(gateway), pair, gateway  # type: ignore[arg-type]


def test_forced_rekey_is_done_and_a_second_one_is_refused_while_the_first_runs() -> None:
    admin, pair, gateway = _admin()
    assert admin.rekey([PEER]) == {"done": [PEER], "refused": {}}
    again = admin.rekey([PEER])
    assert again["done"] == [] and again["refused"][str(PEER)].startswith("P3-E406 ")  # type: ignore[index]
    assert gateway.woken


def test_unknown_remote_and_remote_without_session_are_refused_with_e702() -> None:
    admin, pair, _ = _admin()
    pair.primary.shutdown(pair.now)
    result = admin.shutdown([PEER, 99])
    refused = result["refused"]
    assert result["done"] == []
    assert refused["99"] == "P3-E702 no remote 99 in the configuration"  # type: ignore[index]
    assert refused[str(PEER)].startswith("P3-E702 ") and "has no session" in refused[str(PEER)]  # type: ignore[index]


def test_a_secondary_refuses_rekeys_and_key_arrays_with_e406() -> None:
    admin, _, _ = _admin("secondary")
    assert admin.rekey([PEER])["refused"] == {str(PEER): "P3-E406 only the primary initiates a rekey"}
    assert admin.keyarray("generate", [PEER], False)["refused"] == {str(PEER): "P3-E406 key arrays are the primary's"}


def test_key_arrays_are_generated_and_an_unknown_operation_is_refused_with_e700() -> None:
    admin, pair, _ = _admin()
    assert admin.keyarray("generate", [PEER], False) == {"done": [PEER], "refused": {}}
    pair.deliver()
    session = pair.secondary.session
    assert session is not None and set(session.arrays.current) == set(session.schedules)
    bad = admin.keyarray("rotate", [PEER], False)["refused"]
    assert bad == {str(PEER): "P3-E700 unknown key-array operation 'rotate'"}
