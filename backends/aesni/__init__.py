"""The AES-NI crypto engine: OpenSSL EVP, synchronous (backends/aesni/aesni.c).

It is the default engine of every dataplane context; its C is compiled into
``p3hw._dataplane``. This module only reports whether the CPU helps it.
"""

from __future__ import annotations

NAME = "aesni"


def available() -> tuple[bool, str]:
    """(usable, why): the engine always works; AES-NI makes it fast."""
    from p3hw import dataplane

    features = dataplane.cpu_features()
    if features.get("aesni"):
        return True, "AES-NI present" + (" with VAES" if features.get("vaes") else "")
    return True, "no AES-NI: OpenSSL falls back to table-based AES (slow)"
