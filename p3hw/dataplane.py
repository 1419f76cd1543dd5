"""The Python face of the native dataplane.

The only module that imports the cffi extension ``p3hw._dataplane``
(STYLE.md: bindings in one place). C errors come back as negative reason
numbers and become ``P3Error`` here.
"""

from __future__ import annotations

from typing import Any

from p3hw.reasons import REASONS, P3Error

#: The ABI stamp this Python code was written against (native/src/cpu.c).
EXPECTED_ABI_VERSION = 1

try:
    from p3hw import _dataplane  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    _dataplane = None
    _IMPORT_ERROR: str | None = str(exc)
else:
    _IMPORT_ERROR = None

CPU_FEATURE_NAMES = {
    "aesni": "P3DP_CPU_AESNI",
    "pclmul": "P3DP_CPU_PCLMUL",
    "avx2": "P3DP_CPU_AVX2",
    "vaes": "P3DP_CPU_VAES",
    "vpclmulqdq": "P3DP_CPU_VPCLMULQDQ",
    "rdrand": "P3DP_CPU_RDRAND",
    "rdseed": "P3DP_CPU_RDSEED",
    "avx512f": "P3DP_CPU_AVX512F",
}


def native() -> tuple[Any, Any]:
    """Return ``(ffi, lib)`` of the extension, or raise P3Error DP_NOT_BUILT / ABI_MISMATCH."""
    if _dataplane is None:
        raise P3Error("DP_NOT_BUILT", f"the native dataplane is not built: {_IMPORT_ERROR}",
                      hint="run 'make build'")
    got = int(_dataplane.lib.p3dp_abi_version())
    if got != EXPECTED_ABI_VERSION:
        raise P3Error("ABI_MISMATCH", f"extension ABI {got}, this p3hw expects {EXPECTED_ABI_VERSION}",
                      hint="rebuild with 'make build'")
    return _dataplane.ffi, _dataplane.lib


def check(rc: int, what: str) -> int:
    """Turn a native return code into P3Error when negative."""
    if rc >= 0:
        return rc
    code = f"P3-E{-rc:03d}"
    name = REASONS[code].name if code in REASONS else "INTERNAL"
    raise P3Error(name, f"{what} failed ({code})")


def abi_version() -> int:
    _, lib = native()
    return int(lib.p3dp_abi_version())


def cpu_features() -> dict[str, bool]:
    """The CPU features the crypto engines can use, as the native code sees them."""
    _, lib = native()
    bits = int(lib.p3dp_cpu_features())
    return {name: bool(bits & int(getattr(lib, const))) for name, const in CPU_FEATURE_NAMES.items()}
