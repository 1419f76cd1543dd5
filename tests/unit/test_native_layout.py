"""Which way the native arrows run (docs/architecture.md "Native"): the core is handed its backends."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a concrete backend exports: engine entries and constructors, the DPDK loaders.
BACKEND_NAMES = re.compile(r"\b(p3_(aesni|pkcs11|accel|cryptodev)_\w+|p3_dpdk_ports_load|p3_p11_\w+)\b")


def test_the_core_names_no_concrete_crypto_engine_or_dpdk_loader() -> None:
    named = {}
    for source in sorted((ROOT / "native" / "src").glob("*.[ch]")):
        found = sorted(set(m.group(1) for m in BACKEND_NAMES.finditer(source.read_text())))
        if found:
            named[source.name] = found
    assert named == {}, f"the core names backends instead of using the table it is handed: {named}"


def test_the_product_dpdk_library_is_built_without_test_sources() -> None:
    makefile = (ROOT / "native" / "Makefile").read_text()
    product_sources = re.search(r"^DPDK_SRCS\s*:=\s*(.+)$", makefile, re.M)
    assert product_sources is not None
    assert "test" not in product_sources.group(1)
    assert not list((ROOT / "backends" / "dpdk" / "src").glob("*ring*"))
