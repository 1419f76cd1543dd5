"""`p3hw bench keygen` measures every key source and turns rates into sessions per 600 s."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "keygen.py"


def test_every_key_source_is_measured_and_sessions_follow_from_the_600_s_period() -> None:
    spec = importlib.util.spec_from_file_location("p3hw_bench_keygen_test", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    rows = module.run(seconds=0.05, write=False)
    assert [r.source.split()[0] for r in rows] == ["software", "cpu", "pkcs11"]
    software = rows[0]
    assert software.rekeys_per_s > 0 and software.sessions_at_600_s == int(software.rekeys_per_s * 600)
    for row in rows[1:]:
        # measured, or said why not — never a silent zero
        assert row.rekeys_per_s > 0 or row.note.startswith(("not measured", "failed"))
