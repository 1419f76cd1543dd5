"""The configuration file of spec Appendix A, and its typed model.

One file format serves both roles (Appendix A: "a single ... configuration
file for either a P3 Primary or Secondary"): a local section between
``localstart`` and ``localend``, then remote hosts as ``N/keyword`` lines.
A line is ``keyword value`` or ``keyword = value``; ``#`` starts a comment.

Every effective value remembers where it came from (``default``, ``local``
or ``remote``) and the line that set it, so ``p3hw config check`` can show
why a remote gets the rekey period it gets. Every failure is a
:class:`ConfigError` carrying file, line and reason code; the parser
collects all of them and raises one :class:`ConfigErrors`. Nothing a file
can hold makes it raise anything else.

The keywords marked ``extension`` are not in the spec; docs/config.md lists
them as such.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p3hw import constants
from p3hw.log import FACILITIES
from p3hw.reasons import P3Error

PRIMARY = "primary"
SECONDARY = "secondary"
ROLES = (PRIMARY, SECONDARY)

# --- Implementation constants -------------------------------------------------

#: A configuration is a few hundred lines; anything far larger is not one.
MAX_CONFIG_BYTES = 1024 * 1024
#: Appendix A gives no default for key_generation; software (1) runs anywhere.
DEFAULT_KEY_GENERATION = 1
DEFAULT_TRANSPORT = "udp"
DEFAULT_INTERFACE = "p3-0"
DEFAULT_ADMIN_SOCKET = "/run/p3hw/admin.sock"
DEFAULT_ADMIN_STORE = "/var/lib/p3hw/admin.db"
DEFAULT_LOG_FACILITY = "daemon"
DEFAULT_KEY_TYPE = "AES128"
DEFAULT_CIPHER = "gcm"
DEFAULT_PFS = 1
#: A token failure stops key generation unless software keys are allowed (docs/hardware.md).
DEFAULT_KEY_FALLBACK = "none"
#: Crypto engine of the dataplane and what takes over when it fails (docs/engines.md).
CRYPTO_ENGINES = ("aesni", "accel-sim", "pkcs11", "cryptodev")
DEFAULT_CRYPTO_ENGINE = "aesni"
DEFAULT_CRYPTO_FALLBACK = "aesni"
#: EAL arguments of the DPDK cryptodev engine: no hugepages, no shared runtime files, no PCI scan, the
#: OpenSSL software crypto device. An appliance names its device instead (e.g. -a 0000:3d:01.0 for QAT).
DEFAULT_DPDK_EAL_ARGS = "--no-huge -m 256 --no-shconf --no-pci --no-telemetry --vdev=crypto_openssl0"
#: The engine passes at most this many EAL arguments (backends/dpdk/src/cryptodev.c MAX_ARGS less argv[0]).
MAX_EAL_ARGS = 62
MAX_EAL_ARGS_BYTES = 1024
#: Worker threads on DPDK ports (P3DP_MAX_WORKERS) and the highest CPU number accepted.
MAX_DPDK_WORKERS = 8
MAX_CPU = 1023
#: RTE_ETH_NAME_MAX_LEN less its terminating zero.
MAX_DPDK_PORT_NAME = 63
#: PKCS#11 v2.40 §3.2 CK_TOKEN_INFO: a token label is 32 octets, blank padded.
MAX_TOKEN_LABEL_BYTES = 32
#: Largest value accepted for any period in seconds (one year).
MAX_PERIOD_S = 365 * 86400
#: Key-array indexes travel as 16-bit numbers in control messages.
MAX_ARRAY_SIZE = 65536
#: Remote host identification numbers.
MAX_REMOTE_ID = 65535
#: Linux IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME_CHARS = 15
#: sockaddr_un.sun_path is 108 bytes including the NUL.
MAX_SOCKET_PATH_BYTES = 107
#: The longest keyword is ~25 characters ("65535/control_array_time"); longer is not one.
MAX_KEYWORD_CHARS = 40
#: Linux PATH_MAX: no value of any keyword is longer.
MAX_VALUE_CHARS = 4096
#: After this many problems the rest are counted, not listed.
MAX_REPORTED_ERRORS = 100
#: The byte order mark some editors put first in a UTF-8 file (U+FEFF).
UTF8_BOM = "\ufeff"
#: A CR that is not part of a CRLF line ending (nor the file's last character).
_LONE_CR = re.compile(r"\r(?!\n|\Z)")
#: A psk_file value that is no path but key material (64 hex digits, base64): never repeated in a message.
_KEY_LIKE_HEX = re.compile(r"[0-9A-Fa-f]{32,}", re.ASCII)
_KEY_LIKE_BASE64 = re.compile(r"[A-Za-z0-9+/=_-]{20,}", re.ASCII)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- Errors -------------------------------------------------------------------

class ConfigError(P3Error):
    """One problem in one line of one configuration file."""

    def __init__(self, file: str, line: int, reason_name: str, detail: str, hint: str = "") -> None:
        self.file = file
        self.line = line
        super().__init__(reason_name, detail, hint)

    def message(self) -> str:
        return f"{self.file}:{self.line}: {super().message()}"

    def __str__(self) -> str:
        return self.message()

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "code": self.code, "reason": self.reason.name,
                "message": self.detail, "hint": self.hint}


class ConfigErrors(P3Error):
    """All the problems found in a configuration: the parser reports every one."""

    def __init__(self, errors: list[ConfigError], omitted: int = 0) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        self.errors = sorted(errors, key=lambda e: (e.file, e.line))
        #: problems found beyond MAX_REPORTED_ERRORS, counted but not listed
        self.omitted = omitted
        first = self.errors[0]
        super().__init__(first.reason.name, first.detail, first.hint)

    def message(self) -> str:
        lines = [e.message() for e in self.errors]
        if self.omitted:
            lines.append(f"{self.errors[0].file}: ... and {self.omitted} more problem(s) not shown")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.message()

    def __iter__(self) -> Iterator[ConfigError]:
        return iter(self.errors)

    def __len__(self) -> int:
        return len(self.errors)


class _BadValue(Exception):
    """Raised by a value parser; the caller adds file and line."""

    def __init__(self, reason_name: str, detail: str, hint: str = "") -> None:
        super().__init__(detail)
        self.reason_name = reason_name
        self.detail = detail
        self.hint = hint


# --- Value parsers ------------------------------------------------------------

def _show(text: str) -> str:
    """A value as quoted in a message: short enough for one line of a terminal."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


_DIGITS = re.compile(r"[0-9]{1,12}", re.ASCII)


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not _DIGITS.fullmatch(value):
            raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a whole number",
                            f"use a number from {low} to {high}")
        number = int(value)
        if not low <= number <= high:
            raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{number} is out of range",
                            f"use a number from {low} to {high}")
        return number
    return parse


def _choice(*allowed: int | str, fold_case: bool = False) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        for candidate in allowed:
            text = str(candidate)
            if value == text or (fold_case and value.lower() == text.lower()):
                return candidate
        words = ", ".join(str(a) for a in allowed)
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not allowed", f"use one of: {words}")
    return parse


def _unsupported_flag(keyword: str) -> Callable[[str], int]:
    """Appendix A: cluster_state and load_balance are "currently unsupported"."""
    flag = _int_in(0, 1)

    def parse(value: str) -> int:
        number = flag(value)
        if number != 0:
            raise _BadValue("CONFIG_UNSUPPORTED", f"{keyword} = {number}: clustering and load balancing "
                            "are not supported yet", f"remove the line or set {keyword} = 0")
        return number
    return parse


def _address(value: str) -> Address:
    if "%" in value:
        raise _BadValue("CONFIG_BAD_ADDRESS", f"{_show(value)}: scoped IPv6 addresses are not allowed",
                        "use a global or unique-local address")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise _BadValue("CONFIG_BAD_ADDRESS", f"{_show(value)} is not an IPv4 or IPv6 address",
                        "write e.g. 192.0.2.1 or 2001:db8::1") from None


def _interface(value: str) -> str:
    # Linux dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or space.
    if (not value or len(value.encode("utf-8", "replace")) > MAX_IFNAME_CHARS or value in (".", "..")
            or any(c in value for c in "/:") or any(c.isspace() for c in value) or not value.isprintable()):
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a valid interface name",
                        f"use 1 to {MAX_IFNAME_CHARS} characters without '/', ':' or spaces, e.g. p3-0")
    return value


def _dpdk_port(value: str) -> str:
    """A DPDK device name as the EAL knows it: a vdev name (net_af_packet0) or a PCI address."""
    if not value or len(value) > MAX_DPDK_PORT_NAME or not value.isascii() or not value.isprintable() \
            or any(c.isspace() for c in value) or "," in value:
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a DPDK port name",
                        "write the device's name as the EAL knows it, e.g. net_af_packet0 or 0000:3d:00.0 "
                        "(its options go in dpdk_eal_args: --vdev=net_af_packet0,iface=eth1)")
    return value


def _cpu_list(value: str) -> tuple[int, ...]:
    """CPUs for the workers, in order: 2,3 (each 0..1023, no repeats)."""
    words = [w.strip() for w in value.split(",")]
    if not words or not all(_DIGITS.fullmatch(w) for w in words):
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a list of CPU numbers",
                        "write the CPUs separated by commas, e.g. 2,3")
    cpus = tuple(int(w) for w in words)
    if any(c > MAX_CPU for c in cpus) or len(set(cpus)) != len(cpus):
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)}: CPUs are 0 to {MAX_CPU}, each once",
                        "one CPU per worker, e.g. 2,3")
    return cpus


#: Appendix A extension ike_groups / ike_prfs: the words and the IKEv2 transform IDs (RFC 7296 §3.3.2).
IKE_GROUPS = {"x25519": 31, "ecp256": 19, "ecp384": 20}
IKE_PRFS = {"hmac-sha256": 5, "cmac": 8, "xcbc": 4}
#: FIPS mode (docs/fips.md): what SP 800-56A / SP 800-108 / FIPS 198 approve among them.
FIPS_IKE_GROUPS = ("ecp256", "ecp384")
FIPS_IKE_PRFS = ("hmac-sha256", "cmac")


def _word_list(allowed: dict[str, int], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        words = tuple(w.strip().lower() for w in value.split(","))
        unknown = [w for w in words if w not in allowed]
        if not words or unknown or len(set(words)) != len(words):
            raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a list of {what}",
                            f"choose from {', '.join(allowed)}, separated by commas, each once")
        return words
    return parse


def _interface_address(value: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """An address with its on-link prefix, 10.1.0.1/24 or 2001:db8:1::1/64."""
    if "/" not in value:
        raise _BadValue("CONFIG_BAD_ADDRESS", f"{_show(value)} has no prefix length",
                        "write the gateway's address and the LAN prefix, e.g. 10.1.0.1/24")
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise _BadValue("CONFIG_BAD_ADDRESS", f"{_show(value)} is not an address with a prefix length",
                        "write e.g. 10.1.0.1/24 or 2001:db8:1::1/64") from None
    if iface.ip == iface.network.network_address and iface.network.prefixlen < iface.max_prefixlen - 1:
        raise _BadValue("CONFIG_BAD_ADDRESS", f"{value} is the network's own address, not a host on it",
                        "give the gateway's address on the LAN, e.g. 10.1.0.1/24")
    return iface


def _socket_path(value: str) -> str:
    if not value.startswith("/") or len(value.encode("utf-8", "replace")) > MAX_SOCKET_PATH_BYTES \
            or "\x00" in value:
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a usable socket path",
                        f"use an absolute path of at most {MAX_SOCKET_PATH_BYTES} bytes")
    return value


def _facility(value: str) -> str:
    if value not in FACILITIES:
        close = difflib.get_close_matches(value[:MAX_KEYWORD_CHARS], list(FACILITIES), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "use a syslog facility such as daemon or local0"
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a syslog facility", hint)
    return value


def _path(value: str) -> str:
    if "\x00" in value:
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", "a path cannot contain NUL", "write a plain file path")
    return value


def _period(value: str) -> int:
    return _int_in(1, MAX_PERIOD_S)(value)


def _absolute_path(value: str) -> str:
    path = _path(value)
    if not path.startswith("/"):
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not an absolute path",
                        "name the PKCS#11 library by its full path, e.g. /usr/lib/softhsm/libsofthsm2.so")
    return path


def _token_label(value: str) -> str:
    if len(value.encode("utf-8", "replace")) > MAX_TOKEN_LABEL_BYTES or "\x00" in value:
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} is not a PKCS#11 token label",
                        f"a token label is at most {MAX_TOKEN_LABEL_BYTES} octets")
    return value


def _eal_args(value: str) -> str:
    """DPDK EAL arguments, split on blanks (no shell quoting: an argument cannot contain a blank)."""
    words = value.split()
    if not words:
        raise _BadValue("CONFIG_MISSING_VALUE", "dpdk_eal_args is empty",
                        f"write EAL arguments, e.g. {DEFAULT_DPDK_EAL_ARGS}")
    if not value.isascii() or not all(w.isprintable() for w in words) or any(q in value for q in "\"'"):
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", f"{_show(value)} are not plain EAL arguments",
                        "use printable ASCII arguments separated by blanks, without quotes")
    if len(words) > MAX_EAL_ARGS or len(value.encode()) > MAX_EAL_ARGS_BYTES:
        raise _BadValue("CONFIG_VALUE_OUT_OF_RANGE", "too many EAL arguments",
                        f"at most {MAX_EAL_ARGS} arguments and {MAX_EAL_ARGS_BYTES} octets")
    return " ".join(words)


# --- The keyword tables -------------------------------------------------------

BOTH = frozenset(ROLES)
PRIMARY_ONLY = frozenset({PRIMARY})
SECONDARY_ONLY = frozenset({SECONDARY})


@dataclass(frozen=True)
class Keyword:
    """One keyword of the file: how it is written, parsed and defaulted."""

    name: str
    attr: str
    parse: Callable[[str], Any]
    default: Any
    roles: frozenset[str]
    extension: bool = False


#: Local section (Appendix A 1 and 2, plus extensions).
LOCAL_KEYWORDS: dict[str, Keyword] = {k.name: k for k in (
    Keyword("role", "role", _choice(*ROLES, fold_case=True), None, BOTH, extension=True),
    Keyword("ip", "ip", _choice(4, 6), None, BOTH),
    Keyword("address", "address", _address, None, BOTH),
    Keyword("port", "port", _int_in(1, 65535), constants.DEFAULT_PORT, PRIMARY_ONLY),
    Keyword("key_generation", "key_generation", _choice(1, 2), DEFAULT_KEY_GENERATION, PRIMARY_ONLY),
    Keyword("rekey_wait", "rekey_wait_s", _period, constants.DEFAULT_REKEY_WAIT_S, PRIMARY_ONLY),
    # 0 = no key arrays: every rekey carries fresh keys.
    Keyword("array_size", "array_size", _int_in(0, MAX_ARRAY_SIZE), constants.DEFAULT_ARRAY_SIZE, PRIMARY_ONLY),
    Keyword("data_array_time", "data_array_time_s", _period, constants.DEFAULT_DATA_ARRAY_TIME_S, PRIMARY_ONLY),
    Keyword("control_array_time", "control_array_time_s", _period, constants.DEFAULT_CONTROL_ARRAY_TIME_S,
            PRIMARY_ONLY),
    Keyword("heartbeat_time", "heartbeat_time_s", _period, constants.DEFAULT_HEARTBEAT_TIME_S, PRIMARY_ONLY),
    Keyword("heartbeat_fail", "heartbeat_fail_s", _period, constants.DEFAULT_HEARTBEAT_FAIL_S, PRIMARY_ONLY),
    Keyword("cluster_state", "cluster_state", _unsupported_flag("cluster_state"), 0, BOTH),
    Keyword("load_balance", "load_balance", _unsupported_flag("load_balance"), 0, BOTH),
    Keyword("transport", "transport", _choice("udp", "esp", fold_case=True), DEFAULT_TRANSPORT, BOTH,
            extension=True),
    Keyword("interface", "interface", _interface, DEFAULT_INTERFACE, BOTH, extension=True),
    Keyword("admin_socket", "admin_socket", _socket_path, DEFAULT_ADMIN_SOCKET, BOTH, extension=True),
    # The admin store (docs/admin.md) and the opt-in Prometheus endpoint on loopback (0 = off).
    Keyword("admin_store", "admin_store", _path, DEFAULT_ADMIN_STORE, BOTH, extension=True),
    Keyword("metrics_port", "metrics_port", _int_in(0, 65535), 0, BOTH, extension=True),
    Keyword("log_facility", "log_facility", _facility, DEFAULT_LOG_FACILITY, BOTH, extension=True),
    # Hardware key generation (key_generation = 2, docs/hardware.md). Only the
    # primary generates keys (spec §4.2), so these are primary keywords.
    Keyword("pkcs11_module", "pkcs11_module", _absolute_path, None, PRIMARY_ONLY, extension=True),
    Keyword("pkcs11_token", "pkcs11_token", _token_label, None, PRIMARY_ONLY, extension=True),
    Keyword("pkcs11_pin_file", "pkcs11_pin_file", _path, None, PRIMARY_ONLY, extension=True),
    Keyword("key_fallback", "key_fallback", _choice("none", "software", fold_case=True), DEFAULT_KEY_FALLBACK,
            PRIMARY_ONLY, extension=True),
    Keyword("hardware_rng", "hardware_rng", _choice("pkcs11", "cpu", fold_case=True), None, PRIMARY_ONLY,
            extension=True),
    # The dataplane's crypto engine and its fallback (docs/engines.md): each
    # gateway runs its own dataplane, so both roles choose.
    Keyword("crypto_engine", "crypto_engine", _choice(*CRYPTO_ENGINES, fold_case=True), DEFAULT_CRYPTO_ENGINE,
            BOTH, extension=True),
    Keyword("crypto_fallback", "crypto_fallback", _choice("aesni", "none", fold_case=True),
            DEFAULT_CRYPTO_FALLBACK, BOTH, extension=True),
    # crypto_engine = cryptodev: the EAL arguments that bring the crypto device up (docs/engines.md).
    Keyword("dpdk_eal_args", "dpdk_eal_args", _eal_args, DEFAULT_DPDK_EAL_ARGS, BOTH, extension=True),
    # io = dpdk: LAN and WAN on two DPDK ports instead of a TUN and a socket (docs/dpdk.md).
    Keyword("io", "io", _choice("kernel", "dpdk", fold_case=True), "kernel", BOTH, extension=True),
    Keyword("dpdk_lan_port", "dpdk_lan_port", _dpdk_port, None, BOTH, extension=True),
    Keyword("dpdk_wan_port", "dpdk_wan_port", _dpdk_port, None, BOTH, extension=True),
    Keyword("dpdk_lan_address", "dpdk_lan_address", _interface_address, None, BOTH, extension=True),
    Keyword("dpdk_lan_gateway", "dpdk_lan_gateway", _address, None, BOTH, extension=True),
    Keyword("dpdk_wan_gateway", "dpdk_wan_gateway", _address, None, BOTH, extension=True),
    # Several workers, one queue of each port each (docs/dpdk.md "Several workers").
    Keyword("dpdk_workers", "dpdk_workers", _int_in(1, MAX_DPDK_WORKERS), 1, BOTH, extension=True),
    Keyword("dpdk_cpus", "dpdk_cpus", _cpu_list, (), BOTH, extension=True),
    Keyword("fips", "fips", _choice(0, 1), 0, BOTH, extension=True),
    Keyword("ike_groups", "ike_groups", _word_list(IKE_GROUPS, "IKE key exchange groups"), None, BOTH,
            extension=True),
    Keyword("ike_prfs", "ike_prfs", _word_list(IKE_PRFS, "IKE PRFs"), None, BOTH, extension=True),
    # 0: remote subnets are unreachable while their tunnel is down, daemon gone included (docs/runtime.md).
    Keyword("fail_open", "fail_open", _choice(0, 1), 0, BOTH, extension=True),
)}

#: Remote section (Appendix A 1 and 2, plus extensions). subnet/mask take an index.
REMOTE_KEYWORDS: dict[str, Keyword] = {k.name: k for k in (
    Keyword("ip", "ip", _choice(4, 6), None, BOTH),
    Keyword("address", "address", _address, None, BOTH),
    Keyword("subnet", "subnets", str, None, BOTH),
    Keyword("mask", "masks", str, None, BOTH),
    Keyword("key_type", "key_type", _choice("AES128", "AES256", fold_case=True), DEFAULT_KEY_TYPE, BOTH),
    # The port of the primary this secondary connects to.
    Keyword("port", "port", _int_in(1, 65535), constants.DEFAULT_PORT, SECONDARY_ONLY, extension=True),
    Keyword("psk_file", "psk_file", _path, None, BOTH, extension=True),
    Keyword("cipher", "cipher", _choice("gcm", "ccm", "ctr", fold_case=True), DEFAULT_CIPHER, BOTH,
            extension=True),
    Keyword("pfs", "pfs", _choice(0, 1), DEFAULT_PFS, BOTH, extension=True),
    # Appendix A 1: per-remote overrides of the local values.
    Keyword("rekey_wait", "rekey_wait_s", _period, None, PRIMARY_ONLY),
    Keyword("key_array", "array_size", _int_in(0, MAX_ARRAY_SIZE), None, PRIMARY_ONLY),
    Keyword("data_array_time", "data_array_time_s", _period, None, PRIMARY_ONLY),
    Keyword("control_array_time", "control_array_time_s", _period, None, PRIMARY_ONLY),
    Keyword("heartbeat_time", "heartbeat_time_s", _period, None, PRIMARY_ONLY),
    Keyword("heartbeat_fail", "heartbeat_fail_s", _period, None, PRIMARY_ONLY),
)}

#: Remote override keyword -> the local keyword it overrides (note key_array -> array_size).
OVERRIDES: dict[str, str] = {
    "rekey_wait": "rekey_wait",
    "key_array": "array_size",
    "data_array_time": "data_array_time",
    "control_array_time": "control_array_time",
    "heartbeat_time": "heartbeat_time",
    "heartbeat_fail": "heartbeat_fail",
}

_INDEXED = ("subnet", "mask")
_SECTION_MARKERS = ("localstart", "localend")


# --- The model ----------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    """Where an effective value came from."""

    source: str          # "default", "local" or "remote"
    line: int | None     # the line that set it; None for a default
    keyword: str         # the keyword as the file spells it (e.g. "3/key_array")


@dataclass
class LocalHost:
    ip: int
    address: Address
    port: int
    key_generation: int
    rekey_wait_s: int
    array_size: int
    data_array_time_s: int
    control_array_time_s: int
    heartbeat_time_s: int
    heartbeat_fail_s: int
    cluster_state: int
    load_balance: int
    transport: str
    interface: str
    admin_socket: str
    admin_store: str
    metrics_port: int
    log_facility: str
    pkcs11_module: str | None = None
    pkcs11_token: str | None = None
    #: never the PIN itself: a mode-0600 file, or P3HW_PKCS11_PIN in the environment
    pkcs11_pin_file: Path | None = None
    key_fallback: str = DEFAULT_KEY_FALLBACK
    #: "pkcs11" when a module is configured, else "cpu" (RDSEED/RDRAND)
    hardware_rng: str = "cpu"
    crypto_engine: str = DEFAULT_CRYPTO_ENGINE
    crypto_fallback: str = DEFAULT_CRYPTO_FALLBACK
    dpdk_eal_args: str = DEFAULT_DPDK_EAL_ARGS
    #: "kernel" (TUN + sockets) or "dpdk" (two ethdev ports, docs/dpdk.md)
    io: str = "kernel"
    dpdk_lan_port: str | None = None
    dpdk_wan_port: str | None = None
    dpdk_lan_address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None
    dpdk_lan_gateway: Address | None = None
    dpdk_wan_gateway: Address | None = None
    dpdk_workers: int = 1
    dpdk_cpus: tuple[int, ...] = ()
    #: FIPS mode (docs/fips.md): approved algorithms only, self-tests at start
    fips: int = 0
    #: IKE_SA_INIT offers, in order of preference; the defaults follow fips
    ike_groups: tuple[str, ...] = ("x25519", "ecp256")
    ike_prfs: tuple[str, ...] = ("hmac-sha256", "cmac", "xcbc")
    #: 1: no unreachable routes for the remote subnets (docs/runtime.md "Fail closed")
    fail_open: int = 0
    origins: dict[str, Origin] = field(default_factory=dict, repr=False, compare=False)

    def origin(self, attr: str) -> Origin:
        return self.origins[attr]

    def source(self, attr: str) -> str:
        return self.origins[attr].source

    @property
    def ike_group_ids(self) -> tuple[int, ...]:
        return tuple(IKE_GROUPS[g] for g in self.ike_groups)

    @property
    def ike_prf_ids(self) -> tuple[int, ...]:
        return tuple(IKE_PRFS[p] for p in self.ike_prfs)


@dataclass
class RemoteHost:
    id: int
    ip: int
    address: Address
    subnets: list[Network]
    port: int
    key_type: str
    cipher: str
    pfs: int
    psk_file: Path | None
    rekey_wait_s: int
    array_size: int
    data_array_time_s: int
    control_array_time_s: int
    heartbeat_time_s: int
    heartbeat_fail_s: int
    origins: dict[str, Origin] = field(default_factory=dict, repr=False, compare=False)
    subnet_lines: list[int] = field(default_factory=list, repr=False, compare=False)

    @property
    def key_bits(self) -> int:
        return 256 if self.key_type == "AES256" else 128

    def origin(self, attr: str) -> Origin:
        return self.origins[attr]

    def source(self, attr: str) -> str:
        return self.origins[attr].source


_LOCAL_ATTRS = ("ip", "address", "port", "key_generation", "rekey_wait_s", "array_size", "data_array_time_s",
                "control_array_time_s", "heartbeat_time_s", "heartbeat_fail_s", "cluster_state", "load_balance",
                "transport", "interface", "admin_socket", "admin_store", "metrics_port", "log_facility", "pkcs11_module", "pkcs11_token",
                "pkcs11_pin_file", "key_fallback", "hardware_rng", "crypto_engine", "crypto_fallback",
                "dpdk_eal_args", "io", "dpdk_lan_port", "dpdk_wan_port", "dpdk_lan_address", "dpdk_lan_gateway",
                "dpdk_wan_gateway", "dpdk_workers", "dpdk_cpus", "fips", "ike_groups", "ike_prfs", "fail_open")
_REMOTE_ATTRS = ("ip", "address", "port", "key_type", "cipher", "pfs", "psk_file", "rekey_wait_s",
                 "array_size", "data_array_time_s", "control_array_time_s", "heartbeat_time_s", "heartbeat_fail_s")
_ATTR_TO_LOCAL_KEYWORD = {k.attr: k.name for k in LOCAL_KEYWORDS.values()}
_ATTR_TO_REMOTE_KEYWORD = {k.attr: k.name for k in REMOTE_KEYWORDS.values()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network
                  | ipaddress.IPv6Network | ipaddress.IPv4Interface | ipaddress.IPv6Interface | Path):
        return str(value)
    return value


@dataclass
class Config:
    """An effective configuration: every value resolved, every origin known."""

    file: str
    role: str
    role_origin: str            # "given by the caller", "role keyword on line N" or "inferred ..."
    local: LocalHost
    remotes: list[RemoteHost]

    def remote(self, remote_id: int) -> RemoteHost:
        for r in self.remotes:
            if r.id == remote_id:
                return r
        raise KeyError(remote_id)

    def routes(self) -> list[tuple[Network, RemoteHost]]:
        """Every routed prefix and its remote, longest prefix first (nested prefixes: longest wins)."""
        pairs = [(net, r) for r in self.remotes for net in r.subnets]
        return sorted(pairs, key=lambda p: (-p[0].prefixlen, int(p[0].network_address)))

    def route_for(self, destination: Address) -> RemoteHost | None:
        for net, remote in self.routes():
            if destination.version == net.version and destination in net:
                return remote
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data: every value with its source and line, keyed by config keyword."""
        def entry(value: Any, origin: Origin) -> dict[str, Any]:
            return {"value": _jsonable(value), "source": origin.source, "line": origin.line}

        local = {_ATTR_TO_LOCAL_KEYWORD[a]: entry(getattr(self.local, a), self.local.origin(a))
                 for a in _LOCAL_ATTRS}
        remotes = []
        for r in self.remotes:
            values: dict[str, Any] = {_ATTR_TO_REMOTE_KEYWORD[a]: entry(getattr(r, a), r.origin(a))
                                      for a in _REMOTE_ATTRS}
            values["subnets"] = [{"value": str(net), "source": "remote", "line": line}
                                 for net, line in zip(r.subnets, r.subnet_lines, strict=True)]
            remotes.append({"id": r.id, **values})
        return {"file": self.file, "role": self.role, "role_origin": self.role_origin,
                "local": local, "remotes": remotes}


# --- Parsing ------------------------------------------------------------------

_KEYWORD_RE = re.compile(r"[A-Za-z0-9_/]+", re.ASCII)
# Numbers are bounded so that no line can make int() work hard.
_REMOTE_RE = re.compile(r"([0-9]{1,9})/([a-z_]+?)([0-9]{0,9})", re.ASCII)


@dataclass
class _Line:
    number: int
    keyword: str          # as written, lower-cased
    value: str


@dataclass
class _RemoteEntry:
    line: _Line
    remote_id: int
    name: str             # base keyword (subnet, mask, rekey_wait, ...)
    index: str            # subnet/mask index as written ("" when absent)


def _split_line(raw: str) -> tuple[str, str] | None:
    """``keyword value`` or ``keyword = value``; None for a blank or comment line."""
    text = raw.strip()
    if not text or text.startswith("#"):
        return None
    # A '#' after whitespace starts a trailing comment; inside a value (a path) it does not.
    text = re.split(r"\s#", text, maxsplit=1)[0].strip()
    match = re.match(r"([^\s=]*)\s*(?:=\s*)?(.*)", text, re.S)
    assert match is not None  # the pattern matches any string
    return match.group(1), match.group(2).strip()


class _Parser:
    def __init__(self, filename: str, base_dir: Path, role: str | None) -> None:
        self.file = filename
        self.base_dir = base_dir
        self.caller_role = role
        self.errors: list[ConfigError] = []
        self.omitted = 0
        self.bad_local: set[str] = set()   # local keywords whose value was refused (reported once)

    def error(self, line: int, reason_name: str, detail: str, hint: str = "") -> None:
        if len(self.errors) >= MAX_REPORTED_ERRORS:
            self.omitted += 1
            return
        self.errors.append(ConfigError(self.file, line, reason_name, detail, hint))

    def failed(self) -> ConfigErrors:
        return ConfigErrors(self.errors, omitted=self.omitted)

    # Pass 1: lines -> local and remote entries, with the section rules.
    def read_lines(self, text: str) -> tuple[list[_Line], list[_RemoteEntry], int, int]:
        local: list[_Line] = []
        remote: list[_RemoteEntry] = []
        state = "before"            # before -> local -> after
        start_line = end_line = 0
        reported_before = False
        last_line = 1
        for number, raw in enumerate(text.split("\n"), start=1):
            last_line = number
            parts = _split_line(raw.rstrip("\r"))
            if parts is None:
                continue
            keyword, value = parts
            if not _KEYWORD_RE.fullmatch(keyword):
                self.error(number, "CONFIG_SYNTAX", f"cannot read {_show(raw.strip())}",
                           "write 'keyword value' or 'keyword = value'; comments start with '#'")
                continue
            if len(keyword) > MAX_KEYWORD_CHARS:
                self.error(number, "CONFIG_UNKNOWN_KEYWORD", f"unknown keyword {_show(keyword)}",
                           "see docs/config.md for the keywords")
                continue
            if len(value) > MAX_VALUE_CHARS:
                self.error(number, "CONFIG_VALUE_OUT_OF_RANGE", f"the value of {keyword} is {len(value)} "
                           "characters long", f"no value is longer than {MAX_VALUE_CHARS} characters")
                continue
            keyword = keyword.lower()
            if keyword in _SECTION_MARKERS:
                if value:
                    self.error(number, "CONFIG_SYNTAX", f"{keyword} takes no value", f"write just '{keyword}'")
                if keyword == "localstart":
                    if state != "before":
                        self.error(number, "CONFIG_MISSING_LOCAL_SECTION", "a second localstart",
                                   "the file has exactly one local section")
                        continue
                    state, start_line = "local", number
                else:
                    if state != "local":
                        self.error(number, "CONFIG_MISSING_LOCAL_SECTION",
                                   "localend without localstart" if state == "before" else "a second localend",
                                   "the local section is 'localstart' ... 'localend', before the remote hosts")
                        continue
                    state, end_line = "after", number
                continue
            if state == "before" and not reported_before:
                reported_before = True
                self.error(number, "CONFIG_MISSING_LOCAL_SECTION", f"{keyword} before localstart",
                           "the file starts with the local section: 'localstart' ... 'localend'")
            remote_match = _REMOTE_RE.fullmatch(keyword)
            if "/" in keyword and remote_match is None:
                self.error(number, "CONFIG_SYNTAX", f"cannot read keyword {_show(keyword)}",
                           "remote keywords are 'N/keyword', e.g. 1/address or 1/subnet1")
                continue
            entry_line = _Line(number, keyword, value)
            if remote_match is not None:
                if state == "local":
                    self.error(number, "CONFIG_WRONG_SECTION", f"{keyword} is a remote keyword inside the "
                               "local section", "put remote hosts after localend")
                    continue
                remote_entry = self.remote_entry(entry_line, remote_match)
                if remote_entry is not None:
                    remote.append(remote_entry)
            else:
                if state == "after":
                    hint = f"did you mean N/{keyword}?" if keyword in REMOTE_KEYWORDS or \
                        keyword.rstrip("0123456789") in _INDEXED else "local keywords go before localend"
                    self.error(number, "CONFIG_WRONG_SECTION", f"{keyword} after localend", hint)
                    continue
                if self.known_local(entry_line):
                    local.append(entry_line)
        if state == "before":
            self.error(1, "CONFIG_MISSING_LOCAL_SECTION", "no localstart",
                       "the file starts with the local section: 'localstart' ... 'localend'")
        elif state == "local":
            self.error(last_line, "CONFIG_MISSING_LOCAL_SECTION", f"no localend for the localstart on line "
                       f"{start_line}", "end the local section with 'localend'")
        return local, remote, start_line, end_line or last_line

    def known_local(self, line: _Line) -> bool:
        if line.keyword in LOCAL_KEYWORDS:
            return True
        base = line.keyword.rstrip("0123456789")
        if line.keyword in REMOTE_KEYWORDS or base in _INDEXED:
            self.error(line.number, "CONFIG_WRONG_SECTION", f"{line.keyword} is a remote keyword",
                       f"write it for a remote host after localend, e.g. 1/{line.keyword}")
            return False
        self.unknown(line.number, line.keyword, list(LOCAL_KEYWORDS))
        return False

    def remote_entry(self, line: _Line, match: re.Match[str]) -> _RemoteEntry | None:
        id_text, name, index = match.groups()
        if index and name not in _INDEXED:
            name, index = name + index, ""
        if int(id_text) > MAX_REMOTE_ID:
            self.error(line.number, "CONFIG_VALUE_OUT_OF_RANGE", f"remote host number {id_text} is too large",
                       f"number remote hosts from 0 to {MAX_REMOTE_ID}")
            return None
        if name not in REMOTE_KEYWORDS:
            if name in LOCAL_KEYWORDS:
                hint = "use N/key_array to override array_size" if name == "array_size" else \
                    f"{name} belongs in the local section"
                if name != "array_size":
                    self.error(line.number, "CONFIG_WRONG_SECTION", f"{name} is a local keyword", hint)
                    return None
                self.error(line.number, "CONFIG_UNKNOWN_KEYWORD", f"unknown remote keyword {_show(name)}",
                           f"did you mean {id_text}/key_array?")
                return None
            self.unknown(line.number, name, list(REMOTE_KEYWORDS), prefix=f"{id_text}/")
            return None
        return _RemoteEntry(line, int(id_text), name, str(int(index)) if index else "")

    def unknown(self, line: int, keyword: str, candidates: list[str], prefix: str = "") -> None:
        close = difflib.get_close_matches(keyword, candidates, n=1, cutoff=0.6)
        hint = f"did you mean {prefix}{close[0]}?" if close else "see docs/config.md for the keywords"
        self.error(line, "CONFIG_UNKNOWN_KEYWORD", f"unknown keyword {prefix}{_show(keyword)}", hint)

    # Pass 2: the role.
    def decide_role(self, local: list[_Line], remote: list[_RemoteEntry], end_line: int) -> tuple[str, str, int]:
        """The role, how it was decided, and the line it was decided on (0: none)."""
        keyword_role: tuple[str, int] | None = None
        for line in local:
            if line.keyword == "role":
                try:
                    keyword_role = (LOCAL_KEYWORDS["role"].parse(line.value), line.number)
                except _BadValue:
                    pass  # reported with the other value errors
                break
        if self.caller_role is not None:
            if keyword_role and keyword_role[0] != self.caller_role:
                self.error(keyword_role[1], "CONFIG_WRONG_ROLE",
                           f"role = {keyword_role[0]} but this is run as the {self.caller_role}",
                           f"run 'p3hw {keyword_role[0]}' or change the role line")
            return self.caller_role, "given by the caller", 0
        if keyword_role:
            return keyword_role[0], f"role keyword on line {keyword_role[1]}", keyword_role[1]
        indicators: list[tuple[int, str, str]] = []
        for line in local:
            kw = LOCAL_KEYWORDS[line.keyword]
            if len(kw.roles) == 1:
                indicators.append((line.number, line.keyword, next(iter(kw.roles))))
        for entry in remote:
            kw = REMOTE_KEYWORDS[entry.name]
            if len(kw.roles) == 1:
                indicators.append((entry.line.number, entry.line.keyword, next(iter(kw.roles))))
        if indicators:
            number, keyword, role = min(indicators)
            return role, f"inferred from {keyword} on line {number}", number
        if len({e.remote_id for e in remote}) > 1:
            return PRIMARY, "inferred: more than one remote host", 0
        self.error(end_line, "CONFIG_MISSING_VALUE", "cannot tell whether this is a primary or a secondary "
                   "configuration", "add 'role = primary' or 'role = secondary' to the local section")
        return PRIMARY, "undecided", 0

    def check_role(self, number: int, keyword: str, kw: Keyword, role: str, how: str) -> bool:
        if role in kw.roles:
            return True
        only = next(iter(kw.roles))
        self.error(number, "CONFIG_WRONG_ROLE", f"{keyword} is a {only} keyword but this is a {role} "
                   f"configuration ({how})", f"remove it, or make this a {only} configuration")
        return False

    def parse_value(self, number: int, keyword: str, kw: Keyword, value: str) -> tuple[bool, Any]:
        if not value:
            self.error(number, "CONFIG_MISSING_VALUE", f"{keyword} has no value", f"write '{keyword} = VALUE'")
            return False, None
        try:
            return True, kw.parse(value)
        except _BadValue as bad:
            self.error(number, bad.reason_name, f"{keyword}: {bad.detail}", bad.hint)
            return False, None

    def run(self, text: str) -> Config:
        local_lines, remote_entries, start_line, end_line = self.read_lines(text)
        role, how, _ = self.decide_role(local_lines, remote_entries, end_line)

        # Pass 3: local values.
        local_values: dict[str, tuple[Any, int]] = {}
        seen: dict[str, int] = {}
        for line in local_lines:
            kw = LOCAL_KEYWORDS[line.keyword]
            if line.keyword in seen:
                self.error(line.number, "CONFIG_DUPLICATE_KEYWORD", f"{line.keyword} is already defined on "
                           f"line {seen[line.keyword]}", "keep one definition")
                continue
            seen[line.keyword] = line.number
            if not self.check_role(line.number, line.keyword, kw, role, how):
                continue
            ok, value = self.parse_value(line.number, line.keyword, kw, line.value)
            if ok:
                local_values[kw.attr] = (value, line.number)
            else:
                self.bad_local.add(kw.attr)

        local = self.build_local(local_values, end_line)
        remotes = self.build_remotes(remote_entries, local, role, how)
        if not remote_entries:
            self.error(end_line, "CONFIG_NO_REMOTES", "no remote host is defined",
                       "add at least one remote host, e.g. '1/address = 192.0.2.2'")
        if self.errors or local is None:
            if not self.errors:  # pragma: no cover - build_local reports why it is None
                self.error(start_line or 1, "CONFIG_MISSING_VALUE", "the local section is incomplete")
            raise self.failed()
        return Config(self.file, role, how, local, remotes)

    def build_local(self, values: dict[str, tuple[Any, int]], end_line: int) -> LocalHost | None:
        origins: dict[str, Origin] = {}
        resolved: dict[str, Any] = {}
        for kw in LOCAL_KEYWORDS.values():
            if kw.attr == "role":
                continue
            if kw.attr in values:
                resolved[kw.attr], line = values[kw.attr]
                origins[kw.attr] = Origin("local", line, kw.name)
            else:
                resolved[kw.attr] = kw.default
                origins[kw.attr] = Origin("default", None, kw.name)
        complete = True
        for required in ("ip", "address"):
            if resolved[required] is None:
                complete = False
                if required not in values:  # a bad value was already reported
                    self.error(end_line, "CONFIG_MISSING_VALUE", f"the local section has no {required}",
                               f"add '{required} = ...' before localend")
        if not complete:
            return None
        address = resolved["address"]
        if address.version != resolved["ip"]:
            self.error(origins["address"].line or end_line, "CONFIG_BAD_ADDRESS",
                       f"address {address} is IPv{address.version} but ip = {resolved['ip']}",
                       "make ip and address the same IP version")
            return None
        if not self.check_hardware(resolved, origins, values, end_line):
            return None
        self.check_admin_socket(resolved["admin_socket"], origins["admin_socket"].line or end_line)
        if not self.check_dpdk_io(resolved, origins, values, end_line):
            return None
        if not self.check_fips(resolved, origins, end_line):
            return None
        return LocalHost(**resolved, origins=origins)

    def check_fips(self, resolved: dict[str, Any], origins: dict[str, Origin], end_line: int) -> bool:
        """fips = 1: only approved groups and PRFs; the defaults follow the mode (docs/fips.md)."""
        fips = resolved["fips"] == 1
        defaults = {"ike_groups": FIPS_IKE_GROUPS if fips else ("x25519", "ecp256"),
                    "ike_prfs": FIPS_IKE_PRFS if fips else tuple(IKE_PRFS)}
        approved = {"ike_groups": FIPS_IKE_GROUPS, "ike_prfs": FIPS_IKE_PRFS}
        ok = True
        for attr, default in defaults.items():
            if resolved[attr] is None:
                resolved[attr] = default
                continue
            refused = [w for w in resolved[attr] if fips and w not in approved[attr]]
            if refused:
                self.error(origins[attr].line or end_line, "CONFIG_NOT_APPROVED",
                           f"{attr} names {', '.join(refused)}, which FIPS mode does not allow",
                           f"with fips = 1 use {', '.join(approved[attr])}, or leave {attr} out")
                ok = False
        return ok

    def check_dpdk_io(self, resolved: dict[str, Any], origins: dict[str, Origin],
                      values: dict[str, tuple[Any, int]], end_line: int) -> bool:
        """io = dpdk needs two ports and the LAN address; every address of the outer family (docs/dpdk.md)."""
        ok = True
        if resolved["io"] != "dpdk":
            for attr in ("dpdk_lan_port", "dpdk_wan_port", "dpdk_lan_address", "dpdk_lan_gateway",
                         "dpdk_wan_gateway", "dpdk_workers", "dpdk_cpus"):
                if attr in values:
                    self.error(values[attr][1], "CONFIG_VALUE_OUT_OF_RANGE", f"{attr} is set but io is not dpdk",
                               "add 'io = dpdk' to use DPDK ports, or remove this line")
                    ok = False
            return ok
        io_line = origins["io"].line or end_line
        for attr, example in (("dpdk_lan_port", "net_af_packet0"), ("dpdk_wan_port", "net_af_packet1"),
                              ("dpdk_lan_address", "10.1.0.1/24")):
            if resolved[attr] is None and attr not in values and attr not in self.bad_local:
                self.error(io_line, "CONFIG_MISSING_VALUE", f"io = dpdk but {attr} is not set",
                           f"add '{attr} = {example}'")
                ok = False
        if resolved["dpdk_lan_port"] is not None and resolved["dpdk_lan_port"] == resolved["dpdk_wan_port"]:
            self.error(origins["dpdk_wan_port"].line or end_line, "CONFIG_VALUE_OUT_OF_RANGE",
                       f"the LAN and WAN ports are both {resolved['dpdk_wan_port']}",
                       "give two different DPDK ports: the protected LAN and the unprotected WAN")
            ok = False
        if resolved["dpdk_cpus"] and len(resolved["dpdk_cpus"]) < resolved["dpdk_workers"]:
            self.error(origins["dpdk_cpus"].line or end_line, "CONFIG_VALUE_OUT_OF_RANGE",
                       f"dpdk_cpus names {len(resolved['dpdk_cpus'])} CPU(s) for {resolved['dpdk_workers']} workers",
                       "give one CPU per worker, or leave dpdk_cpus out")
            ok = False
        family = resolved["address"].version
        for attr in ("dpdk_lan_address", "dpdk_lan_gateway", "dpdk_wan_gateway"):
            value = resolved[attr]
            if value is not None and value.version != family:
                self.error(origins[attr].line or end_line, "CONFIG_BAD_ADDRESS",
                           f"{attr} {value} is IPv{value.version} but the address is IPv{family}",
                           "the inner family follows the outer one: use the same IP version")
                ok = False
        return ok

    def check_hardware(self, resolved: dict[str, Any], origins: dict[str, Origin],
                       values: dict[str, tuple[Any, int]], end_line: int) -> bool:
        """The PKCS#11 keywords hang together; the PIN file is a secret file (docs/hardware.md)."""
        ok = True
        module = resolved["pkcs11_module"]
        if module is not None and resolved["pkcs11_token"] is None and "pkcs11_token" not in values:
            self.error(origins["pkcs11_module"].line or end_line, "CONFIG_MISSING_VALUE",
                       "pkcs11_module is set but pkcs11_token is not",
                       "add 'pkcs11_token = LABEL' (the label given to softhsm2-util --init-token or the HSM)")
            ok = False
        for attr in ("pkcs11_token", "pkcs11_pin_file"):
            if resolved[attr] is not None and module is None and "pkcs11_module" not in values:
                self.error(origins[attr].line or end_line, "CONFIG_MISSING_VALUE",
                           f"{attr} is set but pkcs11_module is not",
                           "add 'pkcs11_module = /path/to/the/pkcs11/library.so'")
                ok = False
        if resolved["pkcs11_pin_file"] is not None:
            line = origins["pkcs11_pin_file"].line or end_line
            before = len(self.errors)
            resolved["pkcs11_pin_file"] = self.check_secret_file(resolved["pkcs11_pin_file"], line,
                                                                 "pkcs11_pin_file")
            ok = ok and len(self.errors) == before
        if resolved["crypto_engine"] == "pkcs11" and module is None and "pkcs11_module" not in values:
            self.error(origins["crypto_engine"].line or end_line, "CONFIG_MISSING_VALUE",
                       "crypto_engine = pkcs11 but no pkcs11_module is configured",
                       "add pkcs11_module, pkcs11_token and the PIN (pkcs11_pin_file or P3HW_PKCS11_PIN); "
                       "they are primary keywords, so a secondary uses aesni or accel-sim")
            ok = False
        if resolved["hardware_rng"] is None:
            resolved["hardware_rng"] = "pkcs11" if module is not None else "cpu"
        elif resolved["hardware_rng"] == "pkcs11" and module is None and "pkcs11_module" not in values:
            self.error(origins["hardware_rng"].line or end_line, "CONFIG_MISSING_VALUE",
                       "hardware_rng = pkcs11 but no pkcs11_module is configured",
                       "add pkcs11_module and pkcs11_token, or use 'hardware_rng = cpu'")
            ok = False
        return ok

    def build_remotes(self, entries: list[_RemoteEntry], local: LocalHost | None, role: str,
                      how: str) -> list[RemoteHost]:
        by_id: dict[int, list[_RemoteEntry]] = {}
        for entry in entries:
            by_id.setdefault(entry.remote_id, []).append(entry)
        remotes: list[RemoteHost] = []
        route_owner: dict[Network, tuple[int, int]] = {}
        address_owner: dict[Address, int] = {}
        for remote_id in sorted(by_id):
            remote = self.build_remote(remote_id, by_id[remote_id], local, role, how, route_owner)
            if remote is None:
                continue
            if remote.address in address_owner:
                self.error(remote.origin("address").line or 0, "CONFIG_DUPLICATE_KEYWORD",
                           f"remote {remote_id} has the same address {remote.address} as remote "
                           f"{address_owner[remote.address]}", "each remote host has its own address")
            address_owner.setdefault(remote.address, remote_id)
            remotes.append(remote)
        return remotes

    def build_remote(self, remote_id: int, entries: list[_RemoteEntry], local: LocalHost | None, role: str,
                     how: str, route_owner: dict[Network, tuple[int, int]]) -> RemoteHost | None:
        values: dict[str, tuple[Any, int]] = {}
        subnets: dict[str, tuple[str, int]] = {}
        masks: dict[str, tuple[str, int]] = {}
        seen: dict[str, int] = {}
        for entry in entries:
            kw = REMOTE_KEYWORDS[entry.name]
            keyword = entry.line.keyword
            key = entry.name + entry.index
            if key in seen:
                self.error(entry.line.number, "CONFIG_DUPLICATE_KEYWORD", f"{keyword} is already defined on "
                           f"line {seen[key]}", "keep one definition")
                continue
            seen[key] = entry.line.number
            if not self.check_role(entry.line.number, keyword, kw, role, how):
                continue
            if entry.name in _INDEXED:
                if not entry.line.value:
                    self.error(entry.line.number, "CONFIG_MISSING_VALUE", f"{keyword} has no value",
                               f"write '{keyword} = VALUE'")
                    continue
                (subnets if entry.name == "subnet" else masks)[entry.index] = (entry.line.value,
                                                                               entry.line.number)
                continue
            ok, value = self.parse_value(entry.line.number, keyword, kw, entry.line.value)
            if ok:
                values[kw.attr] = (value, entry.line.number)

        first_line = min(e.line.number for e in entries)
        if "address" not in values and "address" not in seen:
            self.error(first_line, "CONFIG_REMOTE_WITHOUT_ADDRESS", f"remote {remote_id} has no address",
                       f"add '{remote_id}/address = ...'")
        if "address" not in values or local is None:
            # Still check the routes, so that one run reports every problem.
            ip = values["ip"][0] if "ip" in values else (local.ip if local else None)
            address_or_none = values["address"][0] if "address" in values else None
            self.build_subnets(remote_id, subnets, masks, ip, address_or_none, route_owner)
            return None
        origins: dict[str, Origin] = {}
        resolved: dict[str, Any] = {}

        def take(attr: str, fallback: Any, fallback_origin: Origin) -> None:
            kw_name = _ATTR_TO_REMOTE_KEYWORD[attr]
            if attr in values:
                resolved[attr], line = values[attr]
                origins[attr] = Origin("remote", line, f"{remote_id}/{kw_name}")
            else:
                resolved[attr] = fallback
                origins[attr] = fallback_origin

        take("ip", local.ip, Origin("local", local.origin("ip").line, "ip"))
        take("address", None, Origin("remote", None, f"{remote_id}/address"))
        for attr in ("key_type", "cipher", "pfs", "psk_file"):
            kw = REMOTE_KEYWORDS[_ATTR_TO_REMOTE_KEYWORD[attr]]
            take(attr, kw.default, Origin("default", None, f"{remote_id}/{kw.name}"))
        if role == SECONDARY:
            take("port", constants.DEFAULT_PORT, Origin("default", None, f"{remote_id}/port"))
        else:
            # A primary's sessions all run on its own listening port.
            resolved["port"], origins["port"] = local.port, local.origin("port")
        for remote_kw in OVERRIDES:
            attr = REMOTE_KEYWORDS[remote_kw].attr
            take(attr, getattr(local, attr), local.origin(attr))  # default -> local -> remote

        ok = True
        if local.crypto_engine != "aesni" and resolved["cipher"] != "gcm":
            self.error(origins["cipher"].line or first_line, "CONFIG_VALUE_OUT_OF_RANGE",
                       f"remote {remote_id} uses {resolved['cipher']} but crypto_engine = {local.crypto_engine} "
                       "does AES-GCM only",
                       "use cipher = gcm for this remote, or crypto_engine = aesni (docs/engines.md)")
            ok = False
        address: Address = resolved["address"]
        ip_line = origins["ip"].line or first_line
        if resolved["ip"] != local.ip:
            self.error(ip_line, "CONFIG_BAD_ADDRESS", f"remote {remote_id} is IPv{resolved['ip']} but the "
                       f"local host is IPv{local.ip}", "both ends of a session use the same IP version")
            ok = False
        elif address.version != resolved["ip"]:
            self.error(origins["address"].line or first_line, "CONFIG_BAD_ADDRESS",
                       f"{remote_id}/address {address} is not IPv{resolved['ip']}",
                       "every address, subnet and mask must match ip")
            ok = False
        if resolved["psk_file"] is not None:
            resolved["psk_file"] = self.check_secret_file(resolved["psk_file"], origins["psk_file"].line or 0,
                                                          f"{remote_id}/psk_file")
        networks, lines = self.build_subnets(remote_id, subnets, masks, resolved["ip"], address, route_owner)
        if not ok:
            return None
        return RemoteHost(id=remote_id, subnets=networks, origins=origins, subnet_lines=lines, **resolved)

    def build_subnets(self, remote_id: int, subnets: dict[str, tuple[str, int]], masks: dict[str, tuple[str, int]],
                      ip: int | None, address: Address | None, route_owner: dict[Network, tuple[int, int]]
                      ) -> tuple[list[Network], list[int]]:
        networks: list[Network] = []
        lines: list[int] = []
        for index in sorted(set(subnets) | set(masks), key=lambda i: (len(i), i)):
            if index not in masks:
                text, number = subnets[index]
                self.error(number, "CONFIG_SUBNET_WITHOUT_MASK", f"{remote_id}/subnet{index} has no mask",
                           f"add '{remote_id}/mask{index} = ...'")
                continue
            if index not in subnets:
                text, number = masks[index]
                self.error(number, "CONFIG_SUBNET_WITHOUT_MASK", f"{remote_id}/mask{index} has no subnet",
                           f"add '{remote_id}/subnet{index} = ...'")
                continue
            network = self.one_subnet(remote_id, index, subnets[index], masks[index], ip, address)
            if network is None:
                continue
            number = subnets[index][1]
            if network in route_owner:
                other_id, other_line = route_owner[network]
                whom = "this remote" if other_id == remote_id else f"remote {other_id}"
                self.error(number, "CONFIG_DUPLICATE_ROUTE", f"{network} is already routed to {whom} "
                           f"(line {other_line})", "route each prefix to one remote host; nested prefixes "
                           "are fine (the longest prefix wins)")
                continue
            route_owner[network] = (remote_id, number)
            networks.append(network)
            lines.append(number)
        return networks, lines

    def one_subnet(self, remote_id: int, index: str, subnet: tuple[str, int], mask: tuple[str, int],
                   ip: int | None, address: Address | None) -> Network | None:
        (subnet_text, subnet_line), (mask_text, mask_line) = subnet, mask
        name = f"{remote_id}/subnet{index}"
        try:
            base = _address(subnet_text)
        except _BadValue as bad:
            self.error(subnet_line, bad.reason_name, f"{name}: {bad.detail}", bad.hint)
            return None
        if ip is None:  # the host's IP version is unknown (already reported): judge the subnet alone
            ip = base.version
        if base.version != ip:
            self.error(subnet_line, "CONFIG_BAD_ADDRESS", f"{name} {base} is not IPv{ip}",
                       "every address, subnet and mask must match ip")
            return None
        prefix = self.mask_prefix(f"{remote_id}/mask{index}", mask_text, mask_line, ip)
        if prefix is None:
            return None
        full = 32 if ip == 4 else 128
        if base == address and prefix != full:
            # Appendix A: "If the remote host is a standalone P3 host then the mask must be 255.255.255.255".
            self.error(mask_line, "CONFIG_STANDALONE_MASK", f"{name} is the remote's own address (a standalone "
                       f"P3 host) but its mask is /{prefix}",
                       "use mask 255.255.255.255" if ip == 4 else "use mask /128")
            return None
        network = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
        if network.network_address != base:
            self.error(subnet_line, "CONFIG_SUBNET_HOST_BITS", f"{name} {base} has bits set outside its mask "
                       f"/{prefix}", f"did you mean {network.network_address}?")
            return None
        return network

    def mask_prefix(self, name: str, text: str, line: int, ip: int) -> int | None:
        """A mask as dotted/colon notation or as a prefix length ('/24' or '24')."""
        full = 32 if ip == 4 else 128
        bare = text[1:] if text.startswith("/") else text
        if _DIGITS.fullmatch(bare):
            prefix = int(bare)
            if prefix > full:
                self.error(line, "CONFIG_BAD_ADDRESS", f"{name} /{prefix} is longer than IPv{ip} allows",
                           f"use a prefix length from 0 to {full}")
                return None
            return prefix
        try:
            mask = _address(text)
        except _BadValue as bad:
            self.error(line, "CONFIG_BAD_ADDRESS", f"{name}: {bad.detail}", "write e.g. 255.255.255.0 or /24")
            return None
        if mask.version != ip:
            self.error(line, "CONFIG_BAD_ADDRESS", f"{name} {mask} is not an IPv{ip} mask",
                       "every address, subnet and mask must match ip")
            return None
        bits = int(mask)
        inverted = ~bits & ((1 << full) - 1)
        if inverted & (inverted + 1):
            self.error(line, "CONFIG_MASK_NOT_CONTIGUOUS", f"{name} {mask} has non-contiguous bits",
                       "a mask is ones followed by zeros, e.g. 255.255.255.0")
            return None
        return full - inverted.bit_length()

    def check_admin_socket(self, path: str, line: int) -> bool:
        """admin_socket names a socket or nothing yet, in a directory that is or can be made (docs/config.md)."""
        hint = "name a path where the daemon can create its socket, e.g. /run/p3hw/admin.sock"
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            info = None
        except NotADirectoryError:
            info = None  # a file where a directory should be: found below
        except OSError as exc:
            self.error(line, "CONFIG_VALUE_OUT_OF_RANGE", f"admin_socket {path}: {exc.strerror or exc}", hint)
            return False
        if info is not None:
            if stat.S_ISSOCK(info.st_mode):
                return True  # a stale socket of an earlier run: the daemon replaces it
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else \
                "a symbolic link" if stat.S_ISLNK(info.st_mode) else "a file"
            self.error(line, "CONFIG_VALUE_OUT_OF_RANGE", f"admin_socket {path} is {kind}, not a socket",
                       hint + "; the daemon never replaces a file that is not a socket")
            return False
        ancestor = os.path.dirname(path)
        while ancestor not in ("", "/"):
            try:
                info = os.stat(ancestor)
            except (FileNotFoundError, NotADirectoryError):
                ancestor = os.path.dirname(ancestor)
                continue
            except OSError as exc:
                self.error(line, "CONFIG_VALUE_OUT_OF_RANGE", f"admin_socket {path}: {ancestor}: "
                           f"{exc.strerror or exc}", hint)
                return False
            if not stat.S_ISDIR(info.st_mode):
                self.error(line, "CONFIG_VALUE_OUT_OF_RANGE", f"admin_socket {path}: its directory cannot be "
                           f"created, {ancestor} is a file", hint)
                return False
            break
        return True

    def check_secret_file(self, value: str, line: int, keyword: str) -> Path:
        path = Path(value)
        if not path.is_absolute():
            path = self.base_dir / path  # relative to the configuration file's directory
        try:
            info = os.stat(path)
        except OSError as exc:
            if _looks_like_secret(value, keyword):
                self.error(line, "CONFIG_SECRET_FILE", f"{keyword} names a file that does not exist; the value "
                           "looks like the secret itself, not a path, so it is not repeated here",
                           "write the secret into a mode 0600 file and give that file's path")
                return path
            self.error(line, "CONFIG_SECRET_FILE", f"{keyword} {path}: {exc.strerror or exc}",
                       "create it with 'p3hw setup' or write the key and 'chmod 600' it")
            return path
        if not stat.S_ISREG(info.st_mode):
            self.error(line, "CONFIG_SECRET_FILE", f"{keyword} {path} is not a regular file",
                       "point it at the file that holds the pre-shared key")
            return path
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 or not mode & stat.S_IRUSR:
            self.error(line, "CONFIG_SECRET_FILE", f"{keyword} {path} has mode {mode:04o}; a secret must be "
                       "readable by its owner only", f"chmod 600 {path}")
            return path
        try:
            with open(path, "rb") as handle:
                if not handle.read(1):
                    self.error(line, "CONFIG_SECRET_FILE", f"{keyword} {path} is empty",
                               "write the pre-shared key into it")
        except OSError as exc:
            self.error(line, "CONFIG_SECRET_FILE", f"{keyword} {path}: {exc.strerror or exc}",
                       "the daemon must be able to read it")
        return path


def _looks_like_secret(value: str, keyword: str) -> bool:
    """A secret written where its file's path belongs: key material (hex, base64), or a bare PIN."""
    if _KEY_LIKE_HEX.fullmatch(value):
        return True
    if keyword == "pkcs11_pin_file" and "/" not in value and "." not in value:
        return True  # a PIN has no path shape; a real PIN file is named by a path (docs/hardware.md)
    return (_KEY_LIKE_BASE64.fullmatch(value) is not None and not value.startswith("/")
            and any(c.isupper() for c in value) and any(c.islower() for c in value)
            and any(c.isdigit() for c in value))


def config_error_text(error: P3Error) -> str:
    """An error's text for a log line that already starts with its code (log.failure): where, what, hint."""
    errors: list[P3Error] = list(error.errors) if isinstance(error, ConfigErrors) else [error]
    parts = []
    for one in errors:
        where = ""
        if isinstance(one, ConfigError):
            where = f"{one.file}:{one.line}: " if one.line else f"{one.file}: "
        code = f"{one.code} " if one.code != errors[0].code else ""
        parts.append(f"{where}{code}{one.detail}" + (f" (hint: {one.hint})" if one.hint else ""))
    return "; ".join(parts)


def parse_config(text: str, filename: str = "<string>", role: str | None = None,
                 base_dir: str | os.PathLike[str] | None = None) -> Config:
    """Parse configuration text. Raises :class:`ConfigErrors` listing every problem."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    parser = _Parser(filename, Path(base_dir) if base_dir is not None else Path.cwd(), role)
    # Editors on Windows start UTF-8 files with a byte order mark; it is not part of the first keyword.
    text = text.removeprefix(UTF8_BOM)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        parser.error(line, "CONFIG_UNREADABLE", "the file holds binary data (a NUL byte)",
                     "give the path of the text configuration file")
        raise ConfigErrors(parser.errors)
    lone_cr = _LONE_CR.search(text)
    if lone_cr is not None:  # CR-only line endings (classic Mac) would read as one long line
        parser.error(text.count("\n", 0, lone_cr.start()) + 1, "CONFIG_SYNTAX",
                     "a carriage return (CR) that does not end a line: CR-only line endings?",
                     "save the file with LF or CRLF line endings")
        raise ConfigErrors(parser.errors)
    return parser.run(text)


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The file's text, or a ConfigErrors that says why it cannot be a configuration."""
    name = os.fspath(path)
    if isinstance(name, bytes):  # pragma: no cover - os.PathLike[str] only
        name = os.fsdecode(name)

    def fail(reason_name: str, detail: str, hint: str, line: int = 0) -> ConfigErrors:
        return ConfigErrors([ConfigError(name, line, reason_name, detail, hint)])

    try:
        info = os.stat(name)
    except OSError as exc:
        raise fail("CONFIG_UNREADABLE", f"cannot read the file: {exc.strerror or exc}",
                   "check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise fail("CONFIG_UNREADABLE", "is a directory", "give the path of the configuration file")
    if not stat.S_ISREG(info.st_mode):
        raise fail("CONFIG_UNREADABLE", "is not a regular file", "give the path of the configuration file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise fail("CONFIG_TOO_LARGE", f"the file is {info.st_size} bytes", f"a configuration is at most "
                   f"{MAX_CONFIG_BYTES} bytes; is this the right file?")
    try:
        with open(name, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # the file may grow after stat
    except OSError as exc:
        raise fail("CONFIG_UNREADABLE", f"cannot read the file: {exc.strerror or exc}",
                   "check its permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise fail("CONFIG_TOO_LARGE", f"the file is larger than {MAX_CONFIG_BYTES} bytes",
                   "is this the right file?")
    if b"\x00" in data:
        raise fail("CONFIG_UNREADABLE", "the file holds binary data (a NUL byte)",
                   "give the path of the text configuration file", data.count(b"\n", 0, data.index(b"\x00")) + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail("CONFIG_UNREADABLE", f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})",
                   "save it as UTF-8", data.count(b"\n", 0, exc.start) + 1) from None


def load_config(path: str | os.PathLike[str], role: str | None = None) -> Config:
    """Read and parse a configuration file; psk_file paths are relative to its directory."""
    text = read_config_text(path)
    name = os.fspath(path)
    return parse_config(text, filename=str(name), role=role, base_dir=Path(name).resolve().parent)


def read_psk(path: str | os.PathLike[str]) -> bytes:
    """The pre-shared key held by a psk_file: its bytes without surrounding white space.

    The key is used as written (``p3hw setup`` writes 64 hex characters), the
    way IKE implementations take a PSK string; both ends must hold the same file.
    """
    name = os.fspath(path)
    try:
        info = os.stat(name)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigErrors([ConfigError(str(name), 0, "CONFIG_SECRET_FILE", "the psk file is not a regular file",
                                            "point psk_file at the key file")])
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ConfigErrors([ConfigError(str(name), 0, "CONFIG_SECRET_FILE", "the psk file is open to group or "
                                            "others", f"chmod 600 {name}")])
        with open(name, "rb") as handle:
            key = handle.read(64 * 1024).strip()
    except OSError as exc:
        raise ConfigErrors([ConfigError(str(name), 0, "CONFIG_SECRET_FILE", f"cannot read the psk file: "
                                        f"{exc.strerror or exc}", "check psk_file")]) from None
    if not key:
        raise ConfigErrors([ConfigError(str(name), 0, "CONFIG_SECRET_FILE", "the psk file is empty",
                                        "write the pre-shared key into it")])
    return key


__all__ = ["Config", "ConfigError", "ConfigErrors", "config_error_text", "Keyword", "LocalHost", "Origin", "RemoteHost",
           "LOCAL_KEYWORDS", "REMOTE_KEYWORDS", "OVERRIDES", "PRIMARY", "SECONDARY", "load_config",
           "parse_config", "read_config_text", "read_psk"]
