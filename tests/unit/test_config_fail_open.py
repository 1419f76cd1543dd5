"""The `fail_open` keyword (docs/config.md, docs/runtime.md "Fail closed"): off unless asked for."""

from __future__ import annotations

import pytest

from p3hw.config import ConfigErrors, parse_config

BASE = ("localstart\nrole = {role}\nip = 4\naddress = 198.51.100.1\n{local}localend\n"
        "1/address = 203.0.113.10\n1/subnet1 = 10.1.0.0\n1/mask1 = 255.255.0.0\n")


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_gateways_fail_closed_unless_the_file_says_otherwise(role: str) -> None:
    config = parse_config(BASE.format(role=role, local=""), filename="t.conf")
    assert config.local.fail_open == 0
    assert config.local.source("fail_open") == "default"


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_fail_open_1_is_the_operators_opt_out(role: str) -> None:
    config = parse_config(BASE.format(role=role, local="fail_open = 1\n"), filename="t.conf")
    assert config.local.fail_open == 1
    assert config.to_dict()["local"]["fail_open"]["line"] == 5


def test_fail_open_other_than_0_or_1_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(BASE.format(role="primary", local="fail_open = yes\n"), filename="t.conf")
    error = caught.value.errors[0]
    assert (error.code, error.line) == ("P3-E104", 5)
    assert "fail_open" in error.message() and "0, 1" in error.message()


def test_fail_open_is_a_local_keyword_not_a_remote_one() -> None:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(BASE.format(role="primary", local="") + "1/fail_open = 1\n", filename="t.conf")
    assert caught.value.errors[0].line == 9
