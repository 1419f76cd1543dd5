"""The PKCS#11 crypto engine's Python side (its C: backends/pkcs11/pkcs11_engine.c, docs/engines.md).

Its C is compiled into ``p3hw._dataplane``; the build fails when the PKCS#11
header (Debian: libp11-kit-dev) is missing, unless it was told to go without
(``CFLAGS=-DP3HW_WITHOUT_PKCS11``): then the engine refuses with P3-E612
and :func:`compiled_out` says so (``p3hw doctor`` lists it). It is chosen with
``Dataplane.set_engine("pkcs11", EngineParams(module_path=..., token_label=..., pin=...))``.
The key source of ``key_generation = 2`` is the other PKCS#11 package,
``backends/pkcs11`` (python-pkcs11).
"""

from __future__ import annotations

from typing import Any

from p3hw.reasons import P3Error

NAME = "pkcs11"
#: The native code of an engine that was compiled out (P3-E612, BACKEND_NOT_BUILT).
NOT_BUILT_RC = -612
#: What a build needs for this engine (the hint of P3-E612 and doctor's line).
BUILD_DEPENDENCY = "the PKCS#11 header <p11-kit-1/p11-kit/pkcs11.h> (apt-get install libp11-kit-dev)"


def compiled_out() -> bool:
    """Whether the extension was built without the PKCS#11 engine; asks the native code, loads no module.

    An empty module path is refused before any dlopen: -600 by a built engine, -612 by the stub.
    """
    from p3hw import dataplane

    ffi, lib = dataplane.native()
    ctx = lib.p3dp_ctx_new(1, 1)
    if ctx == ffi.NULL:
        return False
    try:
        params = ffi.new("p3dp_engine_params *")
        empty = ffi.new("char[]", b"")
        params.module_path = params.token_label = params.pin = empty
        rc = lib.p3dp_ctx_set_engine(ctx, dataplane.ENGINE_IDS[NAME], params, dataplane.ENGINE_IDS["none"])
        return int(rc) == NOT_BUILT_RC
    finally:
        lib.p3dp_ctx_free(ctx)


def start_engine(dp: Any, kind: str, params: Any, fallback: str) -> None:
    """``dp.set_engine(kind, params, fallback)``; for ``pkcs11`` with the PIN guard and clear refusals.

    A PIN the token refused before is not tried again (P3-E601, backends/pkcs11/pinguard.py); a refusal
    now is remembered. An engine compiled out says which build dependency was missing (P3-E612).
    """
    if kind != NAME:
        dp.set_engine(kind, params, fallback)
        return
    from p3hw.backends.pkcs11 import pinguard

    pinguard.check(params.module_path, params.token_label, params.pin)
    try:
        dp.set_engine(kind, params, fallback)
    except P3Error as error:
        if error.reason.name == "PKCS11_PIN":
            pinguard.remember(params.module_path, params.token_label, params.pin)
            raise P3Error("PKCS11_PIN", f"crypto_engine = pkcs11: token {params.token_label!r} in "
                          f"{params.module_path} refused the PIN", pinguard.REFUSED_HINT) from None
        if error.reason.name == "BACKEND_NOT_BUILT":
            raise P3Error("BACKEND_NOT_BUILT", "crypto_engine = pkcs11: this p3hw was built without the PKCS#11 "
                          f"engine; missing at build time: {BUILD_DEPENDENCY}",
                          "install it and run 'make build'; 'p3hw doctor' lists what is compiled out") from None
        raise
