"""A real tunnel with key_generation = 2 on a SoftHSM2 token: the token's objects account for every rekey.

The daemons run in network namespaces (simulators/deployment.py). The
primary generates each rekey's data and control material in the token
(docs/hardware.md); after the run the test lists the token's keys with its
own session and checks that the token generated them (CKA_LOCAL) and that
their number is exactly two per rekey the primary started — no key was made
anywhere else, and the log shows no fallback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from p3hw.backends.pkcs11.keysource import token_keys
from p3hw.backends.pkcs11.token import TokenPool
from p3hw.simulators import softhsm

pytestmark = [pytest.mark.hsm, pytest.mark.root, pytest.mark.netns, pytest.mark.slow,
              pytest.mark.skipif(not softhsm.available()[0], reason=softhsm.available()[1])]

GATEWAY = Path(__file__).resolve().parents[2] / "p3hw" / "runtime" / "gateway.py"
# The runtime owner wires make_key_source into the gateway; until then this test has nothing to check.
WIRED = "make_key_source" in GATEWAY.read_text()


def rekeys_completed(deployment: object) -> int:
    status = deployment.peer_status(0)  # type: ignore[attr-defined]
    return int(status.get("rekeys_completed", 0)) if status else 0


@pytest.mark.skipif(not WIRED, reason="p3hw/runtime/gateway.py does not use make_key_source yet")
def test_tunnel_rekeys_with_keys_generated_in_the_token() -> None:
    from p3hw.simulators.deployment import Deployment, Options
    from p3hw.simulators.netns import Topology

    token = softhsm.create_token()        # sets SOFTHSM2_CONF, which the daemons inherit
    work = Path(tempfile.mkdtemp(prefix="p3hw-hsm-tunnel-"))
    pin = token.write_pin_file(work)
    lines = ["key_generation = 2", f"pkcs11_module = {token.module}", f"pkcs11_token = {token.label}",
             f"pkcs11_pin_file = {pin}", "key_fallback = none"]
    try:
        with Topology.two_site() as topo:
            deployment = Deployment(topo, work, Options(rekey_wait_s=1, pfs=0, extra_primary_lines=lines))
            with deployment:
                deployment.wait_established(20)
                received = topo.ping(topo.a.lan_ns, topo.b.host4, count=5).received
                deployment.wait(lambda: rekeys_completed(deployment) >= 3, 30, "three rekeys")
                completed = rekeys_completed(deployment)
                deployment.stop_daemon(0)
                primary_log = deployment.daemons[0].log()
        assert received == 5
        auditor = TokenPool(token.module, token.label, token.pin)
        try:
            keys = token_keys(auditor)
        finally:
            auditor.close()
        assert keys and all(key.local for key in keys)
        # Two token keys per rekey started (data and control material); more may have started after the
        # status was read.
        assert len(keys) >= 2 * completed and len(keys) % 2 == 0
        assert "P3-E60" not in primary_log
    finally:
        try:
            token.delete()
        except Exception:  # noqa: BLE001, S110 - best-effort cleanup of a temp token
            pass
