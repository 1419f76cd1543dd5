"""Process hardening of a daemon at start (issue 16): no core dumps of a process that holds keys.

A core dump of a gateway holds its SA keys, PSKs and the HSM PIN. At start the
daemon sets ``RLIMIT_CORE`` to 0 (hard and soft, so no child can raise it)
and ``prctl(PR_SET_DUMPABLE, 0)``, which also keeps other processes of the
same uid from ptrace-attaching and reading its memory. An operator who needs a
core (a crash to debug) starts the daemon with ``--allow-core-dumps`` and
raises ``LimitCORE=`` in the unit (docs/hardware.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

from p3hw.backends.pkcs11.pinguard import EXIT_PIN_REFUSED
from p3hw.reasons import P3Error

PR_SET_DUMPABLE = 4   # linux/prctl.h
PR_GET_DUMPABLE = 3


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return int(libc.prctl(option, arg, 0, 0, 0))


def disable_core_dumps() -> None:
    """No core file and no ptrace by the same uid, for the rest of this process's life."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if _prctl(PR_SET_DUMPABLE, 0) != 0:
        raise P3Error("OS_ERROR", f"prctl(PR_SET_DUMPABLE, 0) failed (errno {ctypes.get_errno()})",
                      "start the daemon with --allow-core-dumps to run without this protection")


def dumpable() -> bool:
    """Whether this process may dump core (PR_GET_DUMPABLE)."""
    return _prctl(PR_GET_DUMPABLE) != 0


def exit_status(error: P3Error) -> int:
    """A daemon that stops on *error*: the message on stderr and the exit status systemd acts on.

    A PIN the token refused is :data:`EXIT_PIN_REFUSED` (RestartPreventExitStatus= in the units: restarting
    would only try the same PIN again); anything else is re-raised for the CLI's usual exit status 2.
    """
    if error.reason.name != "PKCS11_PIN":
        raise error
    print(f"p3hw: {error.message()}", file=sys.stderr)
    return EXIT_PIN_REFUSED
