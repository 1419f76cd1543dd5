"""FIPS mode (docs/fips.md): approved algorithms only, self-tests before anything opens."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_handshake import make_pair, run_handshake
from test_harness_rekey import P_ADDR, S_ADDR, assert_nothing_lost

from p3hw import fips
from p3hw.config import ConfigErrors, parse_config
from p3hw.crypto.keysource import SoftwareKeySource
from p3hw.crypto.prf import PRF_AES128_XCBC
from p3hw.protocol.handshake import HandshakeFailed, IkeProposalConfig
from p3hw.protocol.session import SessionConfig
from p3hw.reasons import P3Error
from p3hw.simulators.harness import Harness
from p3hw.wire.ike import DH_CURVE25519, DH_ECP_256, DH_ECP_384

PRIMARY = ("localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\n{local}localend\n"
           "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")


def local(lines: str = ""):  # noqa: ANN201 - LocalHost
    return parse_config(PRIMARY.format(local=lines), filename="fips.conf").local


def test_fips_mode_offers_only_approved_groups_and_prfs_by_default() -> None:
    assert local("fips = 1\n").ike_groups == ("ecp256", "ecp384")
    assert local("fips = 1\n").ike_prfs == ("hmac-sha256", "cmac")
    assert local("fips = 1\n").ike_group_ids == (DH_ECP_256, DH_ECP_384)
    # Without it nothing changes.
    assert local().ike_groups == ("x25519", "ecp256") and local().fips == 0


@pytest.mark.parametrize(("line", "word"), [("ike_groups = ecp256, x25519", "x25519"), ("ike_prfs = xcbc", "xcbc")])
def test_fips_mode_refuses_an_unapproved_algorithm_on_its_line(line: str, word: str) -> None:
    with pytest.raises(ConfigErrors) as caught:
        local(f"fips = 1\n{line}\n")
    [error] = caught.value.errors
    assert error.code == "P3-E123" and error.line == 6 and word in error.detail
    assert "fips.conf:6" in error.message()


def test_algorithm_lists_take_known_words_once() -> None:
    assert local("ike_groups = ECP384,ecp256\n").ike_group_ids == (DH_ECP_384, DH_ECP_256)
    for bad in ("ike_groups = modp2048", "ike_prfs = cmac,cmac", "ike_groups ="):
        with pytest.raises(ConfigErrors) as caught:
            local(bad + "\n")
        assert caught.value.errors[0].code in ("P3-E104", "P3-E116")


FIPS_IKE = IkeProposalConfig(dh_groups=(DH_ECP_384, DH_ECP_256), prf_ids=(5, 8))


def test_fips_pair_negotiates_ecp384_and_rekeys_with_ecp256_pfs_losing_nothing() -> None:
    config = SessionConfig("primary", "aes-256-gcm", P_ADDR, S_ADDR, rekey_wait_s=0.5, grace_s=0.2, pfs=True,
                           pfs_group="ecp256", retransmit_s=0.5)
    harness = Harness(seed=3, primary_config=config, handshake=True, ike_proposals=FIPS_IKE, data_interval_s=0.005)
    assert harness.handshake_results is not None
    assert all(r.dh_group == DH_ECP_384 for r in harness.handshake_results)
    harness.run_until(3.0)
    harness.quiesce()
    report = harness.report()
    assert report.rekeys_completed >= 4
    assert_nothing_lost(report)


def test_fips_responder_refuses_an_x25519_only_initiator_with_no_proposal_chosen() -> None:
    run = run_handshake(*make_pair(initiator_proposals=IkeProposalConfig(dh_groups=(DH_CURVE25519,)),
                                   responder_proposals=FIPS_IKE))
    ini, res = run.initiator_result, run.responder_result
    assert isinstance(ini, HandshakeFailed) and isinstance(res, HandshakeFailed)
    assert ini.reason_code == res.reason_code == "P3-E302"


def test_fips_responder_refuses_an_xcbc_only_initiator() -> None:
    run = run_handshake(*make_pair(initiator_proposals=IkeProposalConfig(prf_ids=(PRF_AES128_XCBC,)),
                                   responder_proposals=FIPS_IKE))
    assert isinstance(run.responder_result, HandshakeFailed) and run.responder_result.reason_code == "P3-E302"


def config_for_tests():  # noqa: ANN201 - Config
    return parse_config(PRIMARY.format(local="fips = 1\n"), filename="fips.conf")


def test_power_on_self_tests_pass_and_name_every_algorithm_and_cipher() -> None:
    report = fips.power_on_self_tests(config_for_tests(), SoftwareKeySource())
    for name in ("integrity", "aes-gcm", "hmac-sha256", "aes-cmac-prf", "ecdh-p256", "ecdh-p384", "key-source"):
        assert name in report.passed
    assert {n for n in report.passed if n.startswith("seal-")} == {
        f"seal-aes-{bits}-{mode}-aesni" for bits in (128, 256) for mode in ("gcm", "ccm", "ctr")}


@pytest.mark.parametrize("test", ["aes-gcm", "ecdh-p384", "seal-aes-128-ccm-aesni", "key-source", "integrity"])
def test_a_failing_self_test_is_refused_with_its_reason_code(test: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fips.CORRUPT_ENV, test)
    with pytest.raises(P3Error) as caught:
        fips.power_on_self_tests(config_for_tests(), SoftwareKeySource())
    assert caught.value.code == "P3-E903"


def test_a_flipped_byte_in_the_dataplane_library_fails_the_integrity_check(tmp_path: Path) -> None:
    [library] = fips.native_libraries(config_for_tests())
    copy = tmp_path / library.name
    shutil.copy(library, copy)
    shutil.copy(f"{library}.hmac", f"{copy}.hmac")
    fips.verify_integrity([copy])                       # as built: accepted
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(P3Error) as caught:
        fips.verify_integrity([copy])
    assert caught.value.code == "P3-E903" and "does not match" in caught.value.detail
    Path(f"{copy}.hmac").unlink()
    with pytest.raises(P3Error) as caught:
        fips.verify_integrity([copy])
    assert "missing" in caught.value.detail


def test_doctor_reports_the_integrity_values_and_the_module_boundary() -> None:
    from p3hw.commands import doctor

    found = {c["name"]: c for c in doctor.check_fips()}
    assert found["fips integrity"]["ok"], found
    assert ("OpenSSL FIPS provider" in found["fips provider"]["detail"]
            or "no OpenSSL FIPS provider" in found["fips provider"]["detail"])
