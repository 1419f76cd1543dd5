"""crypto_engine = cryptodev and its EAL arguments, dpdk_eal_args (docs/engines.md, docs/config.md)."""

from __future__ import annotations

import pytest

from p3hw.config import DEFAULT_DPDK_EAL_ARGS, ConfigError, ConfigErrors, parse_config


def config(local: str = "", role: str = "primary") -> str:
    if role == "primary":
        return (f"localstart\nrole = primary\nip = 4\naddress = 198.51.100.1\n{local}localend\n"
                "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")
    return (f"localstart\nrole = secondary\nip = 4\naddress = 203.0.113.10\n{local}localend\n"
            "1/address = 198.51.100.1\n1/subnet1 = 10.2.0.0\n1/mask1 = 255.255.0.0\n")


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(text, filename="dpdk.conf")
    return caught.value.errors


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_both_roles_choose_the_cryptodev_engine_with_default_eal_args(role: str) -> None:
    local = parse_config(config("crypto_engine = CryptoDev\n", role)).local
    assert (local.crypto_engine, local.crypto_fallback) == ("cryptodev", "aesni")
    assert local.dpdk_eal_args == DEFAULT_DPDK_EAL_ARGS
    assert "--no-huge" in local.dpdk_eal_args.split() and local.source("dpdk_eal_args") == "default"


def test_eal_args_from_the_configuration_are_kept_word_for_word() -> None:
    text = config("crypto_engine = cryptodev\ndpdk_eal_args = -a 0000:3d:01.0   -m 1024 --file-prefix=gw1\n")
    local = parse_config(text).local
    assert local.dpdk_eal_args == "-a 0000:3d:01.0 -m 1024 --file-prefix=gw1"
    data = parse_config(text).to_dict()["local"]
    assert data["dpdk_eal_args"]["value"] == local.dpdk_eal_args and data["dpdk_eal_args"]["source"] == "local"


@pytest.mark.parametrize("value", ['--vdev="crypto_openssl0"', "--no-huge \x01", "-m " + "x" * 1100,
                                   " ".join(["--no-pci"] * 63), "--vdev=crypto_openssl0 ü"])
def test_eal_args_that_cannot_reach_the_eal_intact_are_refused_on_their_line(value: str) -> None:
    errors = errors_of(config(f"crypto_engine = cryptodev\ndpdk_eal_args = {value}\n"))
    assert len(errors) == 1
    assert errors[0].line == 6 and errors[0].reason.name == "CONFIG_VALUE_OUT_OF_RANGE"


def test_empty_eal_args_are_refused() -> None:
    errors = errors_of(config("dpdk_eal_args =\n"))
    assert len(errors) == 1 and errors[0].line == 5
    assert errors[0].reason.name in ("CONFIG_MISSING_VALUE", "CONFIG_VALUE_OUT_OF_RANGE")


def test_cryptodev_refuses_a_remote_that_is_not_gcm() -> None:
    errors = errors_of(config("crypto_engine = cryptodev\n") + "1/cipher = ctr\n")
    assert len(errors) == 1 and errors[0].line == 10
    assert errors[0].reason.name == "CONFIG_VALUE_OUT_OF_RANGE" and "GCM only" in str(errors[0])
    assert parse_config(config("crypto_engine = cryptodev\n") + "1/cipher = gcm\n").remotes[0].cipher == "gcm"
