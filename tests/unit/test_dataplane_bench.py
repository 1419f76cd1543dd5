"""Each benchmark suite writes its own section of bench/results.md and leaves
the other suites' sections alone (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

from p3hw.commands.bench import write_section

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "crypto.py"


def _crypto_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("p3hw_bench_crypto_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_crypto_section_is_replaced_and_other_sections_survive(tmp_path: pathlib.Path) -> None:
    results = tmp_path / "results.md"
    results.write_text("# results\n\n<!-- bench:lpm:begin -->\nLPM table\n<!-- bench:lpm:end -->\n")
    write_section("crypto", "first crypto table", results)
    write_section("crypto", "second crypto table", results)
    text = results.read_text()
    assert "LPM table" in text
    assert "second crypto table" in text and "first crypto table" not in text
    assert text.count("<!-- bench:crypto:begin -->") == 1


def test_openssl_speed_output_is_parsed() -> None:
    crypto = _crypto_module()
    ops = crypto.openssl_ops_per_s("aes-128-gcm", 64, 1)
    assert ops > 0
