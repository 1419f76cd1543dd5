"""The PKCS#11 crypto engine on a SoftHSM2 token: keys that never leave the token, seal/open
through C_Encrypt/C_Decrypt with CKM_AES_GCM from native code, and the same failover as any
lookaside engine (docs/engines.md)."""

from __future__ import annotations

import pytest

from p3hw.dataplane import EngineParams
from p3hw.reasons import P3Error
from p3hw.simulators import softhsm
from p3hw.simulators.accelerator import (
    A_ADDR,
    A_PEER_AT_B,
    B_PEER_AT_A,
    Stream,
    arm,
    keys,
    site_pair,
    stream_packet,
)

pytestmark = pytest.mark.skipif(not softhsm.available()[0], reason=softhsm.available()[1])


@pytest.fixture(scope="module")
def token() -> softhsm.Token:
    return softhsm.create_token()


def _params(token: softhsm.Token, **extra: int) -> EngineParams:
    return EngineParams(module_path=token.module, token_label=token.label, pin=token.pin,
                        timeout_us=extra.pop("timeout_us", 2_000_000), **extra)


@pytest.mark.parametrize("cipher", ["aes-128-gcm", "aes-256-gcm"])
def test_token_output_is_byte_identical_to_aesni(token: softhsm.Token, cipher: str) -> None:
    sa = keys(cipher)
    ref_a, ref_b = site_pair("aesni", sa=sa)
    tok_a, tok_b = site_pair("pkcs11", _params(token), sa=sa)
    items = [(B_PEER_AT_A, stream_packet(i, size)) for i, size in enumerate((40, 64, 576, 1400) * 8)]
    ref, got = ref_a.seal(items), tok_a.seal(items)
    assert [s.status for s in got] == ["OK"] * len(items)
    assert [s.data for s in got] == [s.data for s in ref]
    opened = tok_b.open([(s.data, A_ADDR, 5653) for s in ref], with_ip=False)
    assert [o.data for o in opened] == [p for _, p in items]
    status = tok_a.engine_status()
    assert status.engine == "pkcs11" and status.engine_ops == len(items) and status.failovers == 0
    for dp in (tok_a, tok_b):
        dp.close()


def test_sa_keys_are_token_objects_that_cannot_be_read_out(token: softhsm.Token) -> None:
    a, b = site_pair("pkcs11", _params(token), fallback="none")
    assert a.pkcs11_sealed_keys() == (1, 1)
    assert b.pkcs11_sealed_keys() == (1, 1)
    new = keys("aes-128-gcm", p3_id=0x5A12, seed=3)
    a.add_outbound_sa(B_PEER_AT_A, new, switch_after_seq=10)     # pending: a second key in the token
    b.add_inbound_sa(A_PEER_AT_B, new)
    assert a.pkcs11_sealed_keys() == (2, 2) and b.pkcs11_sealed_keys() == (2, 2)
    stream = Stream(a, b)
    stream.burst(32)                                              # crosses the switch at seq 10
    assert stream.report.clean and a.outbound_id(B_PEER_AT_A) == 0x5A12
    assert a.pkcs11_sealed_keys() == (1, 1)                       # the retired SA's key is destroyed
    for dp in (a, b):
        dp.close()


@pytest.mark.parametrize("fault", ["error", "corrupt", "gone"])
@pytest.mark.parametrize("side", ["seal", "open"])
def test_token_fault_fails_over_to_aesni_without_losing_a_packet(token: softhsm.Token, fault: str,
                                                                 side: str) -> None:
    a, b = site_pair("pkcs11", _params(token))
    stream = Stream(a, b)
    stream.burst(32)
    faulty = a if side == "seal" else b
    arm(faulty, fault, after_ops=5, count=2)
    for _ in range(3):
        stream.burst(32)
    assert stream.report.clean and stream.report.delivered == 4 * 32
    status = faulty.engine_status()
    assert status.on_fallback and status.reason == "P3-E609" and status.last_fault == fault
    for dp in (a, b):
        dp.close()


def test_forged_packet_on_the_token_is_rejected_without_failing_it(token: softhsm.Token) -> None:
    a, b = site_pair("pkcs11", _params(token))
    wire = [s.data for s in a.seal([(B_PEER_AT_A, stream_packet(i, 300)) for i in range(4)])]
    forged = bytearray(wire[1])
    forged[-3] ^= 0x40
    wire[1] = bytes(forged)
    opened = b.open([(w, A_ADDR, 5653) for w in wire], with_ip=False)
    assert [o.status for o in opened] == ["OK", "DP_AUTH_FAILED", "OK", "OK"]
    status = b.engine_status()
    assert status.forged_opens == 1 and status.failovers == 0 and not status.on_fallback
    for dp in (a, b):
        dp.close()


def test_wrong_pin_unknown_token_and_non_pkcs11_file_are_reason_coded() -> None:
    # A token of its own: PKCS#11 login is per application and token, so a
    # token another engine of this process is logged in to accepts any PIN.
    token = softhsm.create_token()
    cases = {
        "PKCS11_PIN": EngineParams(module_path=token.module, token_label=token.label, pin="not-the-pin"),
        "PKCS11_TOKEN": EngineParams(module_path=token.module, token_label="no-such-token", pin=token.pin),
        "PKCS11_MODULE": EngineParams(module_path="/etc/hostname", token_label=token.label, pin=token.pin),
    }
    for reason, params in cases.items():
        with pytest.raises(P3Error) as err:
            site_pair("pkcs11", params)
        assert err.value.reason.name == reason
    with pytest.raises(P3Error) as err:
        site_pair("pkcs11", EngineParams(module_path="/nonexistent/libpkcs11.so", token_label="x", pin="1"))
    assert err.value.reason.name == "PKCS11_MODULE"
