"""The catalogue of reason codes (spec §5.1: every failure message names one).

One place for every code. A code is ``P3-E`` followed by three digits; the
hundreds digit names the area:

* 1xx  configuration and installation
* 2xx  dataplane: packets, SAs, routes, ciphers
* 3xx  initial exchange (IKEv2)
* 4xx  control channel, rekeying, key arrays
* 5xx  liveness and session recovery
* 6xx  hardware backends: PKCS#11, RNG, DPDK, accelerators
* 7xx  administration
* 9xx  the host system and internal faults

Codes are never renumbered or reused: operators put them in runbooks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    code: str
    name: str
    meaning: str


_CATALOGUE: tuple[Reason, ...] = (
    # 1xx configuration
    Reason("P3-E100", "CONFIG_UNREADABLE", "the configuration file cannot be read (missing, a directory, no permission, not text)"),
    Reason("P3-E101", "CONFIG_SYNTAX", "a line is not 'keyword value' or 'keyword = value'"),
    Reason("P3-E102", "CONFIG_UNKNOWN_KEYWORD", "a keyword that the configuration does not define"),
    Reason("P3-E103", "CONFIG_DUPLICATE_KEYWORD", "the same keyword is defined twice for the same host"),
    Reason("P3-E104", "CONFIG_VALUE_OUT_OF_RANGE", "a value is not a number in its allowed range, or not one of its allowed words"),
    Reason("P3-E105", "CONFIG_WRONG_SECTION", "a keyword appears in a section where it is not allowed"),
    Reason("P3-E106", "CONFIG_WRONG_ROLE", "a keyword that only the other role (primary or secondary) may use"),
    Reason("P3-E107", "CONFIG_BAD_ADDRESS", "an address, subnet or mask is not valid for the host's IP version"),
    Reason("P3-E108", "CONFIG_MASK_NOT_CONTIGUOUS", "a subnet mask has non-contiguous bits"),
    Reason("P3-E109", "CONFIG_SUBNET_HOST_BITS", "a subnet has bits set outside its mask"),
    Reason("P3-E110", "CONFIG_STANDALONE_MASK", "a standalone P3 host must use mask 255.255.255.255 (IPv6: /128)"),
    Reason("P3-E111", "CONFIG_DUPLICATE_ROUTE", "the same prefix is routed to two remote hosts"),
    Reason("P3-E112", "CONFIG_SUBNET_WITHOUT_MASK", "a subnet has no mask, or a mask has no subnet"),
    Reason("P3-E113", "CONFIG_REMOTE_WITHOUT_ADDRESS", "a remote host definition has no address"),
    Reason("P3-E114", "CONFIG_MISSING_LOCAL_SECTION", "localstart or localend is missing or out of order"),
    Reason("P3-E115", "CONFIG_UNSUPPORTED", "a feature the configuration names is not supported yet (cluster_state, load_balance)"),
    Reason("P3-E116", "CONFIG_MISSING_VALUE", "a required keyword or value is missing"),
    Reason("P3-E117", "CONFIG_SECRET_FILE", "a secret file (psk_file, PIN file) is missing, unreadable or not mode 0600"),
    Reason("P3-E118", "CONFIG_NO_REMOTES", "the configuration defines no remote host"),
    Reason("P3-E119", "CONFIG_TOO_LARGE", "the configuration file is larger than the parser accepts"),
    Reason("P3-E120", "SETUP_BAD_ANSWER", "an answer given to 'p3hw setup' is not valid"),
    Reason("P3-E121", "SETUP_WRITE_FAILED", "'p3hw setup' could not write the configuration file"),
    Reason("P3-E122", "USAGE", "a command was called with wrong arguments"),
    Reason("P3-E123", "CONFIG_NOT_APPROVED", "FIPS mode (fips = 1) and an algorithm that is not FIPS-approved is configured"),
    Reason("P3-E124", "UPDATE_REPO_UNTRUSTED", "the update repository is unsigned, signed by another key, or its files do not match their signed checksums"),
    Reason("P3-E125", "UPDATE_FAILED", "'p3hw update' could not make the repository, upgrade the packages or restart a daemon"),
    # 2xx dataplane
    Reason("P3-E200", "DP_BAD_HEADER", "a packet's outer header, P3 flags or length is malformed"),
    Reason("P3-E201", "DP_UNKNOWN_ID", "a packet names a P3 ID that no inbound SA has"),
    Reason("P3-E202", "DP_AUTH_FAILED", "a packet failed authentication (wrong key or tampered)"),
    Reason("P3-E203", "DP_REPLAY", "a packet's sequence number was already received"),
    Reason("P3-E204", "DP_TOO_OLD", "a packet's sequence number is left of the anti-replay window"),
    Reason("P3-E205", "DP_TOO_BIG", "a packet does not fit the path MTU or the buffer"),
    Reason("P3-E206", "DP_NO_ROUTE", "no remote subnet matches the packet's destination"),
    Reason("P3-E207", "DP_BAD_INNER", "a decrypted frame has a bad padding length or next header"),
    Reason("P3-E208", "DP_UNKNOWN_SESSION", "a packet came from an address that has no session"),
    Reason("P3-E209", "DP_SA_EXISTS", "an SA with this P3 ID is already installed"),
    Reason("P3-E210", "DP_SA_NOT_FOUND", "no SA with this P3 ID is installed"),
    Reason("P3-E211", "DP_BAD_CIPHER", "the cipher or key length is not supported"),
    Reason("P3-E212", "DP_SEQ_EXHAUSTED", "an SA's sequence numbers are used up; it must be rekeyed"),
    Reason("P3-E213", "DP_TABLE_FULL", "a dataplane table (SAs, routes, sessions) is full"),
    Reason("P3-E214", "DP_BAD_ARGUMENT", "the dataplane was called with an invalid argument"),
    Reason("P3-E215", "DP_CRYPTO_ENGINE", "the crypto engine failed an operation"),
    Reason("P3-E216", "DP_NOT_BUILT", "the native dataplane extension is not built or does not match this version"),
    Reason("P3-E217", "DP_ROUTE_NOT_FOUND", "no route with exactly this prefix is installed"),
    # 3xx initial exchange
    Reason("P3-E300", "IKE_MALFORMED", "an IKE message is truncated or has a malformed length or payload"),
    Reason("P3-E301", "IKE_UNSUPPORTED_CRITICAL", "an IKE message has an unknown payload marked critical"),
    Reason("P3-E302", "IKE_NO_PROPOSAL_CHOSEN", "the peers have no proposal in common (NO_PROPOSAL_CHOSEN)"),
    Reason("P3-E303", "IKE_AUTHENTICATION_FAILED", "the peer's authentication failed (AUTHENTICATION_FAILED): wrong pre-shared key or certificate"),
    Reason("P3-E304", "IKE_INVALID_KE", "the peer's key exchange payload is invalid or uses another group"),
    Reason("P3-E305", "IKE_TIMEOUT", "the initial exchange got no answer after all retransmissions"),
    Reason("P3-E306", "IKE_COOKIE_REQUIRED", "the responder is loaded and asked for a cookie"),
    Reason("P3-E307", "IKE_DECRYPT_FAILED", "an encrypted IKE payload failed its integrity check"),
    Reason("P3-E308", "IKE_UNEXPECTED", "an IKE message arrived that the exchange state does not expect"),
    Reason("P3-E309", "IKE_TS_UNACCEPTABLE", "the traffic selectors are not acceptable (TS_UNACCEPTABLE)"),
    Reason("P3-E310", "IKE_PEER_UNKNOWN", "a peer that the configuration does not list tried to connect"),
    # 4xx control channel and rekeying
    Reason("P3-E400", "CTL_MALFORMED", "a control message is truncated, of an unknown version or malformed"),
    Reason("P3-E401", "CTL_AUTH_FAILED", "a control message failed its control-key authentication"),
    Reason("P3-E402", "REKEY_FAILED", "a rekey step failed after four retries"),
    Reason("P3-E403", "REKEY_REJECTED", "the peer answered a rekey with a failure status"),
    Reason("P3-E404", "KEY_ARRAY_MISSING", "a rekey names a key-array index but no array is installed"),
    Reason("P3-E405", "KEY_ARRAY_INDEX", "a key-array index is out of range"),
    Reason("P3-E406", "CTL_UNEXPECTED", "a control message arrived that the session state does not expect"),
    Reason("P3-E407", "KEY_SOURCE_FAILED", "the key source could not produce key material"),
    Reason("P3-E408", "CTL_TIMEOUT", "a control request got no answer after four retries"),
    # 5xx liveness and recovery
    Reason("P3-E500", "HEARTBEAT_LOST", "no heartbeat answer within heartbeat_fail seconds: the session is lost"),
    Reason("P3-E501", "PEER_SHUTDOWN", "the peer closed the session (SHUTDOWN)"),
    Reason("P3-E502", "SESSION_LOST", "the session was lost; enterprise connections through it were terminated"),
    Reason("P3-E503", "RECONNECT_FAILED", "the secondary could not reach the primary; it will retry"),
    Reason("P3-E504", "ADMIN_SHUTDOWN", "an administrator shut the session down"),
    Reason("P3-E505", "PEER_SILENT", "nothing came back from the peer while data was sent to it, and heartbeat probes went unanswered: the session is lost"),
    # 6xx hardware backends
    Reason("P3-E600", "PKCS11_MODULE", "the PKCS#11 module is missing or is not a PKCS#11 library"),
    Reason("P3-E601", "PKCS11_PIN", "the PKCS#11 PIN is wrong or locked"),
    Reason("P3-E602", "PKCS11_TOKEN", "the PKCS#11 token is missing or was removed"),
    Reason("P3-E603", "PKCS11_OPERATION", "a PKCS#11 operation failed"),
    Reason("P3-E604", "RNG_HEALTH", "the hardware RNG failed a health test"),
    Reason("P3-E605", "RNG_UNAVAILABLE", "the CPU has no hardware RNG instruction"),
    Reason("P3-E606", "DPDK_UNAVAILABLE", "DPDK was not available when p3hw was built, or its EAL failed to start"),
    Reason("P3-E607", "DPDK_PORT", "a DPDK port could not be configured or started"),
    Reason("P3-E608", "CRYPTODEV", "a DPDK crypto device could not be configured or failed"),
    Reason("P3-E609", "ACCEL_FAULT", "the crypto accelerator failed; the fallback engine took over"),
    Reason("P3-E610", "ABI_MISMATCH", "the built extension's ABI stamp does not match this p3hw"),
    Reason("P3-E611", "TUN_UNAVAILABLE", "/dev/net/tun is missing or cannot be opened"),
    Reason("P3-E612", "BACKEND_NOT_BUILT", "a backend was left out of this build (its build dependency was missing); 'p3hw doctor' lists what is compiled out"),
    # 7xx administration
    Reason("P3-E700", "ADMIN_MALFORMED", "an admin request is truncated, too large, of an unknown version or wrongly typed"),
    Reason("P3-E701", "ADMIN_DENIED", "the caller's role does not allow this command"),
    Reason("P3-E702", "ADMIN_NOT_FOUND", "the session, group, user or enrollment named does not exist"),
    Reason("P3-E703", "ADMIN_EXISTS", "the group or user already exists"),
    Reason("P3-E704", "ADMIN_UNREACHABLE", "the daemon's admin socket cannot be reached"),
    Reason("P3-E705", "ENROLL_PENDING", "the secondary is enrolled anonymously and awaits approval"),
    Reason("P3-E706", "ADMIN_NOT_LIVE", "this setting cannot change while the daemon runs; write it with --permanent and reload"),
    Reason("P3-E707", "ADMIN_STORE", "the admin store (SQLite) cannot be opened, migrated or written"),
    Reason("P3-E708", "ADMIN_LIMIT", "an admin connection was refused or closed: too many from this uid, idle too long, or too many refusals"),
    Reason("P3-E709", "ADMIN_OUT_OF_RANGE", "a number in an admin request is outside its allowed range"),
    # 9xx host system and internal
    Reason("P3-E900", "NEED_ROOT", "the operation needs root (CAP_NET_ADMIN)"),
    Reason("P3-E901", "OS_ERROR", "the operating system refused an operation"),
    Reason("P3-E902", "FILE_WRITE", "a file the daemon keeps (status file, audit) cannot be written: full or "
           "read-only file system, or no permission; the daemon runs on and retries"),
    Reason("P3-E903", "FIPS_SELF_TEST", "a FIPS power-on self-test or the integrity check of a native library failed: the daemon does not start"),
    Reason("P3-E999", "INTERNAL", "an internal error; please report it with the log"),
)

REASONS: dict[str, Reason] = {r.code: r for r in _CATALOGUE}
BY_NAME: dict[str, Reason] = {r.name: r for r in _CATALOGUE}


def reason(name_or_code: str) -> Reason:
    """Look a reason up by its name (``DP_REPLAY``) or its code (``P3-E203``)."""
    if name_or_code in REASONS:
        return REASONS[name_or_code]
    return BY_NAME[name_or_code]


class P3Error(Exception):
    """A failure a user can cause or see: always carries a reason code."""

    def __init__(self, reason_name: str, detail: str, hint: str = "") -> None:
        self.reason = reason(reason_name)
        self.detail = detail
        self.hint = hint
        super().__init__(self.message())

    @property
    def code(self) -> str:
        return self.reason.code

    def message(self) -> str:
        text = f"{self.reason.code} {self.detail}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


def _check_catalogue() -> None:
    codes = [r.code for r in _CATALOGUE]
    names = [r.name for r in _CATALOGUE]
    if len(set(codes)) != len(codes) or len(set(names)) != len(names):
        raise RuntimeError("reason catalogue has duplicates")


_check_catalogue()


#: The C side's names for the same codes (``native/include/p3_reasons.h``): native functions
#: return ``-P3R_<NAME>``; the header is generated from this catalogue and a unit test checks that
#: the checked-in copy matches (``python -m p3hw.reasons > native/include/p3_reasons.h``).
C_HEADER_PATH = "native/include/p3_reasons.h"


def c_header() -> str:
    """The text of ``native/include/p3_reasons.h``: one enum constant per reason code."""
    lines = [
        "/* p3_reasons.h: the reason codes of p3hw/reasons.py for the native code (spec §5.1).",
        " * GENERATED by `python -m p3hw.reasons > native/include/p3_reasons.h`: edit the catalogue,",
        " * not this file (tests/unit/test_reasons_header.py checks that the two agree).",
        " * Native functions return 0 (or a count) on success and -P3R_<NAME> on failure. */",
        "#ifndef P3_REASONS_H",
        "#define P3_REASONS_H",
        "",
        "enum p3_reason {",
    ]
    for r in _CATALOGUE:
        lines.append(f"    P3R_{r.name} = {int(r.code[4:])},")
    lines += ["};", "", "#endif", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(c_header(), end="")
