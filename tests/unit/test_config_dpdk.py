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


# ---- io = dpdk: the LAN and WAN on two DPDK ports (docs/dpdk.md) ----

DPDK_IO = ("io = dpdk\ndpdk_lan_port = net_af_packet0\ndpdk_wan_port = net_af_packet1\n"
           "dpdk_lan_address = 10.1.0.1/24\n")


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_both_roles_put_their_lan_and_wan_on_dpdk_ports(role: str) -> None:
    local = parse_config(config(DPDK_IO + "dpdk_wan_gateway = 198.51.100.254\n", role)).local
    assert (local.io, local.dpdk_lan_port, local.dpdk_wan_port) == ("dpdk", "net_af_packet0", "net_af_packet1")
    assert str(local.dpdk_lan_address) == "10.1.0.1/24" and str(local.dpdk_wan_gateway) == "198.51.100.254"
    assert local.dpdk_lan_gateway is None and local.source("io") == "local"


def test_kernel_io_is_the_default_and_needs_no_dpdk_keyword() -> None:
    local = parse_config(config()).local
    assert local.io == "kernel" and local.dpdk_lan_port is None


def test_dpdk_io_without_its_ports_and_lan_address_names_each_missing_keyword() -> None:
    errors = errors_of(config("io = dpdk\n"))
    assert {(e.line, e.reason.name) for e in errors} == {(5, "CONFIG_MISSING_VALUE")}
    assert sorted(k for e in errors for k in ("dpdk_lan_port", "dpdk_wan_port", "dpdk_lan_address")
                  if k in e.detail) == ["dpdk_lan_address", "dpdk_lan_port", "dpdk_wan_port"]


def test_dpdk_keywords_without_io_dpdk_are_refused_on_their_lines() -> None:
    errors = errors_of(config("dpdk_lan_port = net_af_packet0\ndpdk_lan_address = 10.1.0.1/24\n"))
    assert [(e.line, e.reason.code) for e in errors] == [(5, "P3-E104"), (6, "P3-E104")]
    assert all("io is not dpdk" in e.detail for e in errors)


@pytest.mark.parametrize("line,reason,words", [
    ("dpdk_wan_port = net_af_packet0", "P3-E104", "both net_af_packet0"),
    ("dpdk_lan_gateway = 2001:db8::1", "P3-E107", "IPv6 but the address is IPv4"),
    ("dpdk_wan_gateway = 10.0.0.300", "P3-E107", "not an IPv4 or IPv6 address"),
])
def test_bad_dpdk_values_are_refused_with_their_reason(line: str, reason: str, words: str) -> None:
    text = config(DPDK_IO.replace("dpdk_wan_port = net_af_packet1\n", "") + line + "\n") \
        if line.startswith("dpdk_wan_port") else config(DPDK_IO + line + "\n")
    errors = errors_of(text)
    assert [(e.reason.code, words in e.detail) for e in errors] == [(reason, True)], errors


@pytest.mark.parametrize("value,words", [
    ("10.1.0.1", "no prefix length"),
    ("10.1.0.0/24", "network's own address"),
    ("10.1.0.1/33", "not an address with a prefix length"),
])
def test_a_lan_address_needs_a_host_address_and_its_prefix(value: str, words: str) -> None:
    errors = errors_of(config(DPDK_IO.replace("10.1.0.1/24", value)))
    assert [(e.line, e.reason.code) for e in errors] == [(8, "P3-E107")] and words in errors[0].detail


@pytest.mark.parametrize("value", ["net_af_packet0,iface=eth1", "two words", "x" * 64])
def test_a_port_name_is_the_device_name_alone(value: str) -> None:
    errors = errors_of(config(DPDK_IO.replace("dpdk_lan_port = net_af_packet0", f"dpdk_lan_port = {value}")))
    assert errors[0].line == 6 and errors[0].reason.code == "P3-E104"
    assert "dpdk_eal_args" in errors[0].hint


def test_workers_and_their_cpus_are_read_with_io_dpdk() -> None:
    local = parse_config(config(DPDK_IO + "dpdk_workers = 2\ndpdk_cpus = 2, 3\n")).local
    assert (local.dpdk_workers, local.dpdk_cpus) == (2, (2, 3))
    assert parse_config(config(DPDK_IO)).local.dpdk_workers == 1


@pytest.mark.parametrize("lines,line,reason,words", [
    ("dpdk_workers = 9\n", 9, "P3-E104", "out of range"),
    ("dpdk_workers = 0\n", 9, "P3-E104", "out of range"),
    ("dpdk_cpus = 1,1\n", 9, "P3-E104", "each once"),
    ("dpdk_cpus = two\n", 9, "P3-E104", "not a list of CPU numbers"),
    ("dpdk_workers = 3\ndpdk_cpus = 0,1\n", 10, "P3-E104", "2 CPU(s) for 3 workers"),
])
def test_bad_worker_settings_are_refused_on_their_line(lines: str, line: int, reason: str, words: str) -> None:
    errors = errors_of(config(DPDK_IO + lines))
    assert [(e.line, e.reason.code) for e in errors] == [(line, reason)] and words in errors[0].detail, errors
