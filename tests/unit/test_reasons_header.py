"""The native code names reason codes through native/include/p3_reasons.h, generated from p3hw/reasons.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from p3hw import reasons

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_c_header_matches_the_reason_catalogue() -> None:
    header = (ROOT / reasons.C_HEADER_PATH).read_text()
    assert header == reasons.c_header(), "regenerate: python -m p3hw.reasons > native/include/p3_reasons.h"


def test_every_code_in_the_catalogue_has_a_c_name_with_the_same_number() -> None:
    header = (ROOT / reasons.C_HEADER_PATH).read_text()
    c_names = {name: int(num) for name, num in re.findall(r"P3R_(\w+) = (\d+),", header)}
    for r in reasons.REASONS.values():
        assert c_names[r.name] == int(r.code[4:])
    assert len(c_names) == len(reasons.REASONS)


def test_native_code_returns_named_reasons_not_bare_numbers() -> None:
    out = subprocess.run(["git", "grep", "-nE", r"return -[0-9]{3}\b", "--", "*.c", "*.h"],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.stdout == ""
