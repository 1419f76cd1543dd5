"""`p3hw bench keygen`: key material for rekeys per second, per key source (spec §4.1, §4.2 (1)).

Spec §4.1 sets the minimum period of key generation at once every ten minutes for every
session; §4.2 (1) fits key servers with hardware key generation when many keys are needed. A
rekey of an AES-256-GCM session with PFS asks its key source for three pieces of material (the
primary's key generation, p3hw/protocol/rekey.py): the data keys of both directions
(2 × 36 octets), the control keys (2 × 32) and the ephemeral PFS secret (32; 40 with an ECP-256
share in FIPS mode). This measures how many such rekeys per second each source delivers on this
machine, one after another on one thread (the daemon's rekeys are sequential too), and so how
many sessions one source sustains at the 600 s period:

* software: the OS CSPRNG (``key_generation = 1``);
* cpu: RDSEED-seeded RDRAND with its health tests (``key_generation = 2``, ``hardware_rng = cpu``);
* pkcs11 (SoftHSM2): each piece a generic-secret key made in the token with C_GenerateKey,
  read out and later destroyed (``key_generation = 2`` with a token), as the daemon does.

A real HSM's rate differs from SoftHSM2's (a software token on this CPU): the row says what the
token path costs in p3hw itself, and how to read a vendor's figure against it.
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

from p3hw.commands.bench import write_section
from p3hw.crypto.keysource import KeySource, SoftwareKeySource
from p3hw.reasons import P3Error

#: Octets a PFS rekey of an AES-256-GCM session asks for, in order (see the module docstring).
REKEY_PIECES = (72, 64, 32)
#: Spec §4.1: every session is rekeyed at least this often.
REKEY_PERIOD_S = 600


@dataclass
class Row:
    source: str
    rekeys_per_s: float
    sessions_at_600_s: int
    note: str = ""


def rekeys_per_second(source: KeySource, seconds: float) -> float:
    for piece in REKEY_PIECES:                       # warm up (a token session, the RNG's first reseed)
        source.random_bytes(piece)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for piece in REKEY_PIECES:
            source.random_bytes(piece)
        done += 1
    return done / elapsed


def _sources() -> list[tuple[str, Callable[[], KeySource], str]]:
    def cpu() -> KeySource:
        from p3hw.backends.rng import CpuRngKeySource

        return CpuRngKeySource()

    def token() -> KeySource:
        from p3hw.backends.pkcs11.keysource import Pkcs11KeySource
        from p3hw.backends.pkcs11.token import TokenPool
        from p3hw.simulators import softhsm

        usable, why = softhsm.available()
        if not usable:
            raise P3Error("PKCS11_MODULE", why)
        made = softhsm.create_token()
        return Pkcs11KeySource(TokenPool(made.module, made.label, made.pin))

    return [("software (OS CSPRNG)", SoftwareKeySource, "key_generation = 1"),
            ("cpu (RDSEED/RDRAND)", cpu, "key_generation = 2, hardware_rng = cpu"),
            ("pkcs11 (SoftHSM2 token)", token, "key_generation = 2, C_GenerateKey per piece")]


def run(seconds: float = 2.0, write: bool = True, **_: object) -> list[Row]:
    rows: list[Row] = []
    for name, make, note in _sources():
        try:
            source = make()
        except P3Error as error:
            rows.append(Row(name, 0.0, 0, f"not measured: {error.message()}"))
            continue
        try:
            rate = rekeys_per_second(source, seconds)
        except P3Error as error:
            rows.append(Row(name, 0.0, 0, f"failed: {error.message()}"))
            continue
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        rows.append(Row(name, rate, int(rate * REKEY_PERIOD_S), note))
    software = rows[0].rekeys_per_s or 1.0
    lines = ["## Key generation for rekeys, per key source (`p3hw bench keygen`)", "",
             f"{datetime.date.today().isoformat()}, {platform.machine()}, one thread, {seconds:g} s per source. "
             "One rekey = the material of a PFS rekey of an AES-256-GCM session (72 + 64 + 32 octets, "
             "three requests). Sessions sustained = rekeys/s × 600 (spec §4.1: every session at least "
             "once every ten minutes), with the source doing nothing else.", "",
             "| key source | rekeys/s | ratio to software | sessions at one rekey per 600 s | how |",
             "| --- | ---: | ---: | ---: | --- |"]
    for row in rows:
        lines.append(f"| {row.source} | {row.rekeys_per_s:,.0f} | {row.rekeys_per_s / software:.3f} | "
                     f"{row.sessions_at_600_s:,} | {row.note} |")
    text = "\n".join(lines)
    print(text)
    if write:
        write_section("keygen", text)
    return rows
