"""The crypto-engine keywords: crypto_engine and crypto_fallback (docs/engines.md, docs/config.md)."""

from __future__ import annotations

import pytest

from p3hw.config import ConfigError, ConfigErrors, parse_config


def config(local: str = "", role: str = "primary") -> str:
    if role == "primary":
        return (f"localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\n{local}localend\n"
                "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")
    return (f"localstart\nrole = secondary\nip = 4\naddress = 203.0.113.10\n{local}localend\n"
            "1/address = 198.51.100.1\n1/subnet1 = 10.2.0.0\n1/mask1 = 255.255.0.0\n")


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(text, filename="engine.conf")
    return caught.value.errors


def test_default_is_aesni_with_aesni_as_fallback() -> None:
    local = parse_config(config()).local
    assert (local.crypto_engine, local.crypto_fallback) == ("aesni", "aesni")
    assert local.source("crypto_engine") == "default"


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_both_roles_choose_the_simulator_and_no_fallback(role: str) -> None:
    local = parse_config(config("crypto_engine = Accel-Sim\ncrypto_fallback = none\n", role)).local
    assert (local.crypto_engine, local.crypto_fallback) == ("accel-sim", "none")
    data = parse_config(config("crypto_engine = accel-sim\n", role)).to_dict()["local"]
    assert data["crypto_engine"]["value"] == "accel-sim" and data["crypto_engine"]["source"] == "local"


@pytest.mark.parametrize("line", ["crypto_engine = qat", "crypto_fallback = accel-sim", "crypto_engine ="])
def test_unknown_engine_or_fallback_is_refused_on_its_line(line: str) -> None:
    errors = errors_of(config(line + "\n"))
    assert len(errors) == 1
    assert errors[0].line == 5
    assert errors[0].reason.name in ("CONFIG_VALUE_OUT_OF_RANGE", "CONFIG_MISSING_VALUE")


def test_simulator_refuses_a_remote_that_is_not_gcm() -> None:
    text = config("crypto_engine = accel-sim\n") + "1/cipher = ccm\n"
    errors = errors_of(text)
    assert len(errors) == 1
    assert errors[0].line == 10 and errors[0].reason.name == "CONFIG_VALUE_OUT_OF_RANGE"
    assert "GCM only" in str(errors[0])
    assert parse_config(config() + "1/cipher = ccm\n").remotes[0].cipher == "ccm"   # AES-NI takes any


def test_pkcs11_engine_needs_the_token_keywords() -> None:
    errors = errors_of(config("crypto_engine = pkcs11\n"))
    assert len(errors) == 1 and errors[0].reason.name == "CONFIG_MISSING_VALUE" and errors[0].line == 5
    assert "pkcs11_module" in str(errors[0])
    text = config("key_generation = 2\npkcs11_module = /usr/lib/softhsm/libsofthsm2.so\npkcs11_token = gw\n"
                  "crypto_engine = pkcs11\n")
    assert parse_config(text).local.crypto_engine == "pkcs11"
    secondary = errors_of(config("crypto_engine = pkcs11\n", role="secondary"))
    assert secondary[0].reason.name == "CONFIG_MISSING_VALUE"
