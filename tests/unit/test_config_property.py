"""Whatever text or bytes a configuration holds, only ConfigErrors come out (or a Config)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p3hw.config import LOCAL_KEYWORDS, REMOTE_KEYWORDS, Config, ConfigErrors, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [(REPO / "examples" / name).read_text() for name in ("primary.conf", "secondary.conf",
                                                                 "primary-ipv6.conf")]
FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parses_or_fails_cleanly(text: str, role: str | None = None) -> None:
    try:
        result = parse_config(text, filename="fuzz.conf", role=role, base_dir="/nonexistent")
    except ConfigErrors as errors:
        assert errors.errors
        for error in errors:
            assert error.code.startswith("P3-E1")
            assert str(error).startswith(f"fuzz.conf:{error.line}: {error.code} ")
    else:
        assert isinstance(result, Config)
        result.to_dict()


@FAST
@given(st.text(max_size=400), st.sampled_from([None, "primary", "secondary"]))
def test_random_text_gives_only_config_errors(text: str, role: str | None) -> None:
    parses_or_fails_cleanly(text, role)


values = st.one_of(
    st.sampled_from(["4", "6", "0", "1", "2", "65536", "-1", "AES256", "gcm", "esp", "primary", "secondary",
                     "198.51.100.1", "10.0.0.0", "255.255.0.0", "/24", "/129", "2001:db8::", "ffff::", "=",
                     "255.0.255.0", "10.0.0.1", "", "x" * 20, "1e9", "０", "١", "/dev/null"]),
    st.text(max_size=12),
)
keywords = st.one_of(
    st.sampled_from(list(LOCAL_KEYWORDS) + ["localstart", "localend", "#", ""]),
    st.builds(lambda n, k: f"{n}/{k}", st.integers(0, 10**12), st.sampled_from(
        [*REMOTE_KEYWORDS, "subnet1", "mask1", "subnet2", "mask99", "array_size", "role"])),
    st.text(max_size=10),
)
lines = st.builds(lambda k, sep, v: f"{k}{sep}{v}", keywords, st.sampled_from([" ", " = ", "=", "\t", ""]), values)


@FAST
@given(st.lists(lines, max_size=40), st.sampled_from([None, "primary", "secondary"]))
def test_keyword_shaped_lines_give_only_config_errors(body: list[str], role: str | None) -> None:
    parses_or_fails_cleanly("\n".join(body), role)


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    text_lines = draw(st.sampled_from(EXAMPLES)).split("\n")
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "edit", "truncate"]))
        if not text_lines:
            break
        at = draw(st.integers(0, len(text_lines) - 1))
        if action == "delete":
            del text_lines[at]
        elif action == "duplicate":
            text_lines.insert(at, text_lines[at])
        elif action == "swap":
            other = draw(st.integers(0, len(text_lines) - 1))
            text_lines[at], text_lines[other] = text_lines[other], text_lines[at]
        elif action == "insert":
            text_lines.insert(at, draw(lines))
        elif action == "edit":
            line = text_lines[at]
            cut = draw(st.integers(0, len(line)))
            text_lines[at] = line[:cut] + draw(st.text(max_size=4)) + line[cut + draw(st.integers(0, 3)):]
        else:
            text_lines = text_lines[:at]
    return "\n".join(text_lines)


@FAST
@given(mutated_examples())
def test_mutated_examples_give_only_config_errors(text: str) -> None:
    parses_or_fails_cleanly(text)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_in_a_file_give_only_config_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.conf"
        path.write_bytes(data)
        try:
            load_config(path)
        except ConfigErrors as errors:
            assert all(e.code.startswith("P3-E1") for e in errors)
