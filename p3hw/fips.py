"""FIPS mode (``fips = 1``, spec §6 "NIST FIPS 140-2"): power-on self-tests and the integrity check.

Before a daemon in FIPS mode opens anything it:

1. checks the integrity of the native code it is about to load: the HMAC-SHA-256 of the cffi
   extension (and of ``libp3dpdk.so`` when DPDK is configured) against the value recorded when it
   was built (``<library>.hmac``, written by ``python -m p3hw.fips record`` in ``make build``);
2. runs known-answer tests of every algorithm it uses: AES-GCM, HMAC-SHA-256, AES-CMAC-PRF-128,
   ECDH on P-256 and P-384 (the host's OpenSSL, through ``cryptography``), and the P3 packet
   seal of every data cipher (AES-GCM, AES-CCM, AES-CTR + HMAC-SHA-256) **through the configured
   crypto engine**, against the pure-Python reference codec; the sealed packet must also open;
3. tests the key source: two successive outputs differ and are not constant (a stuck generator).

Any failure is ``P3-E903`` and the daemon does not start. ``P3HW_FIPS_CORRUPT=<test name>``
corrupts the expected answer of one test so an operator (and the test suite) can see the
refusal happen, as FIPS 140 labs require. Decisions: ``docs/fips.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p3hw.config import Config
from p3hw.crypto.keys import CIPHERS, SaKeys
from p3hw.crypto.keysource import KeySource
from p3hw.crypto.prf import aes_cmac_prf_128, prf_hmac_sha256
from p3hw.reasons import P3Error

#: The integrity key: public, as in every FIPS module's integrity test; the HMAC detects a library
#: that changed since it was built (a flipped byte, a swapped file), not an attacker who can also
#: rewrite the recorded value.
INTEGRITY_KEY = b"p3hw FIPS 140 integrity check, v1"
CORRUPT_ENV = "P3HW_FIPS_CORRUPT"


@dataclass(frozen=True)
class SelfTestReport:
    passed: tuple[str, ...]
    libraries: tuple[str, ...]


def _corrupt(name: str, expected: bytes) -> bytes:
    """The expected answer, with one bit flipped when the operator asked to see this test fail."""
    if os.environ.get(CORRUPT_ENV, "") == name and expected:
        return bytes([expected[0] ^ 1]) + expected[1:]
    return expected


def _check(name: str, got: bytes, expected: bytes) -> None:
    if not hmac.compare_digest(got, _corrupt(name, expected)):
        raise P3Error("FIPS_SELF_TEST", f"known-answer test {name} failed", "the daemon does not start")


# -- the libraries' integrity ------------------------------------------------------------------


def native_libraries(config: Config | None = None) -> list[Path]:
    """The native code a daemon with this configuration loads."""
    from p3hw import _dataplane  # noqa: PLC0415 - only the extension's path is needed here
    from p3hw.dataplane import DPDK_LIBRARY  # noqa: PLC0415

    paths = [Path(_dataplane.__file__)]
    uses_dpdk = config is None or config.local.io == "dpdk" or config.local.crypto_engine == "dpdk"
    if uses_dpdk and Path(DPDK_LIBRARY).exists():
        paths.append(Path(DPDK_LIBRARY))
    return paths


def library_hmac(path: Path) -> str:
    mac = hmac.new(INTEGRITY_KEY, digestmod=hashlib.sha256)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            mac.update(block)
    return mac.hexdigest()


def record_integrity(paths: list[Path]) -> None:
    """At build time: write ``<library>.hmac`` beside each library."""
    for path in paths:
        Path(f"{path}.hmac").write_text(library_hmac(path) + "\n")


def verify_integrity(paths: list[Path]) -> None:
    for path in paths:
        recorded = Path(f"{path}.hmac")
        try:
            expected = recorded.read_text().strip()
        except OSError:
            raise P3Error("FIPS_SELF_TEST", f"no integrity value for {path} ({recorded} is missing)",
                          "rebuild with 'make build', which records it") from None
        if not hmac.compare_digest(library_hmac(path).encode(), _corrupt("integrity", expected.encode())):
            raise P3Error("FIPS_SELF_TEST", f"{path} does not match the HMAC-SHA-256 recorded when it was built",
                          "the library changed since it was built: reinstall or rebuild it")


# -- known answers of the primitives -----------------------------------------------------------


def _kat_aes_gcm() -> None:
    # The GCM specification (McGrew & Viega), test case 3: AES-128, 96-bit IV, 64-octet plaintext.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308")
    iv = bytes.fromhex("cafebabefacedbaddecaf888")
    plaintext = bytes.fromhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                              "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
    expected = bytes.fromhex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                             "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
                             "4d5c2af327cd64a62cf35abd2ba6fab4")
    _check("aes-gcm", AESGCM(key).encrypt(iv, plaintext, None), expected)


def _kat_hmac_sha256() -> None:
    # RFC 4231 §4.3, test case 2.
    got = prf_hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    _check("hmac-sha256", got, bytes.fromhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))


def _kat_aes_cmac_prf() -> None:
    # RFC 4615 §4, test case with a 16-octet key: AES-CMAC-PRF-128 of the 20-octet message.
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    message = bytes.fromhex("000102030405060708090a0b0c0d0e0f10111213")
    _check("aes-cmac-prf", aes_cmac_prf_128(key, message), bytes.fromhex("980ae87b5f4c9c5214f5b6a8455e4c2d"))


def _kat_ecdh(curve: ec.EllipticCurve, name: str, i: str, r_public: str, expected: str) -> None:
    private = ec.derive_private_key(int(i, 16), curve)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, bytes.fromhex("04" + r_public))
    _check(name, private.exchange(ec.ECDH(), peer), bytes.fromhex(expected))
    # and the public key derivation (the KE payload we would send)
    private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _kat_ecdh_p256() -> None:
    # RFC 5903 §8.1: i, the responder's gr (x ‖ y), and g^ir (x).
    _kat_ecdh(ec.SECP256R1(), "ecdh-p256",
              "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
              "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63"
              "56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
              "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de")


def _kat_ecdh_p384() -> None:
    # RFC 5903 §8.2.
    _kat_ecdh(ec.SECP384R1(), "ecdh-p384",
              "099f3c7034d4a2c699884d73a375a67f7624ef7c6b3c0f160647b67414dce655e35b538041e649ee3faef896783ab194",
              "e558dbef53eecde3d3fccfc1aea08a89a987475d12fd950d83cfa41732bc509d0d1ac43a0336def96fda41d0774a3571"
              "dcfbec7aacf3196472169e838430367f66eebe3c6e70c416dd5f0c68759dd1fff83fa40142209dff5eaad96db9e6386c",
              "11187331c279962d93d604243fd592cb9d0a926f422e47187521287e7156c5c4d603135569b9e9d09cf5d4a270f59746")


# -- the packet seal through the configured engine ---------------------------------------------


def _kat_seal(engine: str, engine_setup: Callable[[object], None]) -> list[str]:
    """Seal one fixed packet per data cipher through the engine; it must equal the reference and open."""
    from p3hw.dataplane import Dataplane, PeerConfig  # noqa: PLC0415 - loads the checked extension
    from p3hw.wire import packet as ref  # noqa: PLC0415

    hp_key = bytes(range(0x40, 0x50))
    inner = bytes.fromhex("4500003c1c4640004006b1e6ac100a63ac100a0c") + bytes(range(40))
    names = []
    for cipher in sorted(CIPHERS):
        key_bytes, salt_bytes, auth_bytes = CIPHERS[cipher]
        material = bytes((0x5a + 7 * i) & 0xFF for i in range(key_bytes + salt_bytes + auth_bytes + 16))
        sa = SaKeys.from_material(0x1000, cipher, material)
        sealer, opener = Dataplane(4, 4), Dataplane(4, 4)
        for plane in (sealer, opener):
            engine_setup(plane)
        sealer.add_peer(PeerConfig(2, "192.0.2.1", "192.0.2.2"))
        opener.add_peer(PeerConfig(1, "192.0.2.2", "192.0.2.1"))
        sealer.set_hp_keys(2, hp_out=hp_key)
        opener.set_hp_keys(1, hp_in=hp_key)
        sealer.add_outbound_sa(2, sa)
        opener.add_inbound_sa(1, sa)
        sealer.set_next_seq(2, sa.p3_id, 77)
        sealed = sealer.seal([(2, inner)], with_ip=False)[0]
        frame_len = ref.bucket_frame_len(len(inner) + 3, ref.frame_cap(1500, 4, True))
        name = f"seal-{cipher}-{engine}"
        if sealed.status != "OK" or frame_len is None:
            raise P3Error("FIPS_SELF_TEST", f"known-answer test {name}: the engine failed ({sealed.status})")
        _check(name, sealed.data, ref.seal(sa, hp_key, 77, inner, frame_len))
        opened = opener.open([(sealed.data, "192.0.2.1", 5653)], with_ip=False)[0]
        if opened.status != "OK" or opened.data != inner:
            raise P3Error("FIPS_SELF_TEST", f"known-answer test open-{cipher}-{engine} failed ({opened.status})")
        names.append(name)
    return names


def _kat_key_source(source: KeySource) -> None:
    """SP 800-90B §4.4 in spirit: a stuck or constant generator fails before any key is made."""
    first, second = source.random_bytes(32), source.random_bytes(32)
    if first == second or len(set(first)) == 1:
        raise P3Error("FIPS_SELF_TEST", "the key source returned a repeated or constant block",
                      "check the RNG (p3hw doctor)")
    if os.environ.get(CORRUPT_ENV, "") == "key-source":
        raise P3Error("FIPS_SELF_TEST", "the key source test was corrupted on purpose (P3HW_FIPS_CORRUPT)")


def power_on_self_tests(config: Config, key_source: KeySource,
                        engine_setup: Callable[[object], None] | None = None) -> SelfTestReport:
    """Every test in order; the first failure raises P3Error FIPS_SELF_TEST."""
    libraries = native_libraries(config)
    verify_integrity(libraries)
    passed = ["integrity"]
    for name, test in (("aes-gcm", _kat_aes_gcm), ("hmac-sha256", _kat_hmac_sha256),
                       ("aes-cmac-prf", _kat_aes_cmac_prf), ("ecdh-p256", _kat_ecdh_p256),
                       ("ecdh-p384", _kat_ecdh_p384)):
        test()
        passed.append(name)
    engine = config.local.crypto_engine
    passed += _kat_seal(engine, engine_setup or (lambda _plane: None))
    _kat_key_source(key_source)
    passed.append("key-source")
    return SelfTestReport(tuple(passed), tuple(str(p) for p in libraries))


def openssl_fips_provider() -> Path | None:
    """The OpenSSL 3 FIPS provider module, when one is installed (Debian 12 ships none)."""
    from cryptography.hazmat.backends.openssl import backend  # noqa: PLC0415

    del backend
    for directory in ("/usr/lib/x86_64-linux-gnu/ossl-modules", "/usr/lib/aarch64-linux-gnu/ossl-modules",
                      "/usr/lib/ssl/ossl-modules", "/usr/local/lib64/ossl-modules"):
        candidate = Path(directory) / "fips.so"
        if candidate.exists():
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p3hw.fips")
    parser.add_argument("action", choices=("record", "verify"),
                        help="record: write <library>.hmac for the built native libraries; verify: check them")
    args = parser.parse_args(argv)
    paths = native_libraries()
    try:
        if args.action == "record":
            record_integrity(paths)
        else:
            verify_integrity(paths)
    except P3Error as error:
        print(f"p3hw fips: {error.message()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
