"""``p3hw doctor``: what this machine can use, and why not (DESIGN.md §5).

Everything about a library is read from its ELF file with pyelftools, never
by loading it: the DPDK drivers' ``PMD_INFO_STRING`` records, a PKCS#11
module's ``C_GetFunctionList`` export, the extension's ``p3dp_abi_version``
export and the stamp its code returns. Then the CPU (AES-NI, VAES, RDSEED,
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
#: The virtual devices issue 6's DPDK tests and benchmarks use.
WANTED_PMDS = ("net_af_packet", "net_tap", "net_ring", "net_memif", "crypto_aesni_gcm", "crypto_openssl")
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
    dpdk = sorted(s for s in info.exports if s.startswith("p3dp_dpdk"))
    return [_check("native dataplane", True, f"ABI {abi} (file stamp {stamp if stamp is not None else 'n/a'}, "
                   f"exports p3dp_abi_version), {len(info.exports)} exported symbols", needed, abi=abi,
                   file=path, dpdk_backend=bool(dpdk))]


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


def check_dpdk(extension: dict[str, Any]) -> list[dict[str, Any]]:
    directory, drivers = dpdk_drivers()
    if directory is None:
        return [_check("dpdk drivers", False, "no DPDK driver directory (apt-get install dpdk)",
                       "dpdk I/O backend, cryptodev engine", drivers=[])]
    names = {d["name"] for d in drivers}
    missing = [n for n in WANTED_PMDS if n not in names]
    detail = f"{len(drivers)} drivers in {directory}"
    detail += f"; test vdevs present: {', '.join(n for n in WANTED_PMDS if n in names) or 'none'}"
    if missing:
        detail += f"; missing: {', '.join(missing)}"
    found = [_check("dpdk drivers", not missing, detail, "dpdk I/O backend, cryptodev engine", drivers=drivers)]
    built = bool(extension.get("dpdk_backend"))
    found.append(_check("dpdk backend", built, "the extension has the DPDK backend" if built else
                        "P3-E606 the extension was built without the DPDK backend: the drivers are present "
                        "but p3hw cannot use them", "dpdk I/O backend, cryptodev engine"))
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


def checks(pkcs11_module: str | None = None) -> list[dict[str, Any]]:
    """Each check: name, ok, detail, needed_by (and data for --json)."""
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
    found += check_kernel()
    found += check_pkcs11(pkcs11_module)
    found += check_dpdk(found[0])
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
    found = checks(module) + configured
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        for c in found:
            print(f"{'ok ' if c['ok'] else 'NO '} {c['name']:<18} {c['detail']}")
            print(f"    {'':<18} needed by: {c['needed_by']}")
        drivers = next((c.get("drivers") for c in found if c["name"] == "dpdk drivers"), None)
        if drivers:
            print("\nDPDK drivers (from their ELF PMD_INFO_STRING):")
            print("  " + " ".join(sorted({d["name"] for d in drivers})))
    return 0 if found[0]["ok"] else 1
