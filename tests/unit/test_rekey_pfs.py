"""PFS rekeys: the installed keys are the delivered material mixed with the
X25519 shared secret, exactly as docs/protocol.md §4 states."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from p3hw.crypto.keys import SaKeys, material_length
from p3hw.crypto.keysource import SoftwareKeySource
from p3hw.crypto.prf import prf_hmac_sha256, prf_plus
from p3hw.protocol.control import ControlChannel, ResponseReceived, SendControlPacket
from p3hw.protocol.rekey import InstallInboundSa
from p3hw.protocol.session import Session, SessionConfig
from p3hw.simulators.harness import make_initial_keys
from p3hw.wire.control import MsgType

CIPHER = "aes-256-gcm"
P_ADDR, S_ADDR = "10.255.0.1", "10.255.0.2"


def _rekey_secondary(fields: dict[str, object]) -> tuple[list[object], ResponseReceived]:
    source = SoftwareKeySource()
    keys_p, keys_s = make_initial_keys(CIPHER, source)
    secondary = Session(SessionConfig("secondary", CIPHER, S_ADDR, P_ADDR), keys_s, source, now=0.0)
    primary = ControlChannel(P_ADDR, S_ADDR, keys_p.control_out_key, keys_p.control_in_key)
    primary.send_request(MsgType.REKEY, fields, now=0.0)  # type: ignore[arg-type]
    [packet] = primary.events()
    secondary.receive_control_packet(packet.packet, now=0.0)
    actions = secondary.events()
    [answer] = [e for a in actions if isinstance(a, SendControlPacket) for e in primary.receive_packet(a.packet, 0.0)]
    assert isinstance(answer, ResponseReceived)
    return actions, answer


def test_pfs_rekey_installs_material_mixed_with_the_shared_secret() -> None:
    sa_bytes = material_length(CIPHER)
    data = bytes(range(2 * sa_bytes))
    private = X25519PrivateKey.generate()
    share = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    actions, answer = _rekey_secondary({
        "rekey_id": 7, "new_inbound_id": 900, "data_material": data, "control_material": bytes(64), "pfs_share": share,
    })
    status = answer.response
    assert status.int_field("status") == 0
    peer_share = status.bytes_field("pfs_share")
    assert peer_share is not None
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer_share))
    mixed = prf_plus(prf_hmac_sha256, shared, b"P3 pfs data" + struct.pack("!I", 7) + data, len(data))
    [install] = [a for a in actions if isinstance(a, InstallInboundSa)]
    inbound_id = status.int_field("new_inbound_id")
    assert install.sa == SaKeys.from_material(inbound_id, CIPHER, mixed[:sa_bytes])
    # Without the shared secret the delivered material alone is not the key.
    assert install.sa.key != SaKeys.from_material(inbound_id, CIPHER, data[:sa_bytes]).key


def test_rekey_without_pfs_installs_the_delivered_keys_and_sends_no_share() -> None:
    sa_bytes = material_length(CIPHER)
    data = bytes(range(2 * sa_bytes))
    actions, answer = _rekey_secondary({
        "rekey_id": 1, "new_inbound_id": 900, "data_material": data, "control_material": bytes(64),
    })
    assert answer.response.get("pfs_share") is None
    [install] = [a for a in actions if isinstance(a, InstallInboundSa)]
    assert install.sa == SaKeys.from_material(answer.response.int_field("new_inbound_id"), CIPHER, data[:sa_bytes])


def test_low_order_x25519_share_is_refused() -> None:
    actions, answer = _rekey_secondary({
        "rekey_id": 1, "new_inbound_id": 900, "data_material": bytes(2 * material_length(CIPHER)),
        "control_material": bytes(64), "pfs_share": bytes(32),  # the all-zero point
    })
    assert answer.response.int_field("status") == 400
    assert not any(isinstance(a, InstallInboundSa) for a in actions)
