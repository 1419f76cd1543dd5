"""PKCS#11 backend: the token as key source and as crypto engine, both halves here.

Python (python-pkcs11), hardware key generation for `key_generation = 2`:

* ``elf``       — checks a module's ELF exports before it is ever loaded (P3-E600);
* ``token``     — a logged-in token and its session pool, reason-coded errors (P3-E601..E603);
* ``keysource`` — the KeySource whose every key is generated in the token, with its audit view.

C, the crypto engine (``pkcs11_engine.c``, compiled into ``p3hw._dataplane``;
compiled out when no PKCS#11 header was found at build time): SA keys as
token objects that never leave it, C_Encrypt / C_Decrypt on the lookaside
driver's thread (docs/engines.md); chosen with
``Dataplane.set_engine("pkcs11", EngineParams(module_path=..., token_label=..., pin=...))``.

The submodules are imported where used, so ``p3hw doctor`` and the CLI work
without python-pkcs11 installed.
"""

from __future__ import annotations

NAME = "pkcs11"
