"""Packaging glue that pyproject.toml cannot express.

* cffi_modules is a setup() keyword: it builds ``p3hw._dataplane``.
* ``backends/`` and ``simulators/`` are mapped into the ``p3hw`` namespace
  (DESIGN.md §2) so nothing generic like ``backends`` lands in site-packages.
"""

from setuptools import find_packages, setup

MAPPED = {"p3hw": "p3hw", "p3hw.backends": "backends", "p3hw.simulators": "simulators"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for name, folder in MAPPED.items():
        package_dir[name] = folder
        packages.append(name)
        for sub in find_packages(folder):
            packages.append(f"{name}.{sub}")
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    cffi_modules=["native/build_dataplane.py:ffibuilder"],
)
