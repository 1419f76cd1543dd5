"""p3hw — Protected Point to Point (P3) site-to-site encrypted gateway.

The version has one source, ``git describe`` (:func:`version_from_git`): a package build writes it into
``p3hw/_version.py`` (generated, ignored by git; docs/install.md); a git checkout without that file asks
git when ``__version__`` is first read; a wheel installed away from git has it in its metadata.
"""

from __future__ import annotations

import os
import re
import subprocess

#: Where a Debian package puts the native libraries (libp3dpdk.so); a checkout has them in build/.
PACKAGE_LIBDIR = "/usr/lib/p3hw"
#: Without any ``v<version>`` tag, the version counts the commits on top of this one.
UNTAGGED_BASE = "0.0.0"


def version_from_git(tree: str | None = None) -> str | None:
    """The version of the checkout at ``tree`` (default: the one this file is in), or None when not a checkout.

    ``v1.2.0`` tag -> ``1.2.0``; 5 commits after it -> ``1.2.0+5.g<hash>``; no tag -> ``0.0.0+<commits>.g<hash>``;
    uncommitted changes add ``.dirty``. Valid for PEP 440 and Debian, and growing with each commit.
    """
    tree = tree or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", tree, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if git("rev-parse", "--show-toplevel") is None:
        return None
    head = git("rev-parse", "--short=10", "HEAD")
    if head is None:
        return None
    described = git("describe", "--tags", "--long", "--match", "v[0-9]*")
    match = re.fullmatch(r"v(\d+(?:\.\d+)*)-(\d+)-g([0-9a-f]+)", described or "")
    if match:
        base, count, commit = match.group(1), int(match.group(2)), match.group(3)
    else:
        base, count, commit = UNTAGGED_BASE, int(git("rev-list", "--count", "HEAD") or 0), head
    version = base if count == 0 and match else f"{base}+{count}.g{commit}"
    if git("status", "--porcelain", "--untracked-files=no"):
        version += ".dirty" if "+" in version else "+dirty"
    return version


def _installed() -> tuple[str, str] | None:
    try:
        from p3hw import _version  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _version.VERSION, getattr(_version, "LIBDIR", "")


def native_library(name: str) -> str:
    """Where the native library ``name`` is: the package's LIBDIR when installed, else the checkout's build/."""
    installed = _installed()
    if installed and installed[1]:
        return os.path.join(installed[1], name)
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", name)


def _metadata_version() -> str:
    """A wheel installed without git around: the version its build took from git (pyproject.toml)."""
    from importlib import metadata

    try:
        return metadata.version("p3hw")
    except metadata.PackageNotFoundError:
        return f"{UNTAGGED_BASE}+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        installed = _installed()
        version = installed[0] if installed else (version_from_git() or _metadata_version())
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module 'p3hw' has no attribute {name!r}")
