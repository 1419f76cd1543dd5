"""Read a shared library's ELF headers without loading it (pyelftools).

Loading a file with dlopen runs its constructors: a wrong path in
``pkcs11_module`` (a text file, a truncated copy, some other library) must be
refused before that, with a reason code (P3-E600), never a crash. doctor
uses the same reader for the DPDK drivers and the built extension.
"""

from __future__ import annotations

import os
import platform
import stat
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile

from p3hw.reasons import P3Error

#: PKCS#11 v2.40 §5.2: the one entry point every module exports.
PKCS11_ENTRY_POINT = "C_GetFunctionList"
#: uname machine -> ELF e_machine, for the hosts p3hw runs on.
HOST_MACHINES = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}
ELF_MAGIC = b"\x7fELF"


@dataclass
class ElfInfo:
    """What a library declares about itself: type, machine, defined dynamic symbols."""

    path: str
    elf_type: str
    machine: str
    exports: set[str] = field(default_factory=set)
    sections: dict[str, int] = field(default_factory=dict)   # name -> size


class ElfProblem(Exception):
    """The file is not a readable ELF shared object; ``str()`` says why."""


def read_elf(path: str) -> ElfInfo:
    """The ELF facts of *path*, or ElfProblem naming what is wrong with the file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ElfProblem(f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ElfProblem(f"{path} is not a regular file")
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != ELF_MAGIC:
                raise ElfProblem(f"{path} is not an ELF file (no \\x7fELF magic)")
            handle.seek(0)
            elf = ELFFile(handle)
            found = ElfInfo(path, str(elf["e_type"]), str(elf["e_machine"]))
            for section in elf.iter_sections():
                found.sections[section.name] = section["sh_size"]
            dynsym = elf.get_section_by_name(".dynsym")
            if dynsym is not None:
                for symbol in dynsym.iter_symbols():
                    # Defined (not SHN_UNDEF), global or weak: what dlsym would find.
                    if symbol["st_shndx"] != "SHN_UNDEF" and symbol["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK"):
                        found.exports.add(symbol.name)
            return found
    except ElfProblem:
        raise
    except OSError as exc:
        raise ElfProblem(f"{path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyelftools raises many kinds on a damaged file
        raise ElfProblem(f"{path} is a damaged or truncated ELF file ({type(exc).__name__}: {exc})") from None


def check_pkcs11_module(path: str) -> ElfInfo:
    """Refuse, before dlopen, anything that is not a PKCS#11 library for this machine (P3-E600)."""
    hint = "set pkcs11_module to the token vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so"
    try:
        info = read_elf(path)
    except ElfProblem as problem:
        raise P3Error("PKCS11_MODULE", str(problem), hint) from None
    if info.elf_type != "ET_DYN":
        raise P3Error("PKCS11_MODULE", f"{path} is an ELF {info.elf_type}, not a shared library", hint)
    wanted = HOST_MACHINES.get(platform.machine())
    if wanted is not None and info.machine != wanted:
        raise P3Error("PKCS11_MODULE", f"{path} is built for {info.machine}, this machine is {wanted}", hint)
    if PKCS11_ENTRY_POINT not in info.exports:
        raise P3Error("PKCS11_MODULE", f"{path} is a shared library but does not export {PKCS11_ENTRY_POINT}: "
                      "it is not a PKCS#11 module", hint)
    return info
