"""A SoftHSM2 token per test: the stand-in for a hardware security module (DESIGN.md §5).

SoftHSM2 reads its configuration from the file named by ``SOFTHSM2_CONF``
when it is first loaded, so each token lives in its own temporary
``tokendir`` and never touches /var/lib/softhsm. A process loads one
PKCS#11 library only once (python-pkcs11 caches it), so every token made
in one process must share the same ``SOFTHSM2_CONF``: :func:`token` reuses
the first configuration file and gives each test its own token label in a
tokendir created for the process.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from p3hw.reasons import P3Error

#: Debian's softhsm2 package.
MODULE_PATH = "/usr/lib/softhsm/libsofthsm2.so"
UTIL = "softhsm2-util"
#: softhsm2-util waits for nothing; a hung call is a broken install.
UTIL_TIMEOUT_S = 30


@dataclass(frozen=True)
class Token:
    """One initialised token: how a p3hw configuration names it."""

    module: str
    label: str
    pin: str
    so_pin: str
    conf: Path
    tokendir: Path

    def write_pin_file(self, directory: Path) -> Path:
        """The user PIN in a mode-0600 file, as ``pkcs11_pin_file`` wants it."""
        path = directory / f"{self.label}.pin"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.pin + "\n")
        return path

    def delete(self) -> None:
        """Remove the token, as if the HSM were unplugged (the next open sees P3-E602)."""
        _util(self.conf, "--delete-token", "--token", self.label)


def available() -> tuple[bool, str]:
    """(usable, why): SoftHSM2 is installed where tests and doctor expect it."""
    if not os.path.exists(MODULE_PATH):
        return False, f"{MODULE_PATH} missing (apt-get install softhsm2)"
    if shutil.which(UTIL) is None:
        return False, f"{UTIL} not on PATH (apt-get install softhsm2)"
    return True, MODULE_PATH


def _util(conf: Path, *args: str) -> str:
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    try:
        done = subprocess.run([UTIL, *args], env=env, capture_output=True, text=True, timeout=UTIL_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise P3Error("PKCS11_TOKEN", f"{UTIL} {' '.join(args[:1])}: {exc}") from None
    if done.returncode != 0:
        raise P3Error("PKCS11_TOKEN", f"{UTIL} {' '.join(args[:1])}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


_process_conf: Path | None = None


def process_conf() -> Path:
    """This process's SoftHSM2 configuration (one temporary tokendir), set in ``SOFTHSM2_CONF``."""
    global _process_conf
    if _process_conf is None or not _process_conf.exists():
        root = Path(tempfile.mkdtemp(prefix="p3hw-softhsm-"))
        tokendir = root / "tokens"
        tokendir.mkdir()
        conf = root / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n"
                        "slots.removable = false\n")
        _process_conf = conf
        atexit.register(remove_process_tokens)
    os.environ["SOFTHSM2_CONF"] = str(_process_conf)
    return _process_conf


def create_token(label: str | None = None, pin: str | None = None) -> Token:
    """Initialise a fresh token in this process's tokendir."""
    conf = process_conf()
    label = label or f"p3hw-{secrets.token_hex(4)}"
    pin = pin or secrets.token_hex(4)
    so_pin = secrets.token_hex(4)
    _util(conf, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin)
    tokendir = Path(conf.read_text().split("=", 1)[1].split("\n", 1)[0].strip())
    rescan()
    return Token(MODULE_PATH, label, pin, so_pin, conf, tokendir)


def rescan() -> None:
    """Make a SoftHSM2 already loaded in this process see the current tokens.

    SoftHSM2 reads its tokendir once, at C_Initialize; python-pkcs11 keeps one
    library object per path, so C_Finalize + C_Initialize (``reinitialize``)
    is how a new token appears. Sessions opened before are closed by it.
    """
    import pkcs11

    from p3hw.backends.pkcs11.token import module_lock

    if "pkcs11" in sys.modules and os.path.exists(MODULE_PATH):
        with module_lock(MODULE_PATH):
            pkcs11.lib(MODULE_PATH).reinitialize()


def remove_process_tokens() -> None:
    """Delete this process's tokendir and everything in it."""
    global _process_conf
    if _process_conf is not None:
        shutil.rmtree(_process_conf.parent, ignore_errors=True)
        _process_conf = None
