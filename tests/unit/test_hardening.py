"""Daemons dump no core (issue 16: a SIGABRT wrote a 1.6 GB core of a process that holds keys)."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = ("import os, resource, sys; from p3hw.runtime import hardening\n"
         "if sys.argv[1] == 'harden': hardening.disable_core_dumps()\n"
         "print(int(hardening.dumpable()), resource.getrlimit(resource.RLIMIT_CORE)[0], flush=True)\n"
         "os.chdir(sys.argv[2]); os.abort()\n")


def run_probe(mode: str, directory: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, mode, directory], capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_hardened_process_is_not_dumpable_and_leaves_no_core_when_it_aborts() -> None:
    with tempfile.TemporaryDirectory() as cwd:
        done = run_probe("harden", cwd)
        assert done.returncode == -signal.SIGABRT
        dumpable, core_limit = done.stdout.split()
        assert (dumpable, core_limit) == ("0", "0")
        assert not any(p.name.startswith("core") for p in Path(cwd).iterdir())

