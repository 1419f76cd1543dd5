"""PKCS#11 backend (python-pkcs11): hardware key generation for `key_generation = 2`.

* ``elf``       — checks a module's ELF exports before it is ever loaded (P3-E600);
* ``token``     — a logged-in token and its session pool, reason-coded errors (P3-E601..E603);
* ``keysource`` — the KeySource whose every key is generated in the token, with its audit view.

The submodules are imported where used, so ``p3hw doctor`` and the CLI work
without python-pkcs11 installed. The HSM crypto engine (keys that never
leave the token, C_Encrypt from the dataplane) is a separate part of issue 6.
"""

from __future__ import annotations

NAME = "pkcs11"
