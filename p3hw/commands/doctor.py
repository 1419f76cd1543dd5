"""``p3hw doctor``: what this machine can use, and why not (DESIGN.md §5).

Everything about a library is read from its ELF file with pyelftools, never
by loading it: the DPDK drivers' ``PMD_INFO_STRING`` records, p3hw's DPDK
library (``build/libp3dpdk.so``: its exports and DT_NEEDED libraries), a
PKCS#11 module's ``C_GetFunctionList`` export, the extension's
``p3dp_abi_version`` export and the stamp its code returns. Loading would run
their constructors (DPDK's register every driver). Then the CPU (AES-NI, VAES, RDSEED,
RDRAND and their health tests), TUN, privileges and SoftHSM2. Each check
says which backend needs it and why it is or is not usable here.

Exit status: 1 when the native dataplane cannot be used (missing, or its
ABI stamp does not match: P3-E610); 0 otherwise — a missing optional
backend is reported, not fatal.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from p3hw import dataplane
from p3hw.reasons import P3Error

# pyelftools is imported inside the checks, so that the rest of the CLI
# (which imports every command module) works where it is not installed.

#: Where Debian's dpdk package installs its drivers ("pmds-<ABI>").
DPDK_PMD_GLOBS = ("/usr/lib/x86_64-linux-gnu/dpdk/pmds-*", "/usr/lib/aarch64-linux-gnu/dpdk/pmds-*",
                  "/usr/local/lib/dpdk/pmds-*", "/usr/local/lib/x86_64-linux-gnu/dpdk/pmds-*")
#: DPDK's buildtools/gen-pmd-info embeds this prefix and a JSON object in each driver's .rodata.
PMD_INFO_MARKER = b"PMD_INFO_STRING= "
#: The DPDK drivers p3hw's port backend and cryptodev engine are tested, benchmarked or documented
#: with -> what each is for (the check's "needed by").
WANTED_PMDS = {
    "net_af_packet": "io = dpdk on a veth/NIC via AF_PACKET (--vdev=net_af_packet0,iface=IF; "
                     "DPDK e2e test, testbed DPDK sites)",
    "net_ring": "ring ports (benchmark): p3hw bench dpdk, rte_eth_from_rings (the test library libp3dpdk_test.so links it)",
    "net_tap": "io = dpdk on a kernel TAP device (--vdev=net_tap0,iface=NAME): no NIC needed",
    "net_memif": "io = dpdk over shared-memory packet interfaces to another DPDK/VPP process (--vdev=net_memif0)",
    "crypto_openssl": "crypto_engine = cryptodev: the default dpdk_eal_args' device (--vdev=crypto_openssl0)",
    "crypto_aesni_gcm": "crypto_engine = cryptodev on intel-ipsec-mb AES-GCM (--vdev=crypto_aesni_gcm0)",
}
#: What libp3dpdk.so must export: the extension dlsym()s these (backends/dpdk/src/cryptodev.c, ethdev.c).
DPDK_LIBRARY_EXPORTS = ("p3_cryptodev_open", "p3_dpdk_ports_open")
DPDK_LIBRARY_HINT = "'make build' or 'make -C native dpdk' builds it; that needs DPDK's headers (apt-get install libdpdk-dev)"
#: Where the dynamic loader looks when neither RUNPATH, LD_LIBRARY_PATH nor ld.so.cache names a library.
LIBRARY_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib",
                "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/lib/x86_64-linux-gnu",
                "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/lib/aarch64-linux-gnu")
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: linux/capability.h
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
# x86-64 "mov eax, imm32; ret" — how a constant-returning function compiles.
_MOV_EAX_RET = re.compile(rb"\xb8(....)\xc3", re.DOTALL)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--pkcs11-module", metavar="PATH", default=None,
                        help=f"check this PKCS#11 library's ELF exports (default: the configuration's "
                        f"pkcs11_module, else {SOFTHSM_MODULE} if installed)")
    parser.add_argument("--dpdk-library", metavar="PATH", default=None,
                        help="check this file as p3hw's DPDK library (default: build/libp3dpdk.so, the one "
                        "the extension loads for io = dpdk and crypto_engine = cryptodev)")
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help="also check what this configuration's key generation needs")


def _check(name: str, ok: bool, detail: str, needed_by: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, "needed_by": needed_by, **extra}


# --- native extension ----------------------------------------------------------

def extension_path() -> str | None:
    spec = importlib.util.find_spec("p3hw._dataplane")   # locates the file without loading it
    return spec.origin if spec is not None and spec.origin else None


def static_abi_stamp(path: str) -> int | None:
    """The constant p3dp_abi_version returns, read from the code bytes in the file (x86-64), or None."""
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as handle:
            elf = ELFFile(handle)
            dynsym = elf.get_section_by_name(".dynsym")
            symbol = next((s for s in dynsym.iter_symbols() if s.name == "p3dp_abi_version"), None) \
                if dynsym is not None else None
            if symbol is None or elf["e_machine"] != "EM_X86_64":
                return None
            address = symbol["st_value"]
            for segment in elf.iter_segments():
                if segment["p_type"] == "PT_LOAD" and segment["p_vaddr"] <= address < \
                        segment["p_vaddr"] + segment["p_filesz"]:
                    handle.seek(segment["p_offset"] + address - segment["p_vaddr"])
                    code = handle.read(16)
                    # endbr64 may come first under -fcf-protection
                    code = code[4:] if code.startswith(b"\xf3\x0f\x1e\xfa") else code
                    match = _MOV_EAX_RET.match(code)
                    return int.from_bytes(match.group(1), "little") if match else None
    except Exception:  # noqa: BLE001 - a damaged file just has no readable stamp
        return None
    return None


def check_extension() -> list[dict[str, Any]]:
    needed = "every gateway (packet worker, AES-NI engine)"
    from p3hw.backends.pkcs11.elf import ElfProblem, read_elf

    path = extension_path()
    if path is None:
        return [_check("native dataplane", False, "P3-E208 p3hw/_dataplane*.so is not built; run 'make build'",
                       needed)]
    try:
        info = read_elf(path)
    except ElfProblem as problem:
        return [_check("native dataplane", False, f"P3-E610 {problem}", needed)]
    if "p3dp_abi_version" not in info.exports:
        return [_check("native dataplane", False, f"P3-E610 {path} does not export p3dp_abi_version", needed)]
    stamp = static_abi_stamp(path)
    if stamp is not None and stamp != dataplane.EXPECTED_ABI_VERSION:
        return [_check("native dataplane", False, f"P3-E610 {Path(path).name} has ABI stamp {stamp}, this p3hw "
                       f"expects {dataplane.EXPECTED_ABI_VERSION}; rebuild with 'make build'", needed, abi=stamp)]
    try:
        abi = dataplane.abi_version()      # loads it: the stamp matched, or could not be read statically
    except P3Error as exc:
        return [_check("native dataplane", False, exc.message(), needed)]
    return [_check("native dataplane", True, f"ABI {abi} (file stamp {stamp if stamp is not None else 'n/a'}, "
                   f"exports p3dp_abi_version), {len(info.exports)} exported symbols", needed, abi=abi,
                   file=path)]


# --- CPU -----------------------------------------------------------------------

def check_cpu() -> list[dict[str, Any]]:
    try:
        features = dataplane.cpu_features()
    except P3Error as exc:
        return [_check("cpu", False, exc.message(), "AES-NI engine, CPU RNG")]
    found = [
        _check("cpu aes-ni", features["aesni"], "AES-NI present" + (", VAES" if features.get("vaes") else ", no VAES")
               if features["aesni"] else "no AES-NI: OpenSSL uses table AES, slow", "aesni crypto engine (speed)",
               features=sorted(k for k, v in features.items() if v)),
    ]
    from p3hw.backends.rng import CpuRngKeySource, cpu_rng_available

    ok, why = cpu_rng_available()
    if ok:
        try:
            CpuRngKeySource()          # runs the SP 800-90B start-up tests on 4096 fresh bytes
            why += "; start-up health tests passed"
        except P3Error as exc:
            ok, why = False, exc.message()
    found.append(_check("cpu rng", ok, why, "key_generation = 2 with hardware_rng = cpu"))
    return found


# --- DPDK ----------------------------------------------------------------------

def dpdk_library_path() -> str:
    """The DPDK library the extension dlopens for io = dpdk and crypto_engine = cryptodev."""
    return dataplane.DPDK_LIBRARY


def dynamic_entries(path: str) -> tuple[list[str], list[str]]:
    """(DT_NEEDED names, RUNPATH/RPATH directories) from the file's dynamic section."""
    from elftools.elf.elffile import ELFFile

    needed: list[str] = []
    search: list[str] = []
    with open(path, "rb") as handle:
        dynamic = ELFFile(handle).get_section_by_name(".dynamic")
        if dynamic is None:
            return needed, search
        # ELF dynamic-section entries ("d_tag" is the entry's type, DT_NEEDED...) of a library file anyone can
        # read: public names, not a MAC tag or any secret, so a plain comparison is right here.
        for dyn in dynamic.iter_tags():
            if dyn.entry.d_tag == "DT_NEEDED":
                needed.append(dyn.needed)
            elif dyn.entry.d_tag in ("DT_RUNPATH", "DT_RPATH"):
                paths = dyn.runpath if dyn.entry.d_tag == "DT_RUNPATH" else dyn.rpath
                origin = os.path.dirname(os.path.abspath(path))
                search += [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in paths.split(":") if d]
    return needed, search


def loader_cache() -> dict[str, list[str]]:
    """``ldconfig -p``: library name -> paths in ld.so.cache (empty if ldconfig is not there)."""
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                 if os.path.exists(p)), None)
    if ldconfig is None:
        return {}
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    cache: dict[str, list[str]] = {}
    for line in out.splitlines():
        # "\tlibrte_eal.so.23 (libc6,x86-64) => /lib/x86_64-linux-gnu/librte_eal.so.23"
        name, arrow, target = line.strip().partition(" => ")
        if arrow:
            cache.setdefault(name.split(" (")[0], []).append(target)
    return cache


def resolve_needed(names: list[str], runpath: list[str]) -> dict[str, str | None]:
    """Where the dynamic loader would find each needed library, or None: its search order, best effort."""
    env = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    cache: dict[str, list[str]] | None = None
    found: dict[str, str | None] = {}
    for name in names:
        hit = next((os.path.join(d, name) for d in (*runpath, *env) if os.path.exists(os.path.join(d, name))), None)
        if hit is None:
            cache = loader_cache() if cache is None else cache
            hit = next((p for p in cache.get(name, []) if os.path.exists(p)), None)
        if hit is None:
            hit = next((os.path.join(d, name) for d in LIBRARY_DIRS if os.path.exists(os.path.join(d, name))), None)
        found[name] = hit
    return found


def check_dpdk_library(path: str | None = None) -> dict[str, Any]:
    """libp3dpdk.so read from its ELF file (never loaded here): present, a shared object for this machine,
    exporting what the extension dlsym()s, its DT_NEEDED libraries findable. Not usable: P3-E606."""
    import platform

    from p3hw.backends.pkcs11.elf import HOST_MACHINES, ElfProblem, read_elf

    needed_by = "io = dpdk (DPDK ports), crypto_engine = cryptodev"
    path = path or dpdk_library_path()

    def refused(detail: str, hint: str = DPDK_LIBRARY_HINT, **extra: Any) -> dict[str, Any]:
        return _check("dpdk library", False, P3Error("DPDK_UNAVAILABLE", detail, hint).message(), needed_by,
                      file=path, **extra)

    if not os.path.lexists(path):
        return refused(f"{path} does not exist: the DPDK library is not built")
    try:
        info = read_elf(path)
    except ElfProblem as problem:
        return refused(str(problem))
    if info.elf_type != "ET_DYN":
        return refused(f"{path} is an ELF {info.elf_type}, not a shared object")
    wanted = HOST_MACHINES.get(platform.machine())
    if wanted is not None and info.machine != wanted:
        return refused(f"{path} is built for {info.machine}, this machine is {wanted}")
    missing = [name for name in DPDK_LIBRARY_EXPORTS if name not in info.exports]
    if missing:
        return refused(f"{path} is a shared object but does not export {', '.join(missing)}: "
                       "it is not p3hw's DPDK library (or an old build)")
    try:
        needed, runpath = dynamic_entries(path)
    except Exception as exc:  # noqa: BLE001 - pyelftools raises many kinds on a damaged file
        return refused(f"{path}: unreadable dynamic section ({type(exc).__name__}: {exc})")
    resolved = resolve_needed(needed, runpath)
    absent = [name for name, where in resolved.items() if where is None]
    rte = [name for name in needed if name.startswith("librte_")]
    if absent:
        return refused(f"{path} needs {', '.join(absent)}, not found by the dynamic loader's search "
                       "(RUNPATH, LD_LIBRARY_PATH, ld.so.cache, /lib, /usr/lib)",
                       "install DPDK's runtime libraries (apt-get install dpdk) or rebuild against the "
                       "installed DPDK: make -C native dpdk", needed=resolved)
    # No librte_* at all: DPDK linked statically (pkg-config --static), nothing more to find.
    linked = f"its {len(rte)} DPDK libraries ({', '.join(sorted(rte))}) all found" if rte else \
        "DPDK linked statically"
    return _check("dpdk library", True, f"{path}: ELF {info.machine} shared object exporting "
                  f"{', '.join(DPDK_LIBRARY_EXPORTS)}; {linked}; not loaded by doctor", needed_by,
                  file=path, exports=sorted(s for s in info.exports if s.startswith("p3_")), needed=resolved)


def pmd_info(path: str) -> list[dict[str, Any]]:
    """The PMD_INFO_STRING records of one driver library, read from its .rodata."""
    from elftools.elf.elffile import ELFFile

    records: list[dict[str, Any]] = []
    with open(path, "rb") as handle:
        section = ELFFile(handle).get_section_by_name(".rodata")
        data = section.data() if section is not None else b""
    start = data.find(PMD_INFO_MARKER)
    while start >= 0:
        end = data.find(b"\x00", start)
        text = data[start + len(PMD_INFO_MARKER):end if end >= 0 else len(data)]
        try:
            record = json.loads(text)
            if isinstance(record, dict) and "name" in record:
                records.append(record)
        except ValueError:
            pass                # a damaged record is skipped, the others still count
        start = data.find(PMD_INFO_MARKER, start + 1)
    return records


def dpdk_drivers() -> tuple[str | None, list[dict[str, Any]]]:
    directories = sorted(d for pattern in DPDK_PMD_GLOBS for d in glob.glob(pattern) if os.path.isdir(d))
    if not directories:
        return None, []
    directory = directories[-1]
    drivers: list[dict[str, Any]] = []
    for path in sorted({os.path.realpath(p) for p in glob.glob(os.path.join(directory, "librte_*.so*"))}):
        try:
            for record in pmd_info(path):
                drivers.append({"name": record["name"], "file": os.path.basename(path),
                                "params": record.get("params", ""), "pci_ids": len(record.get("pci_ids", []))})
        except Exception as exc:  # noqa: BLE001 - one unreadable driver does not hide the rest
            drivers.append({"name": "?", "file": os.path.basename(path), "error": f"{type(exc).__name__}: {exc}"})
    return directory, drivers


def check_dpdk() -> list[dict[str, Any]]:
    """The installed drivers, the ones p3hw's DPDK ports and cryptodev engine are used with, and hugepages."""
    directory, drivers = dpdk_drivers()
    if directory is None:
        found = [_check("dpdk drivers", False, "no DPDK driver directory (apt-get install dpdk)",
                        "dpdk I/O backend, cryptodev engine", drivers=[])]
    else:
        names = {d["name"] for d in drivers}
        missing = [n for n in WANTED_PMDS if n not in names]
        detail = f"{len(drivers)} drivers in {directory}"
        detail += f"; p3hw's vdevs present: {', '.join(n for n in WANTED_PMDS if n in names) or 'none'}"
        if missing:
            detail += f"; missing: {', '.join(missing)}"
        found = [_check("dpdk drivers", not missing, detail, "dpdk I/O backend, cryptodev engine", drivers=drivers)]
    files = {d["name"]: d["file"] for d in drivers if "error" not in d}
    for name, use in WANTED_PMDS.items():
        kind = "crypto" if name.startswith("crypto_") else "net"
        found.append(_check(f"pmd {name}", name in files, f"{kind} driver in {files[name]}" if name in files
                            else f"{kind} driver {name} not installed (apt-get install dpdk)", use,
                            pmd=name, file=files.get(name)))
    hugepages = _meminfo("HugePages_Total")
    found.append(_check("hugepages", hugepages > 0, f"{hugepages} huge pages reserved" if hugepages else
                        "no huge pages reserved: DPDK runs with --no-huge only (tests do; slower for production)",
                        "dpdk I/O backend (production)"))
    return found


def _meminfo(key: str) -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# --- PKCS#11 -------------------------------------------------------------------

def check_pkcs11(module: str | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    softhsm = os.path.exists(SOFTHSM_MODULE) and shutil.which("softhsm2-util") is not None
    found.append(_check("softhsm2", softhsm, f"{SOFTHSM_MODULE} and softhsm2-util" if softhsm else
                        "SoftHSM2 missing (apt-get install softhsm2)", "PKCS#11 tests, demo"))
    target = module or (SOFTHSM_MODULE if os.path.exists(SOFTHSM_MODULE) else None)
    if target is None:
        found.append(_check("pkcs11 module", False, "no PKCS#11 module given (--pkcs11-module PATH)",
                            "key_generation = 2 with pkcs11_module"))
        return found
    from p3hw.backends.pkcs11.elf import check_pkcs11_module

    try:
        info = check_pkcs11_module(target)   # ELF only: the library is not loaded
    except P3Error as exc:
        found.append(_check("pkcs11 module", False, exc.message(), "key_generation = 2 with pkcs11_module",
                            module=target))
        return found
    c_functions = sorted(s for s in info.exports if s.startswith("C_"))
    found.append(_check("pkcs11 module", True, f"{target}: ELF {info.machine} shared library exporting "
                        f"C_GetFunctionList ({len(c_functions)} C_* functions); not loaded by doctor",
                        "key_generation = 2 with pkcs11_module", module=target))
    return found


# --- what this build left out ---------------------------------------------------

def compiled_out() -> list[dict[str, str]]:
    """Every feature this build of p3hw lacks because a build dependency was missing: name, needed by, and
    what to install. `make test` asserts the list is empty (tests/unit/test_doctor.py), so a missing
    install step in packaging/bootstrap.sh fails one named test instead of a dozen obscure ones."""
    from p3hw.backends.pkcs11 import engine as pkcs11_engine

    found: list[dict[str, str]] = []
    if extension_path() is not None:
        try:
            if pkcs11_engine.compiled_out():
                found.append({"feature": "pkcs11 crypto engine", "needed_by": "crypto_engine = pkcs11",
                              "reason": "P3-E612", "missing": pkcs11_engine.BUILD_DEPENDENCY,
                              "fix": "install it and run 'make build' again"})
        except P3Error:
            pass                  # the extension itself is reported by check_extension
    if not os.path.exists(dpdk_library_path()):
        found.append({"feature": "dpdk library", "needed_by": "io = dpdk, crypto_engine = cryptodev",
                      "reason": "P3-E606", "missing": "DPDK's headers and pkg-config file (apt-get install libdpdk-dev)",
                      "fix": "install it and run 'make build' again"})
    return found


def check_build() -> dict[str, Any]:
    left_out = compiled_out()
    detail = "nothing compiled out" if not left_out else "; ".join(
        f"{f['reason']} {f['feature']} compiled out: missing {f['missing']}" for f in left_out)
    return _check("compiled out", not left_out, detail, ", ".join(f["needed_by"] for f in left_out) or
                  "every backend", features=left_out)


# --- kernel and privileges -----------------------------------------------------

def _effective_capabilities() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def check_kernel() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        os.close(fd)
        found.append(_check("tun", True, "/dev/net/tun opens read-write", "tun I/O backend"))
    except OSError as exc:
        found.append(_check("tun", False, f"P3-E611 /dev/net/tun: {exc.strerror or exc}", "tun I/O backend"))
    caps = _effective_capabilities()
    admin, raw = bool(caps >> CAP_NET_ADMIN & 1), bool(caps >> CAP_NET_RAW & 1)
    root = os.geteuid() == 0
    found.append(_check("privileges", admin, ("root" if root else f"uid {os.geteuid()}")
                        + f", CAP_NET_ADMIN {'yes' if admin else 'no'}, CAP_NET_RAW {'yes' if raw else 'no'}"
                        + ("" if admin else " — P3-E900 no TUN, routes or network namespaces"),
                        "tun backend, routes, netns tests; CAP_NET_RAW: esp transport"))
    return found


def check_fips() -> list[dict[str, Any]]:
    """FIPS mode (fips = 1, docs/fips.md): the integrity values, and which module boundary applies."""
    from p3hw import fips  # noqa: PLC0415 - imports the extension

    try:
        fips.verify_integrity(fips.native_libraries())
        integrity = _check("fips integrity", True, "the native libraries match the HMAC-SHA-256 recorded at build",
                           "fips = 1 (the daemon checks it at start)")
    except P3Error as exc:
        integrity = _check("fips integrity", False, exc.message(), "fips = 1 (the daemon checks it at start)")
    provider = fips.openssl_fips_provider()
    boundary = (f"OpenSSL FIPS provider {provider}" if provider is not None else
                "no OpenSSL FIPS provider installed (Debian 12 ships none): FIPS mode restricts the algorithms "
                "and self-tests them, but the OpenSSL it runs on is not a validated module; with "
                "crypto_engine = pkcs11 the HSM is the module boundary for data keys")
    return [integrity, _check("fips provider", provider is not None, boundary, "a validated module boundary")]


def checks(pkcs11_module: str | None = None, dpdk_library: str | None = None) -> list[dict[str, Any]]:
    """Each check: name, ok, detail, needed_by (and data for --json).

    *dpdk_library*: the DPDK library to inspect instead of dataplane.DPDK_LIBRARY.
    """
    try:
        import elftools  # noqa: F401
    except ImportError:
        try:
            native = _check("native dataplane", True, f"ABI {dataplane.abi_version()} (not read from the ELF file)",
                            "every gateway")
        except P3Error as exc:
            native = _check("native dataplane", False, exc.message(), "every gateway")
        return [native, _check("pyelftools", False, "pyelftools is not installed: no ELF checks "
                               "(pip install pyelftools)", "doctor's driver, module and ABI checks"),
                *check_kernel()]
    found = check_extension()
    if found[0]["ok"]:
        found += check_cpu()
        found.append(check_build())
    found += check_kernel()
    found += check_pkcs11(pkcs11_module)
    found.append(check_dpdk_library(dpdk_library))
    found += check_dpdk()
    if found[0]["ok"]:
        found += check_fips()
    return found


def check_config(path: str) -> tuple[list[dict[str, Any]], str | None]:
    """What the configuration's key generation asks for; and its pkcs11_module, to check like any module."""
    from p3hw.config import load_config

    needed = f"{path}: key_generation"
    try:
        local = load_config(path).local
    except P3Error as exc:
        return [_check("configuration", False, exc.message().splitlines()[0], needed)], None
    if local.key_generation != 2:
        return [_check("key generation", True, "key_generation = 1: the OS CSPRNG, no hardware needed", needed)], None
    policy = f"key_fallback = {local.key_fallback}"
    if local.hardware_rng == "pkcs11":
        return [_check("key generation", True, f"key_generation = 2 from token {local.pkcs11_token!r} "
                       f"({policy}); see 'pkcs11 module'", needed)], local.pkcs11_module
    return [_check("key generation", True, f"key_generation = 2 from the CPU RNG ({policy}); see 'cpu rng'",
                   needed)], None


def run(args: argparse.Namespace) -> int:
    module = args.pkcs11_module
    configured: list[dict[str, Any]] = []
    if args.config:
        configured, config_module = check_config(args.config)
        module = module or config_module
    found = checks(module, args.dpdk_library) + configured
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for c in found:
            print(f"{'ok ' if c['ok'] else 'NO '} {c['name']:<20} {c['detail']}")
            print(f"    {'':<20} needed by: {c['needed_by']}")
        drivers = next((c.get("drivers") for c in found if c["name"] == "dpdk drivers"), None)
        if drivers:
            print("\nDPDK drivers (from their ELF PMD_INFO_STRING):")
            print("  " + " ".join(sorted({d["name"] for d in drivers})))
    return 0 if found[0]["ok"] else 1
