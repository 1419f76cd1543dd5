"""The Appendix A configuration: keywords, defaults, overrides, and every validation error."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from p3hw import constants
from p3hw.config import (
    DEFAULT_ADMIN_SOCKET,
    DEFAULT_CIPHER,
    DEFAULT_INTERFACE,
    DEFAULT_KEY_GENERATION,
    DEFAULT_KEY_TYPE,
    DEFAULT_LOG_FACILITY,
    DEFAULT_PFS,
    DEFAULT_TRANSPORT,
    MAX_CONFIG_BYTES,
    ConfigError,
    ConfigErrors,
    load_config,
    parse_config,
    read_psk,
)

REPO = Path(__file__).resolve().parents[2]


def primary(local: str = "", remote: str = "", role: str = "role = primary\n") -> str:
    return (f"localstart\n{role}ip = 4\naddress = 198.51.100.1\n{local}localend\n"
            f"1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n{remote}")


def secondary(local: str = "", remote: str = "") -> str:
    return (f"localstart\nrole = secondary\nip = 4\naddress = 203.0.113.10\n{local}localend\n"
            f"1/address = 198.51.100.1\n1/subnet1 = 10.0.0.0\n1/mask1 = 255.0.0.0\n{remote}")


def line_of(text: str, snippet: str) -> int:
    for number, line in enumerate(text.split("\n"), start=1):
        if snippet in line:
            return number
    raise AssertionError(f"{snippet!r} not in the text")


def errors_of(text: str, **kwargs: object) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(text, filename="t.conf", **kwargs)  # type: ignore[arg-type]
    return caught.value.errors


def assert_error(text: str, code: str, snippet: str, **kwargs: object) -> ConfigError:
    """The text fails with ``code`` on the line holding ``snippet``."""
    found = errors_of(text, **kwargs)
    line = line_of(text, snippet)
    matching = [e for e in found if e.code == code and e.line == line]
    assert matching, f"expected {code} on line {line}, got {[str(e) for e in found]}"
    return matching[0]


# --- Defaults and values --------------------------------------------------------

LOCAL_DEFAULTS = [
    ("port", constants.DEFAULT_PORT),
    ("key_generation", DEFAULT_KEY_GENERATION),
    ("rekey_wait_s", constants.DEFAULT_REKEY_WAIT_S),
    ("array_size", constants.DEFAULT_ARRAY_SIZE),
    ("data_array_time_s", constants.DEFAULT_DATA_ARRAY_TIME_S),
    ("control_array_time_s", constants.DEFAULT_CONTROL_ARRAY_TIME_S),
    ("heartbeat_time_s", constants.DEFAULT_HEARTBEAT_TIME_S),
    ("heartbeat_fail_s", constants.DEFAULT_HEARTBEAT_FAIL_S),
    ("cluster_state", 0),
    ("load_balance", 0),
    ("transport", DEFAULT_TRANSPORT),
    ("interface", DEFAULT_INTERFACE),
    ("admin_socket", DEFAULT_ADMIN_SOCKET),
    ("log_facility", DEFAULT_LOG_FACILITY),
]


@pytest.mark.parametrize(("attr", "default"), LOCAL_DEFAULTS)
def test_local_keyword_defaults_when_absent(attr: str, default: object) -> None:
    config = parse_config(primary())
    assert getattr(config.local, attr) == default
    assert config.local.origin(attr).source == "default"
    assert config.local.origin(attr).line is None


LOCAL_VALUES = [
    ("port = 6000", "port", 6000),
    ("port 1", "port", 1),
    ("key_generation = 2", "key_generation", 2),
    ("rekey_wait = 600", "rekey_wait_s", 600),
    ("array_size = 0", "array_size", 0),
    ("array_size 65536", "array_size", 65536),
    ("data_array_time = 7200", "data_array_time_s", 7200),
    ("control_array_time = 3600", "control_array_time_s", 3600),
    ("heartbeat_time = 5", "heartbeat_time_s", 5),
    ("heartbeat_fail = 30", "heartbeat_fail_s", 30),
    ("cluster_state = 0", "cluster_state", 0),
    ("load_balance 0", "load_balance", 0),
    ("transport = esp", "transport", "esp"),
    ("transport = UDP", "transport", "udp"),
    ("interface = wan-p3", "interface", "wan-p3"),
    ("interface = abcdefghijklmno", "interface", "abcdefghijklmno"),
    ("admin_socket = /tmp/p3.sock", "admin_socket", "/tmp/p3.sock"),
    ("log_facility = local3", "log_facility", "local3"),
]


@pytest.mark.parametrize(("line", "attr", "expected"), LOCAL_VALUES)
def test_local_keyword_value_is_used_with_its_line(line: str, attr: str, expected: object) -> None:
    text = primary(local=line + "\n")
    config = parse_config(text)
    assert getattr(config.local, attr) == expected
    assert config.local.origin(attr).source == "local"
    assert config.local.origin(attr).line == line_of(text, line)


def test_local_address_is_an_ipaddress_object() -> None:
    config = parse_config(primary())
    assert config.local.ip == 4
    assert config.local.address == ipaddress.IPv4Address("198.51.100.1")


REMOTE_VALUES = [
    ("1/key_type = AES256", "key_type", "AES256"),
    ("1/key_type = aes256", "key_type", "AES256"),
    ("1/key_type = AES128", "key_type", "AES128"),
    ("1/cipher = ccm", "cipher", "ccm"),
    ("1/cipher = CTR", "cipher", "ctr"),
    ("1/pfs = 0", "pfs", 0),
    ("1/ip = 4", "ip", 4),
]


@pytest.mark.parametrize(("line", "attr", "expected"), REMOTE_VALUES)
def test_remote_keyword_value_is_used(line: str, attr: str, expected: object) -> None:
    text = primary(remote=line + "\n")
    remote = parse_config(text).remote(1)
    assert getattr(remote, attr) == expected
    assert remote.origin(attr).source == "remote"
    assert remote.origin(attr).line == line_of(text, line)


@pytest.mark.parametrize(("attr", "default"), [("key_type", DEFAULT_KEY_TYPE), ("cipher", DEFAULT_CIPHER),
                                               ("pfs", DEFAULT_PFS), ("psk_file", None)])
def test_remote_keyword_defaults(attr: str, default: object) -> None:
    remote = parse_config(primary()).remote(1)
    assert getattr(remote, attr) == default
    assert remote.source(attr) == "default"


def test_remote_ip_is_inherited_from_the_local_host() -> None:
    remote = parse_config(primary()).remote(1)
    assert remote.ip == 4 and remote.source("ip") == "local"


def test_secondary_remote_port_defaults_to_the_spec_port_and_can_be_set() -> None:
    assert parse_config(secondary()).remote(1).port == constants.DEFAULT_PORT
    remote = parse_config(secondary(remote="1/port = 7000\n")).remote(1)
    assert remote.port == 7000 and remote.source("port") == "remote"


def test_primary_remote_port_is_the_primary_listening_port() -> None:
    remote = parse_config(primary(local="port = 6000\n")).remote(1)
    assert remote.port == 6000 and remote.source("port") == "local"


# Appendix A 1: "#/key_array" overrides array_size; the others override their namesakes.
OVERRIDES = [
    ("rekey_wait", "rekey_wait", "rekey_wait_s", constants.DEFAULT_REKEY_WAIT_S, 1800, 900),
    ("key_array", "array_size", "array_size", constants.DEFAULT_ARRAY_SIZE, 128, 64),
    ("data_array_time", "data_array_time", "data_array_time_s", constants.DEFAULT_DATA_ARRAY_TIME_S, 7200, 3600),
    ("control_array_time", "control_array_time", "control_array_time_s", constants.DEFAULT_CONTROL_ARRAY_TIME_S,
     7000, 3500),
    ("heartbeat_time", "heartbeat_time", "heartbeat_time_s", constants.DEFAULT_HEARTBEAT_TIME_S, 10, 3),
    ("heartbeat_fail", "heartbeat_fail", "heartbeat_fail_s", constants.DEFAULT_HEARTBEAT_FAIL_S, 60, 20),
]


@pytest.mark.parametrize(("remote_kw", "local_kw", "attr", "default", "local_value", "remote_value"), OVERRIDES)
def test_override_resolves_default_then_local_then_remote(remote_kw: str, local_kw: str, attr: str, default: int,
                                                          local_value: int, remote_value: int) -> None:
    base = ("localstart\nrole = primary\nip 4\naddress 198.51.100.1\n{local}localend\n"
            "1/address 203.0.113.10\n1/subnet1 10.1.0.0\n1/mask1 255.255.0.0\n"
            "2/address 203.0.113.20\n2/subnet1 10.2.0.0\n2/mask1 255.255.0.0\n{remote}")
    untouched = parse_config(base.format(local="", remote=""))
    assert getattr(untouched.remote(1), attr) == default
    assert untouched.remote(1).source(attr) == "default"

    text = base.format(local=f"{local_kw} = {local_value}\n", remote=f"2/{remote_kw} = {remote_value}\n")
    config = parse_config(text)
    inherited, overridden = config.remote(1), config.remote(2)
    assert getattr(inherited, attr) == local_value
    assert inherited.origin(attr).source == "local"
    assert inherited.origin(attr).line == line_of(text, f"{local_kw} = {local_value}")
    assert getattr(overridden, attr) == remote_value
    assert overridden.origin(attr).source == "remote"
    assert overridden.origin(attr).line == line_of(text, f"2/{remote_kw} = {remote_value}")
    assert getattr(config.local, attr) == local_value  # an override does not leak into the local host


# --- Syntax -----------------------------------------------------------------------

def test_both_definition_forms_comments_blank_lines_and_crlf_are_accepted() -> None:
    text = ("# a comment\r\n\r\n   # an indented comment\nlocalstart\nrole=primary\nip    4\n"
            "address = 198.51.100.1   # trailing comment\r\nLOCALEND\n\n"
            "1/address\t203.0.113.10\n1/subnet1=10.1.0.0\n1/mask1 = 255.255.0.0\n")
    config = parse_config(text)
    assert config.local.address == ipaddress.IPv4Address("198.51.100.1")
    assert config.remote(1).subnets == [ipaddress.ip_network("10.1.0.0/16")]


def test_several_subnets_and_remotes_are_ordered_by_id() -> None:
    text = primary(remote="1/subnet2 = 10.9.0.0\n1/mask2 = /24\n"
                          "7/address = 203.0.113.70\n7/subnet1 = 172.16.0.0\n7/mask1 = 255.240.0.0\n"
                          "3/address = 203.0.113.30\n3/subnet1 = 203.0.113.30\n3/mask1 = 255.255.255.255\n")
    config = parse_config(text)
    assert [r.id for r in config.remotes] == [1, 3, 7]
    assert [str(n) for n in config.remote(1).subnets] == ["10.1.0.0/16", "10.9.0.0/24"]
    assert config.remote(7).subnets == [ipaddress.ip_network("172.16.0.0/12")]


def test_nested_prefixes_are_allowed_and_the_longest_wins() -> None:
    text = primary(remote="2/address = 203.0.113.20\n2/subnet1 = 10.1.77.0\n2/mask1 = 255.255.255.0\n")
    config = parse_config(text)
    assert config.route_for(ipaddress.ip_address("10.1.77.5")).id == 2
    assert config.route_for(ipaddress.ip_address("10.1.78.5")).id == 1
    assert config.route_for(ipaddress.ip_address("192.0.2.1")) is None


def test_ipv6_configuration_with_prefix_and_full_masks() -> None:
    text = ("localstart\nrole primary\nip 6\naddress 2001:db8::1\nlocalend\n1/address 2001:db8:ffff::10\n"
            "1/subnet1 2001:db8:100::\n1/mask1 /48\n1/subnet2 2001:db8:ffff::10\n"
            "1/mask2 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n1/subnet3 2001:db8:200::\n1/mask3 ffff:ffff:ffff::\n")
    remote = parse_config(text).remote(1)
    assert [str(n) for n in remote.subnets] == ["2001:db8:100::/48", "2001:db8:ffff::10/128", "2001:db8:200::/48"]


# --- Role -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "role"), [
    (primary(role="", local="key_generation = 2\n"), "primary"),
    (primary(role="", local="port = 5653\n"), "primary"),
    (primary(role="", remote="1/heartbeat_time = 5\n"), "primary"),
    (primary(role="", remote="2/address 203.0.113.20\n2/subnet1 10.2.0.0\n2/mask1 255.255.0.0\n"), "primary"),
    (primary(role="", remote="1/port = 5653\n"), "secondary"),
])
def test_role_is_inferred_from_role_only_keywords(text: str, role: str) -> None:
    assert parse_config(text).role == role


def test_role_given_by_the_caller_wins_and_is_enforced() -> None:
    assert parse_config(primary(role=""), role="secondary").role == "secondary"
    assert_error(primary(), "P3-E106", "role = primary", role="secondary")


# --- Every validation error: reason code and line ------------------------------

def test_unknown_local_keyword_suggests_the_closest() -> None:
    error = assert_error(primary(local="rekey_wiat = 5\n"), "P3-E102", "rekey_wiat")
    assert "did you mean rekey_wait" in error.hint


def test_unknown_remote_keyword_suggests_the_closest() -> None:
    error = assert_error(primary(remote="1/adress = 1.2.3.4\n"), "P3-E102", "1/adress")
    assert "did you mean 1/address" in error.hint


def test_remote_array_size_points_at_key_array() -> None:
    error = assert_error(primary(remote="1/array_size = 8\n"), "P3-E102", "1/array_size")
    assert "1/key_array" in error.hint


@pytest.mark.parametrize("text", ["localstart\n= 4\n", "localstart\nip, 4\n", "localstart\n1//address x\n"])
def test_unreadable_line_is_a_syntax_error(text: str) -> None:
    assert any(e.code == "P3-E101" and e.line == 2 for e in errors_of(text))


def test_duplicate_local_keyword_is_reported_on_the_second_line() -> None:
    text = primary(local="heartbeat_time 5\nheartbeat_time = 6\n")
    assert_error(text, "P3-E103", "heartbeat_time = 6")


def test_duplicate_remote_keyword_is_reported() -> None:
    assert_error(primary(remote="1/key_type AES128\n1/key_type = AES256\n"), "P3-E103", "1/key_type = AES256")


def test_two_remotes_with_one_address_are_reported() -> None:
    text = primary(remote="2/address = 203.0.113.10\n2/subnet1 = 10.2.0.0\n2/mask1 = 255.255.0.0\n")
    assert_error(text, "P3-E103", "2/address")


@pytest.mark.parametrize("line", [
    "port = 0", "port = 65536", "port = http", "key_generation = 3", "rekey_wait = 0", "rekey_wait = -5",
    "array_size = 65537", "heartbeat_time = 1.5", "heartbeat_fail = 99999999999", "cluster_state = 2",
    "transport = tcp", "interface = this-name-is-too-long", "interface = a/b", "admin_socket = relative.sock",
    "log_facility = daemonn",
])
def test_local_value_out_of_range(line: str) -> None:
    assert_error(primary(local=line + "\n"), "P3-E104", line)


def test_ip_version_and_role_out_of_range() -> None:
    text = "localstart\nrole = tertiary\nip = 5\naddress 198.51.100.1\nlocalend\n1/address 203.0.113.1\n"
    assert_error(text, "P3-E104", "role = tertiary")
    assert_error(text, "P3-E104", "ip = 5")


@pytest.mark.parametrize("line", ["1/key_type = AES512", "1/cipher = cbc", "1/pfs = 2", "1/key_array = 70000",
                                  "1/rekey_wait = 0", "1/ip = 7", "99999/address = 203.0.113.99"])
def test_remote_value_out_of_range(line: str) -> None:
    assert_error(primary(remote=line + "\n"), "P3-E104", line)


def test_local_keyword_after_localend_is_in_the_wrong_section() -> None:
    assert_error(primary(remote="heartbeat_time = 5\n"), "P3-E105", "heartbeat_time = 5")


def test_remote_keyword_inside_the_local_section_is_in_the_wrong_section() -> None:
    assert_error(primary(local="2/address = 203.0.113.20\n"), "P3-E105", "2/address")


def test_remote_keyword_without_an_id_in_the_local_section() -> None:
    assert_error(primary(local="subnet1 = 10.0.0.0\n"), "P3-E105", "subnet1")


def test_local_only_keyword_given_for_a_remote_host() -> None:
    assert_error(primary(remote="1/key_generation = 2\n"), "P3-E105", "1/key_generation")


@pytest.mark.parametrize("line", ["key_generation = 2", "rekey_wait = 60", "port = 5653", "array_size = 16",
                                  "heartbeat_fail = 30"])
def test_primary_keyword_on_a_secondary_is_the_wrong_role(line: str) -> None:
    error = assert_error(secondary(local=line + "\n"), "P3-E106", line)
    assert "primary" in error.detail


def test_remote_override_on_a_secondary_is_the_wrong_role() -> None:
    assert_error(secondary(remote="1/rekey_wait = 60\n"), "P3-E106", "1/rekey_wait")


def test_secondary_port_on_a_primary_is_the_wrong_role() -> None:
    assert_error(primary(remote="1/port = 5653\n"), "P3-E106", "1/port")


def test_conflicting_role_keywords_blame_the_later_line() -> None:
    text = primary(role="", local="key_generation = 1\n", remote="1/port = 5653\n")
    assert_error(text, "P3-E106", "1/port")


def test_undecidable_role_asks_for_the_role_keyword() -> None:
    error = assert_error(primary(role=""), "P3-E116", "localend")
    assert "role = primary" in error.hint


def test_local_address_of_the_other_ip_version() -> None:
    text = "localstart\nrole primary\nip = 4\naddress = 2001:db8::1\nlocalend\n1/address 203.0.113.1\n"
    assert_error(text, "P3-E107", "address = 2001:db8::1")


@pytest.mark.parametrize(("remote", "snippet"), [
    ("2/address = 2001:db8::2\n2/subnet1 = 10.2.0.0\n2/mask1 = 255.255.0.0\n", "2/address"),
    ("1/subnet2 = 2001:db8::\n1/mask2 = /64\n", "1/subnet2"),
    ("1/subnet2 = 10.9.0.0\n1/mask2 = ffff::\n", "1/mask2"),
    ("1/subnet2 = 10.9.0.0\n1/mask2 = /33\n", "1/mask2"),
    ("1/subnet2 = 10.9.0\n1/mask2 = 255.255.0.0\n", "1/subnet2"),
    ("1/subnet2 = 10.9.0.0\n1/mask2 = 255.255.0\n", "1/mask2"),
    ("1/ip = 6\n", "1/ip"),
])
def test_remote_address_subnet_and_mask_must_match_the_ip_version(remote: str, snippet: str) -> None:
    assert_error(primary(remote=remote), "P3-E107", snippet)


def test_non_contiguous_mask() -> None:
    assert_error(primary(remote="1/subnet2 = 10.9.0.0\n1/mask2 = 255.0.255.0\n"), "P3-E108", "1/mask2")


def test_subnet_with_host_bits_set() -> None:
    error = assert_error(primary(remote="1/subnet2 = 10.9.0.1\n1/mask2 = 255.255.0.0\n"), "P3-E109", "1/subnet2")
    assert "10.9.0.0" in error.hint


def test_standalone_host_needs_the_full_mask() -> None:
    remote = "2/address = 203.0.113.20\n2/subnet1 = 203.0.113.20\n2/mask1 = 255.255.255.0\n"
    assert_error(primary(remote=remote), "P3-E110", "2/mask1")


def test_same_prefix_to_two_remotes() -> None:
    remote = "2/address = 203.0.113.20\n2/subnet1 = 10.1.0.0\n2/mask1 = /16\n"
    assert_error(primary(remote=remote), "P3-E111", "2/subnet1")


def test_subnet_without_mask_and_mask_without_subnet() -> None:
    text = primary(remote="1/subnet2 = 10.9.0.0\n1/mask3 = 255.255.0.0\n")
    assert_error(text, "P3-E112", "1/subnet2")
    assert_error(text, "P3-E112", "1/mask3")


def test_remote_without_address() -> None:
    text = primary(remote="4/subnet1 = 10.4.0.0\n4/mask1 = 255.255.0.0\n")
    assert_error(text, "P3-E113", "4/subnet1")


def test_missing_localstart() -> None:
    assert_error("ip = 4\naddress = 198.51.100.1\nlocalend\n1/address 203.0.113.1\n", "P3-E114", "ip = 4")


def test_missing_localend() -> None:
    text = "localstart\nrole primary\nip = 4\naddress = 198.51.100.1\n\n# end\n"
    assert len(errors_of(text)) >= 1
    assert any(e.code == "P3-E114" and e.line == 7 for e in errors_of(text))


def test_empty_file_has_no_local_section() -> None:
    assert any(e.code == "P3-E114" for e in errors_of(""))


@pytest.mark.parametrize("line", ["cluster_state = 1", "load_balance = 1"])
def test_clustering_and_load_balancing_are_not_supported_yet(line: str) -> None:
    error = assert_error(primary(local=line + "\n"), "P3-E115", line)
    assert "not supported yet" in error.detail


@pytest.mark.parametrize(("text", "snippet"), [
    ("localstart\nrole primary\naddress = 198.51.100.1\nlocalend\n1/address 203.0.113.1\n", "localend"),
    ("localstart\nrole primary\nip 4\nlocalend\n1/address 203.0.113.1\n", "localend"),
    (primary(local="heartbeat_time =\n"), "heartbeat_time ="),
])
def test_missing_required_value(text: str, snippet: str) -> None:
    assert_error(text, "P3-E116", snippet)


def test_no_remote_host() -> None:
    assert_error("localstart\nrole primary\nip 4\naddress 198.51.100.1\nlocalend\n", "P3-E118", "localend")


def test_every_error_is_reported_not_just_the_first() -> None:
    text = primary(local="key_generation = 9\nheartbeat_tim = 5\n", remote="1/mask2 = 255.0.0.0\n")
    codes = sorted(e.code for e in errors_of(text))
    assert codes == ["P3-E102", "P3-E104", "P3-E112"]


def test_config_error_text_is_file_line_code_message_hint() -> None:
    error = assert_error(primary(local="port = 0\n"), "P3-E104", "port = 0")
    assert str(error) == f"t.conf:{error.line}: P3-E104 {error.detail} (hint: {error.hint})"


# --- psk_file ---------------------------------------------------------------------

def write_secret(path: Path, mode: int) -> Path:
    path.write_text("0123456789abcdef\n")
    os.chmod(path, mode)
    return path


def test_psk_file_relative_to_the_config_directory(tmp_path: Path) -> None:
    write_secret(tmp_path / "site1.key", 0o600)
    conf = tmp_path / "p.conf"
    conf.write_text(primary(remote="1/psk_file = site1.key\n"))
    assert load_config(conf).remote(1).psk_file == tmp_path / "site1.key"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_psk_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    write_secret(tmp_path / "k", mode)
    error = assert_error(primary(remote="1/psk_file = k\n"), "P3-E117", "1/psk_file", base_dir=tmp_path)
    assert "chmod 600" in error.hint


def test_missing_psk_file_is_refused(tmp_path: Path) -> None:
    assert_error(primary(remote="1/psk_file = nothing.key\n"), "P3-E117", "1/psk_file", base_dir=tmp_path)


def test_psk_file_that_is_a_directory_or_empty_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.key"
    empty.touch(mode=0o600)
    os.chmod(empty, 0o600)
    assert_error(primary(remote=f"1/psk_file = {tmp_path}\n"), "P3-E117", "1/psk_file")
    assert_error(primary(remote=f"1/psk_file = {empty}\n"), "P3-E117", "1/psk_file")


# --- Files --------------------------------------------------------------------------

def file_errors(path: Path) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    return caught.value.errors


def test_directory_is_refused(tmp_path: Path) -> None:
    [error] = file_errors(tmp_path)
    assert error.code == "P3-E100" and "directory" in error.detail


def test_missing_file_is_refused(tmp_path: Path) -> None:
    [error] = file_errors(tmp_path / "absent.conf")
    assert error.code == "P3-E100"


def test_binary_file_is_refused_with_the_line_of_the_nul(tmp_path: Path) -> None:
    path = tmp_path / "bin.conf"
    path.write_bytes(b"localstart\nip 4\n\x7fELF\x00\x01")
    [error] = file_errors(path)
    assert (error.code, error.line) == ("P3-E100", 3)


def test_non_utf8_file_is_refused_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.conf"
    path.write_bytes("localstart\n# caf\u00e9\n".encode("latin-1"))
    [error] = file_errors(path)
    assert (error.code, error.line) == ("P3-E100", 2)


def test_huge_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.conf"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    [error] = file_errors(path)
    assert error.code == "P3-E119"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    [error] = file_errors(fifo)
    assert error.code == "P3-E100"


def test_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.conf"
    path.write_text(primary())
    os.chmod(path, 0)
    if os.geteuid() != 0:
        [error] = file_errors(path)
        assert error.code == "P3-E100"
        return
    # Root reads every file: ask from a child that dropped to an unprivileged user.
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = "none"
        try:
            os.setgid(65534)
            os.setuid(65534)
            load_config(path)
        except ConfigErrors as errors:
            code = errors.errors[0].code
        except BaseException:  # noqa: BLE001 - anything else is reported to the parent
            code = "other"
        os.write(writer, code.encode())
        os._exit(0)
    os.close(writer)
    answer = os.read(reader, 64).decode()
    os.close(reader)
    os.waitpid(child, 0)
    assert answer == "P3-E100"


@pytest.mark.parametrize("name", ["primary.conf", "secondary.conf", "primary-ipv6.conf"])
def test_shipped_examples_are_valid(name: str) -> None:
    config = load_config(REPO / "examples" / name)
    assert config.remotes
    json.dumps(config.to_dict())


def test_to_dict_holds_every_value_with_its_source() -> None:
    text = primary(local="rekey_wait = 1200\n", remote="1/key_array = 32\n")
    data = parse_config(text).to_dict()
    assert data["role"] == "primary"
    assert data["local"]["rekey_wait"] == {"value": 1200, "source": "local", "line": line_of(text, "rekey_wait")}
    remote = data["remotes"][0]
    assert remote["key_array"]["source"] == "remote" and remote["key_array"]["value"] == 32
    assert remote["rekey_wait"] == {"value": 1200, "source": "local", "line": line_of(text, "rekey_wait")}
    assert remote["subnets"][0]["value"] == "10.1.0.0/16"
    json.dumps(data)


def test_read_psk_returns_the_key_without_surrounding_white_space(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("  0123456789abcdef\n")
    os.chmod(key, 0o600)
    assert read_psk(key) == b"0123456789abcdef"
    os.chmod(key, 0o644)
    with pytest.raises(ConfigErrors) as caught:
        read_psk(key)
    assert caught.value.code == "P3-E117"
    with pytest.raises(ConfigErrors):
        read_psk(tmp_path / "absent")


def test_huge_keywords_values_and_error_counts_stay_readable() -> None:
    long_keyword = errors_of("k" * 100_000 + " 1\n")
    assert long_keyword[0].code == "P3-E102" and len(str(long_keyword[0])) < 300
    long_value = errors_of(primary(local="interface " + "i" * 100_000 + "\n"))
    assert [e.code for e in long_value] == ["P3-E104"] and len(str(long_value[0])) < 300
    with pytest.raises(ConfigErrors) as caught:
        parse_config(primary(remote="1/bogus 1\n" * 500), filename="t.conf")
    assert len(caught.value.errors) == 100 and caught.value.omitted == 400
    assert caught.value.message().endswith("... and 400 more problem(s) not shown")
