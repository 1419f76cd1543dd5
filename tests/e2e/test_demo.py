"""`make demo` (p3hw demo) as a user runs it, shortened: it ends with the zero-loss summary."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]


def test_demo_reports_rekeys_and_zero_lost_packets() -> None:
    run = subprocess.run([sys.executable, "-m", "p3hw.cli", "demo", "--seconds", "8", "--rekey-wait", "2"],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rekeys = re.search(r"rekeys done: (\d+); ping packets sent (\d+), answered (\d+), lost (\d+)", run.stdout)
    assert rekeys is not None, run.stdout[-3000:]
    done, sent, answered, lost = (int(g) for g in rekeys.groups())
    assert done >= 2 and sent > 0 and answered == sent and lost == 0
    assert "zero data packets lost across all rekeys" in run.stdout
    # one status line a second when the output is not a terminal
    assert len(re.findall(r"^\[\s*\d+\.\d s\] sessions 2/2", run.stdout, re.M)) >= 5
