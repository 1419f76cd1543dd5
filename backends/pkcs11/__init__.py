"""PKCS#11 backend (python-pkcs11): hardware key generation for `key_generation = 2`.

* ``elf``       — checks a module's ELF exports before it is ever loaded (P3-E600);
* ``token``     — a logged-in token and its session pool, reason-coded errors (P3-E601..E603);
* ``keysource`` — the KeySource whose every key is generated in the token, with its audit view.

The HSM crypto engine (keys that never leave the token, C_Encrypt from the
dataplane) is a separate part of issue 6 and not here.
"""

from __future__ import annotations

from p3hw.backends.pkcs11.elf import check_pkcs11_module, read_elf
from p3hw.backends.pkcs11.keysource import Pkcs11KeySource, token_keys
from p3hw.backends.pkcs11.token import PIN_ENV, TokenPool, read_pin

NAME = "pkcs11"

__all__ = ["NAME", "PIN_ENV", "Pkcs11KeySource", "TokenPool", "check_pkcs11_module", "read_elf", "read_pin",
           "token_keys"]
