"""Both install modes put backends/ and simulators/ at p3hw.backends and p3hw.simulators (DESIGN.md §2).

Each mode installs a copy of the source tree into a throwaway virtual
environment (build dependencies come from the package index, as for any
``pip install``), then imports the mapped packages from outside the tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "*.so", "__pycache__", ".pytest_cache",
                              ".hypothesis", ".ruff_cache")

PROBE = """
import json, p3hw, p3hw.backends, p3hw.simulators, p3hw.config
print(json.dumps({"p3hw": p3hw.__file__, "backends": p3hw.backends.__file__,
                  "simulators": p3hw.simulators.__file__}))
"""


def install(tmp_path: Path, editable: bool) -> tuple[Path, Path]:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
               *(["-e"] if editable else []), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return python, source


def imported_from(python: Path) -> dict[str, str]:
    done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, cwd="/", timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_regular_install_imports_the_mapped_packages(tmp_path: Path) -> None:
    python, source = install(tmp_path, editable=False)
    where = imported_from(python)
    site = tmp_path / "venv" / "lib"
    for name in ("p3hw", "backends", "simulators"):
        assert Path(where[name]).is_relative_to(site), where
    assert Path(where["backends"]).parent.name == "backends"  # p3hw/backends/__init__.py
    # The installed console script works and the example configurations pass.
    examples = [str(p) for p in (source / "examples").glob("*.conf")]
    done = subprocess.run([str(python.parent / "p3hw"), "config", "check", *examples],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_editable_install_imports_the_mapped_packages_from_the_tree(tmp_path: Path) -> None:
    python, source = install(tmp_path, editable=True)
    where = imported_from(python)
    assert Path(where["p3hw"]) == source / "p3hw" / "__init__.py"
    assert Path(where["backends"]) == source / "backends" / "__init__.py"
    assert Path(where["simulators"]) == source / "simulators" / "__init__.py"
