"""cffi builder for the one native extension, ``p3hw._dataplane``.

The cdef is the block of ``native/include/p3dp.h`` between the P3DP_CDEF
markers, so the header stays the single source of the API. Sources are every
``native/src/*.c``, the backend table (``backends/registry.c``), the C of each
backend (``backends/*/*.c``) and of the
simulated devices the product ships for demos and tests
(``simulators/*/*.c``: the accelerator simulator's crypto). A backend
whose library is missing at build time is compiled out: its C guards itself
with the ``P3HW_HAVE_*`` macros defined here.
"""

from __future__ import annotations

import os
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
HEADER = NATIVE / "include" / "p3dp.h"

STRICT_FLAGS = ["-Wall", "-Wextra", "-Werror", "-O2", "-std=gnu11", "-fno-strict-aliasing"]


def cdef_source() -> str:
    text = HEADER.read_text()
    begin = text.index("/* P3DP_CDEF_BEGIN */") + len("/* P3DP_CDEF_BEGIN */")
    end = text.index("/* P3DP_CDEF_END */")
    return text[begin:end]


def _sources() -> list[str]:
    files = (sorted((NATIVE / "src").glob("*.c")) + sorted((ROOT / "backends").glob("*.c"))
             + sorted((ROOT / "backends").glob("*/*.c"))
             + sorted((ROOT / "simulators").glob("*/*.c")))
    return [str(p.relative_to(ROOT)) for p in files]


def make_builder() -> FFI:
    builder = FFI()
    builder.cdef(cdef_source())
    compile_args = list(STRICT_FLAGS)
    link_args: list[str] = []
    libraries = ["crypto", "pthread", "dl"]
    define_macros: list[tuple[str, str | None]] = []
    builder.set_source(
        "p3hw._dataplane",
        '#include "p3dp.h"\n',
        sources=_sources(),
        include_dirs=[str(NATIVE / "include"), str(NATIVE / "src")],
        libraries=libraries,
        define_macros=define_macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    os.chdir(ROOT)
    ffibuilder.compile(verbose=False, tmpdir="build/cffi")
