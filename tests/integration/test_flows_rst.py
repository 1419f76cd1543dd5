"""Login termination against the real Linux stack (spec §2.1.7).

No dataplane, no tunnel: flows.c alone, built to a shared library and driven
through ctypes, in a fresh network namespace with a TUN device. The test
plays the remote end by hand: it reads the local socket's packets from the
TUN, answers them with packets it crafts, shows both directions to the flow
tracker, then writes what ``p3dp_flows_terminate`` returns into the TUN and
looks at what the local socket reports. That is what a user behind a
gateway sees when the session fails: ECONNRESET at once, not a timeout.

Each scenario runs in a child process started by ``unshare --net`` (this
file is its ``__main__``), so the namespace and the TUN vanish with it even
if the test fails half way.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
FROM_LAN, TO_LAN = 0, 1
TUN_NAME = "p3flows0"
REMOTE_ISN = 0x5EED0000

# Addresses: the namespace's own stack is the "local end" (our LAN); the
# remote subnet is routed into the TUN, i.e. "into the tunnel".
LOCAL4, REMOTE4, REMOTE_NET4 = "10.1.0.1", "10.2.0.7", "10.2.0.0/24"
LOCAL6, REMOTE6, REMOTE_NET6 = "fd00:1::1", "fd00:2::7", "fd00:2::/64"


# ---- the test side ---------------------------------------------------------


@pytest.fixture(scope="module")
def flows_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flows.c alone as a shared library (the extension may not be built)."""
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("flows") / "libp3flows.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
         "-I", str(REPO / "native/include"), "-I", str(REPO / "native/src"),
         str(REPO / "native/src/flows.c"), "-o", str(out)],
        check=True,
    )
    return out


def run_scenario(name: str, library: Path) -> dict[str, object]:
    if shutil.which("unshare") is None or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs unshare(1) and /dev/net/tun")
    proc = subprocess.run(
        ["unshare", "--net", sys.executable, __file__, name, str(library)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.parametrize("scenario", ["tcp4", "tcp6", "tcp4_timestamps", "tcp4_server"])
def test_terminated_tcp_connection_sees_connection_reset(flows_library: Path, scenario: str) -> None:
    result = run_scenario(scenario, flows_library)
    # Before termination the connection was alive (a recv timed out)...
    assert result["before"] == "timeout"
    # ...and the RST we generated made the local socket fail at once.
    assert result["after"] == "ECONNRESET"
    assert result["tcp_flows_reset"] == 1


@pytest.mark.root
@pytest.mark.netns
def test_rst_is_accepted_when_local_ack_was_not_seen(flows_library: Path) -> None:
    """The local end's ACK of the last data never reached the tracker (as with
    a delayed ACK): the second RST, at the end of the remote data, does it."""
    result = run_scenario("tcp4_unacked", flows_library)
    assert result["before"] == "timeout"
    assert result["tcp_resets"] == 2
    # The RST at the last ACK the tracker saw is not enough (it is now left
    # of the window, or draws a challenge ACK)...
    assert result["after_all_but_last"] == "timeout"
    # ...the one at the end of the remote data is.
    assert result["after"] == "ECONNRESET"


@pytest.mark.root
@pytest.mark.netns
def test_connecting_socket_is_refused_at_once(flows_library: Path) -> None:
    """The session fails while the SYN is out: connect() ends with ECONNREFUSED."""
    result = run_scenario("tcp4_connecting", flows_library)
    assert result["after"] == "ECONNREFUSED"


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.parametrize("scenario", ["udp4", "udp6"])
def test_udp_socket_learns_destination_is_unreachable(flows_library: Path, scenario: str) -> None:
    """A connected UDP socket with IP(V6)_RECVERR fails its next call with
    EHOSTUNREACH and finds the ICMP error, from the unreachable destination,
    in its error queue. docs/flows.md says what a socket without it sees."""
    result = run_scenario(scenario, flows_library)
    assert result["icmp_unreachables"] == 2
    assert result["recverr_recv"] == "EHOSTUNREACH"
    assert result["errqueue_errno"] == "EHOSTUNREACH"
    if scenario == "udp4":
        assert result["errqueue_icmp"] == [2, 3, 1]    # SO_EE_ORIGIN_ICMP, host unreachable
        assert result["offender"] == REMOTE4
    else:
        assert result["errqueue_icmp"] == [3, 1, 3]    # SO_EE_ORIGIN_ICMP6, address unreachable
        assert result["offender"] == REMOTE6


@pytest.mark.root
@pytest.mark.netns
def test_udp_socket_without_recverr(flows_library: Path) -> None:
    """Linux takes host unreachable as a soft error (RFC 1122 §4.2.3.9): a
    connected UDP socket without IP_RECVERR does not see it. Code 13
    (communication administratively prohibited) is a hard error: it does."""
    assert run_scenario("udp4", flows_library)["plain_recv"] == "nothing"
    prohibited = run_scenario("udp4_prohibited", flows_library)
    assert prohibited["plain_recv"] == "EHOSTUNREACH"
    assert prohibited["errqueue_icmp"] == [2, 3, 13]


@pytest.mark.root
@pytest.mark.netns
def test_ping_learns_destination_is_unreachable(flows_library: Path) -> None:
    result = run_scenario("ping4", flows_library)
    assert result["icmp_unreachables"] == 1
    assert result["recv"] == "EHOSTUNREACH"


# ---- the namespace side (this file run as a program) -------------------------


class Terminated(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "tcp_flows_reset", "tcp_resets", "icmp_unreachables", "flows_silent", "flows_remaining")]


def load_flows(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.p3dp_flows_new.restype = ctypes.c_void_p
    lib.p3dp_flows_new.argtypes = [ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint64]
    lib.p3dp_flows_observe.restype = ctypes.c_int
    lib.p3dp_flows_observe.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_char_p,
                                       ctypes.c_size_t, ctypes.c_int, ctypes.c_uint64]
    lib.p3dp_flows_terminate.restype = ctypes.c_int
    lib.p3dp_flows_terminate.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64,
                                         ctypes.c_void_p, ctypes.c_size_t,
                                         ctypes.POINTER(ctypes.c_size_t), ctypes.c_size_t,
                                         ctypes.POINTER(Terminated)]
    lib.p3dp_flows_free.argtypes = [ctypes.c_void_p]
    lib.p3dp_flows_set_unreachable_codes.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    return lib


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Tun:
    """A TUN device in this namespace, the remote subnet routed into it."""

    def __init__(self, family: int) -> None:
        from pyroute2 import IPRoute

        self.fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH22x", TUN_NAME.encode(), IFF_TUN | IFF_NO_PI))
        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, state="up")
            index = ipr.link_lookup(ifname=TUN_NAME)[0]
            ipr.link("set", index=index, state="up")
            if family == 4:
                ipr.addr("add", index=index, address=LOCAL4, prefixlen=24)
                ipr.route("add", dst=REMOTE_NET4, oif=index)
            else:
                ipr.addr("add", index=index, address=LOCAL6, prefixlen=64, flags=0x02)  # NODAD
                ipr.route("add", dst=REMOTE_NET6, oif=index, family=socket.AF_INET6)

    def read(self, timeout_s: float) -> bytes | None:
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        return os.read(self.fd, 65535) if ready else None

    def write(self, packet: bytes) -> None:
        os.write(self.fd, packet)


class RemoteEnd:
    """The far end of one flow, played by hand through the TUN."""

    def __init__(self, tun: Tun, flows: ctypes.CDLL, table: int, family: int, proto: int) -> None:
        self.tun, self.lib, self.table = tun, flows, table
        self.family, self.proto = family, proto
        self.local = socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6,
                                      LOCAL4 if family == 4 else LOCAL6)
        self.remote = socket.inet_pton(socket.AF_INET if family == 4 else socket.AF_INET6,
                                       REMOTE4 if family == 4 else REMOTE6)

    def observe(self, packet: bytes, direction: int) -> None:
        result = self.lib.p3dp_flows_observe(self.table, 1, packet, len(packet), direction, now_ms())
        assert result >= 0, result

    def next_from_local(self, timeout_s: float = 2.0, feed: bool = True) -> bytes | None:
        """The next packet of our protocol the local stack sends into the TUN
        (router solicitations, MLD reports and the like are skipped)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            packet = self.tun.read(left)
            if packet is None:
                return None
            proto = packet[9] if self.family == 4 else packet[6]
            if proto == self.proto:
                if feed:
                    self.observe(packet, FROM_LAN)
                return packet
        return None

    def ip_header(self, payload_len: int, proto: int) -> bytes:
        if self.family == 4:
            header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000, 64, proto, 0,
                                 self.remote, self.local)
            return header[:10] + struct.pack("!H", checksum(header)) + header[12:]
        return struct.pack("!IHBB16s16s", 6 << 28, payload_len, proto, 64, self.remote, self.local)

    def pseudo(self, length: int, proto: int) -> bytes:
        if self.family == 4:
            return self.remote + self.local + struct.pack("!BBH", 0, proto, length)
        return self.remote + self.local + struct.pack("!IxxxB", length, proto)

    def send_tcp(self, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
                 options: bytes = b"", feed: bool = True) -> None:
        offset = (20 + len(options)) // 4
        header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, 65535, 0, 0)
        segment = header + options + payload
        csum = checksum(self.pseudo(len(segment), 6) + segment)
        segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
        packet = self.ip_header(len(segment), 6) + segment
        if feed:
            self.observe(packet, TO_LAN)
        self.tun.write(packet)

    def terminate(self, write: bool = True) -> tuple[list[bytes], Terminated]:
        out = ctypes.create_string_buffer(64 * 256)
        lens = (ctypes.c_size_t * 64)()
        done = Terminated()
        n = self.lib.p3dp_flows_terminate(self.table, 1, now_ms(), out, len(out), lens, 64,
                                          ctypes.byref(done))
        assert n >= 0, n
        packets, offset = [], 0
        for i in range(n):
            packets.append(out.raw[offset:offset + lens[i]])
            offset += lens[i]
        for packet in packets if write else []:
            self.tun.write(packet)
        return packets, done


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def tcp_fields(packet: bytes, family: int) -> tuple[int, int, int, int, int, bytes]:
    """sport, dport, seq, ack, flags, options of a TCP packet."""
    l4 = packet[(packet[0] & 15) * 4:] if family == 4 else packet[40:]
    sport, dport, seq, ack, offset, flags = struct.unpack("!HHIIBB", l4[:14])
    return sport, dport, seq, ack, flags, l4[20:(offset >> 4) * 4]


def timestamp_of(options: bytes) -> int | None:
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if kind == 8:
            return struct.unpack("!I", options[i + 2:i + 6])[0]
        i += options[i + 1] if i + 1 < len(options) and options[i + 1] >= 2 else len(options)
    return None


def recv_outcome(sock: socket.socket, timeout_s: float) -> str:
    sock.settimeout(timeout_s)
    try:
        data = sock.recv(4096)
        return f"data:{len(data)}"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10


def scenario_tcp(family: int, *, timestamps: bool = False, drop_last_ack: bool = False) -> dict:
    tun = Tun(family)
    lib = load_flows(sys.argv[2])
    table = lib.p3dp_flows_new(1024, 3_600_000, 60_000)
    remote = RemoteEnd(tun, lib, table, family, 6)
    sock = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_STREAM)
    sock.setblocking(False)
    assert sock.connect_ex((REMOTE4 if family == 4 else REMOTE6, 80)) == errno.EINPROGRESS
    syn = remote.next_from_local()
    assert syn is not None, "no SYN in the TUN"
    lport, rport, local_isn, _, _, syn_options = tcp_fields(syn, family)
    options = b""
    if timestamps:
        ts_echo = timestamp_of(syn_options)
        assert ts_echo is not None, "the local stack did not offer timestamps"
        options = struct.pack("!BBBBII", 1, 1, 8, 10, 1000, ts_echo)
    remote.send_tcp(rport, lport, REMOTE_ISN, local_isn + 1, SYN | ACK, options=options)
    assert remote.next_from_local() is not None, "no ACK of the SYN-ACK"
    sock.setblocking(True)
    # Data both ways, then the local end's ACK of ours.
    sock.send(b"GET / HTTP/1.0\r\n\r\n")
    request = remote.next_from_local()
    assert request is not None
    _, _, seq, _, _, req_options = tcp_fields(request, family)
    request_len = len(request) - (20 if family == 4 else 40) - 20 - len(req_options)
    ts_options = struct.pack("!BBBBII", 1, 1, 8, 10, 1001, timestamp_of(req_options) or 0) if timestamps else b""
    remote.send_tcp(rport, lport, REMOTE_ISN + 1, seq + request_len, PSH | ACK, b"x" * 100, ts_options)
    # The local end acknowledges (at once or after its delayed-ACK timer).
    remote.next_from_local(timeout_s=0.5, feed=not drop_last_ack)
    assert sock.recv(4096) == b"x" * 100
    before = recv_outcome(sock, 0.3)
    packets, done = remote.terminate(write=False)
    # One at a time: after all but the last, the connection must still live.
    for packet in packets[:-1]:
        tun.write(packet)
    after_all_but_last = recv_outcome(sock, 0.3) if len(packets) > 1 else None
    tun.write(packets[-1])
    after = recv_outcome(sock, 2.0)
    lib.p3dp_flows_free(table)
    return {"before": before, "after": after, "after_all_but_last": after_all_but_last,
            "packets": len(packets), "tcp_flows_reset": done.tcp_flows_reset,
            "tcp_resets": done.tcp_resets}


def scenario_tcp4_server() -> dict:
    """The local end is the server: the connection is opened from the remote side."""
    tun = Tun(4)
    lib = load_flows(sys.argv[2])
    table = lib.p3dp_flows_new(1024, 3_600_000, 60_000)
    remote = RemoteEnd(tun, lib, table, 4, 6)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOCAL4, 8080))
    listener.listen(1)
    remote.send_tcp(40404, 8080, REMOTE_ISN, 0, SYN)
    synack = remote.next_from_local()
    assert synack is not None, "no SYN-ACK in the TUN"
    _, _, local_isn, _, _, _ = tcp_fields(synack, 4)
    remote.send_tcp(40404, 8080, REMOTE_ISN + 1, local_isn + 1, ACK)
    listener.settimeout(2)
    conn, _ = listener.accept()
    before = recv_outcome(conn, 0.3)
    packets, done = remote.terminate()
    after = recv_outcome(conn, 2.0)
    return {"before": before, "after": after, "packets": len(packets),
            "tcp_flows_reset": done.tcp_flows_reset, "tcp_resets": done.tcp_resets}


def scenario_tcp4_connecting() -> dict:
    tun = Tun(4)
    lib = load_flows(sys.argv[2])
    table = lib.p3dp_flows_new(1024, 3_600_000, 60_000)
    remote = RemoteEnd(tun, lib, table, 4, 6)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    assert sock.connect_ex((REMOTE4, 80)) == errno.EINPROGRESS
    assert remote.next_from_local() is not None, "no SYN in the TUN"
    packets, done = remote.terminate()
    select.select([], [sock], [], 2.0)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return {"after": errno.errorcode.get(error, str(error)), "packets": len(packets),
            "tcp_resets": done.tcp_resets}


def nonblocking_recv_outcome(sock: socket.socket) -> str:
    try:
        sock.recv(512, socket.MSG_DONTWAIT)
        return "data"
    except BlockingIOError:
        return "nothing"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def read_error_queue(sock: socket.socket, poller: select.poll, deadline_s: float = 30.0) -> list:
    """The ancillary data of the socket's first queued error, waiting for it under load."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            _, ancillary, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            return ancillary
        except BlockingIOError:
            if time.monotonic() >= end:
                raise AssertionError("no ICMP error reached the socket's error queue in "
                                     f"{deadline_s:.0f} s; Icmp6/InMsgs etc: {icmp_counters()}") from None
            poller.poll(200)


def icmp_counters() -> str:
    """The kernel's ICMP input counters in this namespace, for a failure message."""
    found = []
    for name in ("/proc/net/snmp6",):
        try:
            for line in Path(name).read_text().splitlines():
                if line.startswith(("Icmp6InMsgs", "Icmp6InErrors", "Icmp6InDestUnreachs")):
                    found.append(" ".join(line.split()))
        except OSError:
            pass
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
        icmp = [line for line in lines if line.startswith("Icmp:")]
        if len(icmp) == 2:
            found.append(" ".join(f"{k}={v}" for k, v in zip(icmp[0].split()[1:4], icmp[1].split()[1:4], strict=True)))
    except OSError:
        pass
    return "; ".join(found)


def scenario_udp(family: int, v4_code: int | None = None) -> dict:
    tun = Tun(family)
    lib = load_flows(sys.argv[2])
    table = lib.p3dp_flows_new(1024, 3_600_000, 60_000)
    if v4_code is not None:
        assert lib.p3dp_flows_set_unreachable_codes(table, v4_code, 3) == 0
    remote = RemoteEnd(tun, lib, table, family, 17)
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    # One socket reads its ICMP errors (IP_RECVERR, as the glibc resolver
    # does), one does not.
    recverr = socket.socket(af, socket.SOCK_DGRAM)
    plain = socket.socket(af, socket.SOCK_DGRAM)
    if family == 4:
        recverr.setsockopt(socket.IPPROTO_IP, 11, 1)           # IP_RECVERR
    else:
        recverr.setsockopt(socket.IPPROTO_IPV6, 25, 1)         # IPV6_RECVERR
    target = REMOTE4 if family == 4 else REMOTE6
    recverr.connect((target, 5300))
    plain.connect((target, 5301))
    recverr.send(b"query")
    plain.send(b"query")
    assert remote.next_from_local() is not None
    assert remote.next_from_local() is not None
    _, done = remote.terminate()
    # The kernel takes the ICMP error from the TUN in its own time (softirq): wait until the
    # socket reports it (POLLERR) instead of a fixed sleep, which a loaded machine outlasts.
    poller = select.poll()
    poller.register(recverr, select.POLLERR)
    poller.poll(30_000)
    recverr_recv = nonblocking_recv_outcome(recverr)
    # The queued error itself: struct sock_extended_err, then the offender. Reading the socket's
    # pending error above leaves the queue; POLLERR stays up while the queue holds the entry.
    ancillary = read_error_queue(recverr, poller)
    ee_errno, origin, icmp_type, icmp_code = struct.unpack_from("=IBBB", ancillary[0][2])
    offender = ancillary[0][2][16:]
    offender_addr = socket.inet_ntop(af, offender[4:8] if family == 4 else offender[8:24])
    return {
        "icmp_unreachables": done.icmp_unreachables,
        "recverr_recv": recverr_recv,
        "errqueue_errno": errno.errorcode.get(ee_errno, str(ee_errno)),
        "errqueue_icmp": [origin, icmp_type, icmp_code],
        "offender": offender_addr,
        "plain_recv": nonblocking_recv_outcome(plain),
    }


def scenario_ping4() -> dict:
    """An ICMP echo flow, from a ping socket as iputils ping opens it."""
    tun = Tun(4)
    Path("/proc/sys/net/ipv4/ping_group_range").write_text("0 0\n")   # this namespace only
    lib = load_flows(sys.argv[2])
    table = lib.p3dp_flows_new(1024, 3_600_000, 60_000)
    remote = RemoteEnd(tun, lib, table, 4, 1)
    ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    ping.setsockopt(socket.IPPROTO_IP, 11, 1)                  # IP_RECVERR
    ping.connect((REMOTE4, 0))
    ping.send(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"p3hw")
    assert remote.next_from_local() is not None, "no echo request in the TUN"
    _, done = remote.terminate()
    time.sleep(0.1)
    return {"icmp_unreachables": done.icmp_unreachables, "recv": nonblocking_recv_outcome(ping)}


SCENARIOS = {
    "tcp4": lambda: scenario_tcp(4),
    "tcp6": lambda: scenario_tcp(6),
    "tcp4_timestamps": lambda: scenario_tcp(4, timestamps=True),
    "tcp4_unacked": lambda: scenario_tcp(4, drop_last_ack=True),
    "tcp4_server": scenario_tcp4_server,
    "tcp4_connecting": scenario_tcp4_connecting,
    "udp4": lambda: scenario_udp(4),
    "udp6": lambda: scenario_udp(6),
    "udp4_prohibited": lambda: scenario_udp(4, v4_code=13),
    "ping4": scenario_ping4,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
