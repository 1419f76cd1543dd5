"""The PKCS#11 crypto engine (backends/pkcs11_engine/pkcs11_engine.c, docs/engines.md).

Its C is compiled into ``p3hw._dataplane`` (compiled out when no PKCS#11
header was found at build time); it is chosen with
``Dataplane.set_engine("pkcs11", EngineParams(module_path=..., token_label=..., pin=...))``.
The key source of ``key_generation = 2`` is the other PKCS#11 package,
``backends/pkcs11`` (python-pkcs11).
"""

from __future__ import annotations

NAME = "pkcs11"
