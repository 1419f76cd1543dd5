"""`p3hw failclosed status|clear`: usage and configuration errors carry reason codes, never a traceback.

The routes themselves are exercised by tests/e2e/test_fail_closed.py (root, namespaces).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p3hw.cli import main


def test_clear_needs_the_configuration_it_clears_for(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["failclosed", "clear"])
    assert stopped.value.code == 2
    assert "-c/--config" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["status", "clear"])
def test_a_missing_configuration_is_a_reason_coded_error(verb: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["failclosed", verb, "-c", str(tmp_path / "absent.conf")]) == 2
    err = capsys.readouterr().err
    assert "P3-E100" in err and "absent.conf" in err and "Traceback" not in err


def test_a_bad_fail_open_value_is_reported_with_file_and_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "gw.conf"
    conf.write_text("localstart\nrole = secondary\nip = 4\naddress = 198.51.100.2\nfail_open = maybe\nlocalend\n"
                    "1/address = 198.51.100.1\n1/subnet1 = 10.1.0.0\n1/mask1 = 24\n")
    assert main(["failclosed", "status", "-c", str(conf)]) == 2
    assert f"{conf}:5: P3-E104" in capsys.readouterr().err
