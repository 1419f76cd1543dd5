"""The crypto engine a dataplane seals with (Appendix A extension ``crypto_engine``, docs/engines.md).

One place for the engine's parameters, used by the gateway for its dataplane and by the FIPS
self-tests (``p3hw/fips.py``) for the scratch dataplanes that test the same engine.
"""

from __future__ import annotations

from p3hw.backends.pkcs11.engine import start_engine
from p3hw.backends.pkcs11.token import read_pin
from p3hw.config import LocalHost
from p3hw.dataplane import Dataplane, EngineParams

#: A failed crypto engine is probed this often, and taken back when it answers right.
ENGINE_RECOVER_MS = 30_000


def set_crypto_engine(plane: Dataplane, local: LocalHost) -> None:
    """AES-NI (the default: nothing to set), the accelerator, the HSM or a DPDK crypto device."""
    if local.crypto_engine == "aesni":
        return
    hsm = local.crypto_engine == "pkcs11"
    pin = read_pin(local.pkcs11_pin_file) if hsm else ""
    start_engine(plane, local.crypto_engine, EngineParams(
        recover_ms=ENGINE_RECOVER_MS, module_path=(local.pkcs11_module or "") if hsm else "",
        token_label=local.pkcs11_token or "", pin=pin, eal_args=local.dpdk_eal_args), local.crypto_fallback)
