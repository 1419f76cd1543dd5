"""The DPDK port backend in one process, on ring-backed ports (docs/dpdk.md).

A gateway's native worker polls two DPDK ports made from rings
(simulators/ringports.py); the test side is the LAN host and the remote
peer: it puts Ethernet frames on the ports' receive rings and reads what the
worker sent. The remote peer is a second dataplane in Python with the
matching keys, so every frame is checked end to end: sealed packets open to
the very inner packets that went in, in order, and the other way round.

DPDK's EAL comes up once per process, so each scenario runs in a fresh
Python subprocess that prints one JSON line (as tests/integration/
test_cryptodev.py does); the pytest process never loads DPDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from p3hw.dataplane import DPDK_LIBRARY

pytestmark = [pytest.mark.dpdk]

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = r"""
import ipaddress, json, os, struct, sys, time
from p3hw.crypto.keys import SaKeys, material_length
from p3hw.dataplane import Dataplane, DpdkPorts, PeerConfig, Routes, Worker
from p3hw.reasons import P3Error
from p3hw.simulators.ringports import RingPorts

fam = int(sys.argv[1])
V4 = fam == 4
A_WAN, B_WAN = ("192.0.2.1", "198.51.100.2") if V4 else ("2001:db8::1", "2001:db8:ff::2")
A_LAN = "10.1.0.1/24" if V4 else "fd00:10:1::1/64"
HOST, HOST2 = ("10.1.0.2", "10.1.0.3") if V4 else ("fd00:10:1::2", "fd00:10:1::3")
REMOTE_NET, REMOTE_HOST = ("10.2.0.0/24", "10.2.0.9") if V4 else ("fd00:10:2::/64", "fd00:10:2::9")
PEER_MAC, HOST_MAC, HOST2_MAC = (bytes.fromhex(x) for x in ("020000000002", "020000000011", "020000000013"))
ETH_IP = b"\x08\x00" if V4 else b"\x86\xdd"
out = {}

def ip(a): return ipaddress.ip_address(a).packed

def csum(data):
    if len(data) % 2: data += b"\0"
    s = sum(struct.unpack(f"!{len(data)//2}H", data))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def inner(src, dst, n, size):
    body = struct.pack("!Q", n) + bytes((n + i) & 0xff for i in range(size))
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(body), 0) + body
    if V4:
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, ip(src), ip(dst))
        return h[:10] + struct.pack("!H", csum(h)) + h[12:] + udp
    return struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, ip(src), ip(dst)) + udp

def arp(op, smac, sip, tmac, tip, dst):
    return dst + smac + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, smac, ip(sip), tmac, ip(tip))

def icmp6(src, dst, body, dst_mac, smac):
    pseudo = ip(src) + ip(dst) + struct.pack("!I3xB", len(body), 58)
    body = body[:2] + struct.pack("!H", csum(pseudo + body)) + body[4:]
    return dst_mac + smac + b"\x86\xdd" + struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 255, ip(src), ip(dst)) + body

def announce(smac, sip, target, dst_mac):
    # "who has <target>": the ARP request or neighbour solicitation a host sends
    if V4:
        return arp(1, smac, sip, b"\0" * 6, target, b"\xff" * 6)
    ns = struct.pack("!BBHI16s", 135, 0, 0, 0, ip(target)) + b"\x01\x01" + smac
    return icmp6(sip, target, ns, dst_mac, smac)

def answer(smac, sip, our_mac, our_ip):
    # the neighbour's reply to our request
    if V4:
        return arp(2, smac, sip, our_mac, our_ip, our_mac)
    na = struct.pack("!BBHI16s", 136, 0, 0, 0x60000000, ip(sip)) + b"\x02\x01" + smac
    return icmp6(sip, our_ip, na, our_mac, smac)

def wait_frames(ring, n, timeout=5.0):
    got, end = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        f = ports.get(ring)
        if f is None: time.sleep(0.002)
        else: got.append(f)
    return got

def is_link(frame):
    et = frame[12:14]
    return et == b"\x08\x06" or (et == b"\x86\xdd" and frame[20] == 58)

ports = RingPorts.open()
cipher = "aes-128-gcm"
ab = SaKeys.from_material(0x1111, cipher, os.urandom(material_length(cipher)))
ba = SaKeys.from_material(0x2222, cipher, os.urandom(material_length(cipher)))
hp_ab, hp_ba = os.urandom(16), os.urandom(16)
a, b = Dataplane(), Dataplane()
a.add_peer(PeerConfig(2, A_WAN, B_WAN)); b.add_peer(PeerConfig(1, B_WAN, A_WAN))
a.set_hp_keys(2, hp_out=hp_ab, hp_in=hp_ba); b.set_hp_keys(1, hp_out=hp_ba, hp_in=hp_ab)
a.add_outbound_sa(2, ab); b.add_inbound_sa(1, ab); b.add_outbound_sa(1, ba); a.add_inbound_sa(2, ba)
routes = Routes(); routes.add(REMOTE_NET, 2)

# Bad ports first: a clear reason, nothing started.
try:
    Worker(a, routes, None, dpdk=DpdkPorts(lan_port="net_nothing0", wan_port=ports.wan_name,
           lan_address=ipaddress.ip_interface(A_LAN), wan_address=ipaddress.ip_interface(A_WAN + "/0")))
    out["bad_port"] = "no error"
except P3Error as e:
    out["bad_port"] = e.reason.code
try:
    Worker(a, routes, None, dpdk=DpdkPorts(lan_port=ports.lan_name, wan_port=ports.wan_name, library="/nonexistent/libp3dpdk.so",
           lan_address=ipaddress.ip_interface(A_LAN), wan_address=ipaddress.ip_interface(A_WAN + "/0")))
    out["no_library"] = "no error"
except P3Error as e:
    out["no_library"] = e.reason.code

w = Worker(a, routes, None, dpdk=DpdkPorts(lan_port=ports.lan_name, wan_port=ports.wan_name,
           lan_address=ipaddress.ip_interface(A_LAN), wan_address=ipaddress.ip_interface(A_WAN + "/0")))
w.start()
LAN_IP = A_LAN.split("/")[0]

# 1. Link layer: the peer and the LAN host ask for the gateway's addresses.
sol6 = lambda t: bytes.fromhex("3333ff") + ip(t)[-3:]
ports.put("wan_rx", announce(PEER_MAC, B_WAN, A_WAN, b"\xff" * 6 if V4 else sol6(A_WAN)))
ports.put("lan_rx", announce(HOST_MAC, HOST, LAN_IP, b"\xff" * 6 if V4 else sol6(LAN_IP)))
wan_reply, lan_reply = wait_frames("wan_tx", 1), wait_frames("lan_tx", 1)
def reply_ok(f, dst_mac, our_mac):
    if not f or f[0][:6] != dst_mac or f[0][6:12] != our_mac: return False
    f = f[0]
    if V4: return f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[22:28] == our_mac
    return f[12:14] == b"\x86\xdd" and f[54] == 136 and f[-6:] == our_mac
out["wan_answered"] = reply_ok(wan_reply, PEER_MAC, ports.wan_mac)
out["lan_answered"] = reply_ok(lan_reply, HOST_MAC, ports.lan_mac)

# 2. LAN -> seal -> WAN: every frame opens at the peer to what went in, in order.
sent = [inner(HOST, REMOTE_HOST, n, size) for n, size in enumerate([30, 200, 1000, 1300] * 50)]
for p in sent:
    ports.put("lan_rx", ports.lan_mac + HOST_MAC + ETH_IP + p)
frames = wait_frames("wan_tx", len(sent))
out["sealed_frames"] = len(frames)
out["sealed_eth_ok"] = all(f[:6] == PEER_MAC and f[6:12] == ports.wan_mac and f[12:14] == ETH_IP for f in frames)
opened = b.open([f[14:] for f in frames], with_ip=True)
out["opened_in_order"] = [o.data for o in opened] == sent
out["open_status"] = sorted({o.status for o in opened})

# 3. WAN -> open -> LAN, to a host the gateway has not met: held, asked for, then delivered.
back = [inner(REMOTE_HOST, HOST2, n, size) for n, size in enumerate([40, 700, 1200] * 4)]
for s in b.seal([(1, p) for p in back], with_ip=True):
    ports.put("wan_rx", ports.wan_mac + PEER_MAC + ETH_IP + s.data)
asked = wait_frames("lan_tx", 1)
out["asked_for_host2"] = bool(asked) and is_link(asked[0]) and ip(HOST2) in asked[0]
time.sleep(0.05)
out["held_before_answer"] = ports.get("lan_tx") is None
ports.put("lan_rx", answer(HOST2_MAC, HOST2, ports.lan_mac, LAN_IP))
delivered = wait_frames("lan_tx", len(back))
out["delivered_in_order"] = [f[14:] for f in delivered] == back
out["delivered_eth_ok"] = all(f[:6] == HOST2_MAC and f[6:12] == ports.lan_mac for f in delivered)

# 4. The control plane sends through the WAN port (IKE behind the non-ESP marker).
w.send(B_WAN, 5653, b"\0\0\0\0" + b"ike message")
ctl = wait_frames("wan_tx", 1)
if ctl:
    f = ctl[0][14:]
    hl = 20 if V4 else 40
    sport, dport, ulen, ucs = struct.unpack("!HHHH", f[hl:hl + 8])
    out["control_sent"] = (f[hl + 8:] == b"\0\0\0\0ike message" and sport == 5653 and dport == 5653
                           and ctl[0][:6] == PEER_MAC)
    if V4:
        out["control_checksum_ok"] = csum(f[:20]) == 0
    else:
        pseudo = f[8:40] + struct.pack("!I3xB", ulen, 17)
        out["control_checksum_ok"] = csum(pseudo + f[40:40 + ulen]) == 0
else:
    out["control_sent"] = False
# ... and receives: an IKE message from the peer reaches the control plane.
ike = b"\0\0\0\0" + b"from the peer"
udp = struct.pack("!HHHH", 5653, 5653, 8 + len(ike), 0) + ike
if V4:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, ip(B_WAN), ip(A_WAN))
    pkt = h[:10] + struct.pack("!H", csum(h)) + h[12:] + udp
else:
    pseudo = ip(B_WAN) + ip(A_WAN) + struct.pack("!I3xB", len(udp), 17)
    udp = udp[:6] + struct.pack("!H", csum(pseudo + udp)) + udp[8:]
    pkt = struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, ip(B_WAN), ip(A_WAN)) + udp
ports.put("wan_rx", ports.wan_mac + PEER_MAC + ETH_IP + pkt)
msgs, end = [], time.monotonic() + 5
while not msgs and time.monotonic() < end:
    msgs = w.receive(); time.sleep(0.005)
out["ike_received"] = [(m.kind, m.addr, m.data) for m in msgs] == [("ike", B_WAN, b"from the peer")]

# 5. Garbage on both ports: counted and dropped, and the ports still forward.
rnd = __import__("random").Random(7)
before = w.stats().link_drops
for i in range(400):
    good = ports.lan_mac + HOST_MAC + ETH_IP + inner(HOST, REMOTE_HOST, i, 100)
    junk = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 200)))
    cut = good[:rnd.randrange(0, len(good))]
    for ring, frame in (("lan_rx", junk), ("wan_rx", junk), ("lan_rx", cut), ("wan_rx", ports.wan_mac + PEER_MAC + ETH_IP + junk)):
        while True:
            try: ports.put(ring, frame); break
            except P3Error: time.sleep(0.001)
time.sleep(0.3)
ports.drain("wan_tx"); ports.drain("lan_tx")
out["garbage_counted"] = w.stats().link_drops - before
ports.put("lan_rx", ports.lan_mac + HOST_MAC + ETH_IP + inner(HOST, REMOTE_HOST, 9999, 64))
after = wait_frames("wan_tx", 1)
out["still_forwarding"] = bool(after) and b.open([after[0][14:]], with_ip=True)[0].data == inner(HOST, REMOTE_HOST, 9999, 64)
st = w.stats()
out["stats"] = {k: getattr(st, k) for k in ("lan_rx_packets", "wan_tx_packets", "wan_rx_packets", "lan_tx_packets",
                                          "neighbour_drops", "link_replies", "io_errors")}
w.stop(); w.close()
print(json.dumps(out))
"""


def scenario(family: int) -> dict[str, Any]:
    if not os.path.exists(DPDK_LIBRARY):
        pytest.skip(f"{DPDK_LIBRARY} is not built (make -C native dpdk)")
    proc = subprocess.run([sys.executable, "-c", SCENARIO, str(family)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"scenario crashed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=[4, 6], ids=["ipv4", "ipv6"])
def result(request: pytest.FixtureRequest) -> dict[str, Any]:
    return scenario(request.param)


def test_a_port_name_the_eal_does_not_know_is_refused_with_its_reason(result: dict[str, Any]) -> None:
    assert result["bad_port"] == "P3-E607"
    assert result["no_library"] == "P3-E606"


def test_the_ports_answer_arp_or_neighbour_solicitations_for_the_gateway(result: dict[str, Any]) -> None:
    assert result["wan_answered"] and result["lan_answered"]


def test_lan_packets_leave_the_wan_port_sealed_for_the_peer_in_order(result: dict[str, Any]) -> None:
    assert result["sealed_frames"] == 200
    assert result["sealed_eth_ok"]
    assert result["open_status"] == ["OK"] and result["opened_in_order"]


def test_packets_for_an_unknown_lan_host_wait_for_its_answer_and_arrive_in_order(result: dict[str, Any]) -> None:
    assert result["asked_for_host2"] and result["held_before_answer"]
    assert result["delivered_in_order"] and result["delivered_eth_ok"]


def test_control_plane_sends_and_receives_ike_through_the_wan_port(result: dict[str, Any]) -> None:
    assert result["control_sent"] and result["control_checksum_ok"]
    assert result["ike_received"]


def test_garbage_frames_are_counted_and_dropped_and_forwarding_goes_on(result: dict[str, Any]) -> None:
    assert result["garbage_counted"] >= 400, result
    assert result["still_forwarding"]
    assert result["stats"]["io_errors"] == 0, result["stats"]


def test_a_daemon_whose_dpdk_port_is_missing_exits_with_the_reason_and_no_traceback(tmp_path: Path) -> None:
    if not os.path.exists(DPDK_LIBRARY):
        pytest.skip(f"{DPDK_LIBRARY} is not built (make -C native dpdk)")
    psk = tmp_path / "b.psk"
    psk.write_text(os.urandom(32).hex() + "\n")
    psk.chmod(0o600)
    conf = tmp_path / "primary.conf"
    conf.write_text("\n".join([
        "localstart", "role = primary", "ip = 4", "address = 192.0.2.1",
        f"admin_socket = {tmp_path / 'admin.sock'}", f"admin_store = {tmp_path / 'admin.db'}",
        "io = dpdk", "dpdk_lan_port = net_af_packet0", "dpdk_wan_port = net_af_packet1",
        "dpdk_lan_address = 10.1.0.1/24",
        # The EAL brings up no port at all: the names cannot be found.
        "dpdk_eal_args = --no-huge -m 128 --no-shconf --no-pci --no-telemetry --log-level=*:error",
        "localend", "1/address = 192.0.2.2", "1/psk_file = b.psk", "1/subnet1 = 10.2.0.0", "1/mask1 = /24", ""]))
    proc = subprocess.run([sys.executable, "-m", "p3hw.cli", "primary", "-c", str(conf)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc
    assert "P3-E607" in proc.stderr and "net_af_packet0" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


TAP_SCENARIO = r"""
import ipaddress, json, os, socket, struct, time
from pyroute2 import IPRoute
from p3hw.crypto.keys import SaKeys, material_length
from p3hw.dataplane import Dataplane, DpdkPorts, PeerConfig, Routes, Worker
from p3hw.simulators.ringports import EAL_ARGS, RingPorts

ports = RingPorts.open(EAL_ARGS + " --vdev=net_tap0,iface=p3tap0")
cipher = "aes-256-gcm"
ab = SaKeys.from_material(0x1111, cipher, os.urandom(material_length(cipher)))
ba = SaKeys.from_material(0x2222, cipher, os.urandom(material_length(cipher)))
hp_ab, hp_ba = os.urandom(16), os.urandom(16)
a, b = Dataplane(), Dataplane()
a.add_peer(PeerConfig(2, "192.0.2.1", "198.51.100.2")); b.add_peer(PeerConfig(1, "198.51.100.2", "192.0.2.1"))
a.set_hp_keys(2, hp_out=hp_ab, hp_in=hp_ba); b.set_hp_keys(1, hp_out=hp_ba, hp_in=hp_ab)
a.add_outbound_sa(2, ab); b.add_inbound_sa(1, ab); b.add_outbound_sa(1, ba); a.add_inbound_sa(2, ba)
routes = Routes(); routes.add("10.2.0.0/24", 2)
w = Worker(a, routes, None, dpdk=DpdkPorts(lan_port="net_tap0", wan_port=ports.wan_name,
           lan_address=ipaddress.ip_interface("10.1.0.1/24"), wan_address=ipaddress.ip_interface("192.0.2.1/0")))
w.start()
# The kernel is the LAN host on the tap's other side: it routes the remote LAN through the gateway.
with IPRoute() as ipr:
    idx = ipr.link_lookup(ifname="p3tap0")[0]
    ipr.addr("add", index=idx, address="10.1.0.2", prefixlen=24)
    ipr.link("set", index=idx, state="up")
    ipr.route("add", dst="10.2.0.0/24", gateway="10.1.0.1")
# The peer announces itself on the WAN ring so the gateway knows its MAC.
PEER_MAC = bytes.fromhex("020000000002")
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, PEER_MAC, socket.inet_aton("198.51.100.2"), bytes(6),
                  socket.inet_aton("192.0.2.1"))
ports.put("wan_rx", b"\xff" * 6 + PEER_MAC + b"\x08\x06" + arp)
out = {}
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("10.1.0.2", 7000)); rx.settimeout(5)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.bind(("10.1.0.2", 0))
# Until the kernel has seen the new link come up it drops what it sends there (linkwatch, as
# the testbed's veths): knock until a first datagram comes out sealed, then the real ones.
end = time.monotonic() + 10
while time.monotonic() < end:
    tx.sendto(b"knock", ("10.2.0.9", 9))
    time.sleep(0.05)
    if any(f[12:14] == b"\x08\x00" for f in ports.drain("wan_tx")):
        break
time.sleep(0.05)
ports.drain("wan_tx")
payloads = [b"kernel to peer %d " % i + bytes(i * 10) for i in range(20)]
for p in payloads:
    tx.sendto(p, ("10.2.0.9", 9))
got, end = [], time.monotonic() + 5
while len(got) < len(payloads) and time.monotonic() < end:
    f = ports.get("wan_tx")
    if f is None: time.sleep(0.005); continue
    if f[12:14] != b"\x08\x00": continue
    o = b.open([f[14:]], with_ip=True)[0]
    if o.status == "OK" and o.data[28:] != b"knock": got.append(o.data[28:])
out["kernel_to_peer"] = got == payloads
def csum(h):
    s = sum(struct.unpack("!10H", h))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
back = []
for i in range(10):
    body = b"peer to kernel %d" % i
    udp = struct.pack("!HHHH", 9, 7000, 8 + len(body), 0) + body
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, socket.inet_aton("10.2.0.9"),
                    socket.inet_aton("10.1.0.2"))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    s = b.seal([(1, h + udp)], with_ip=True)[0]
    ports.put("wan_rx", ports.wan_mac + PEER_MAC + b"\x08\x00" + s.data)
    back.append(body)
received = []
try:
    while len(received) < len(back):
        received.append(rx.recvfrom(2048)[0])
except socket.timeout:
    pass
out["peer_to_kernel"] = received == back
out["link_replies"] = w.stats().link_replies
w.stop(); w.close()
print(json.dumps(out))
"""


@pytest.mark.root
@pytest.mark.netns
def test_a_kernel_lan_host_on_a_net_tap_port_reaches_the_peer_and_back(tmp_path: Path) -> None:
    """net_tap: the kernel itself is the LAN host; it ARPs for the gateway and its datagrams cross both ways."""
    if not os.path.exists(DPDK_LIBRARY):
        pytest.skip(f"{DPDK_LIBRARY} is not built (make -C native dpdk)")
    if os.geteuid() != 0:
        pytest.skip("net_tap needs root (a TAP interface in a namespace of its own)")
    # unshare -n: the TAP interface and its routes live in a throw-away network namespace.
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", TAP_SCENARIO], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, f"scenario crashed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["kernel_to_peer"] and out["peer_to_kernel"], out
    assert out["link_replies"] >= 1, out


LANES_SCENARIO = r"""
import ipaddress, json, os, struct, socket, time
from p3hw.crypto.keys import SaKeys, material_length
from p3hw.dataplane import Dataplane, DpdkPorts, FlowTable, PeerConfig, Routes, Worker
from p3hw.simulators.ringports import RingPorts

ports = RingPorts.open(queues=2)
A = "192.0.2.1"
PEERS = {2: ("198.51.100.2", bytes.fromhex("020000000002"), "10.2.0.9"),
         3: ("198.51.100.3", bytes.fromhex("020000000003"), "10.3.0.9")}
HOST, HOST_MAC = "10.1.0.2", bytes.fromhex("020000000011")

def csum(h):
    s = sum(struct.unpack(f"!{len(h)//2}H", h))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def inner(src, dst, flow, n):
    body = struct.pack("!HQ", flow, n) + bytes(20 + (n % 7) * 50)
    udp = struct.pack("!HHHH", 40000 + flow, 9, 8 + len(body), 0) + body
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, socket.inet_aton(src),
                    socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + udp

def arp(smac, sip, tip):
    return b"\xff" * 6 + smac + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, smac,
        socket.inet_aton(sip), bytes(6), socket.inet_aton(tip))

cipher = "aes-128-gcm"
lanes = [Dataplane(), Dataplane()]
far, keys = {}, {}
routes = Routes()
for pid, (addr, mac, host) in PEERS.items():
    out_sa = SaKeys.from_material(0x100 + pid, cipher, os.urandom(material_length(cipher)))
    in_sa = SaKeys.from_material(0x200 + pid, cipher, os.urandom(material_length(cipher)))
    hp_o, hp_i = os.urandom(16), os.urandom(16)
    a = lanes[pid % 2]                  # the worker owning peer_id % 2 holds the peer
    a.add_peer(PeerConfig(pid, A, addr)); a.set_hp_keys(pid, hp_out=hp_o, hp_in=hp_i)
    a.add_outbound_sa(pid, out_sa); a.add_inbound_sa(pid, in_sa)
    b = Dataplane(); b.add_peer(PeerConfig(1, addr, A)); b.set_hp_keys(1, hp_out=hp_i, hp_in=hp_o)
    b.add_inbound_sa(1, out_sa); b.add_outbound_sa(1, in_sa)
    far[pid] = b
    routes.add(host.rsplit(".", 1)[0] + ".0/24", pid)
flows = [FlowTable(1024, 60000, 60000), FlowTable(1024, 60000, 60000)]
w = Worker(lanes, routes, flows, dpdk=DpdkPorts(lan_port=ports.lan_name, wan_port=ports.wan_name, workers=2,
           lan_address=ipaddress.ip_interface("10.1.0.1/24"), wan_address=ipaddress.ip_interface(A + "/0")))
w.start()
out = {}
# The peers announce themselves on WAN queue 0, the LAN host on LAN queue 1: one neighbour table per port.
for pid, (addr, mac, _) in PEERS.items():
    ports.put("wan_rx", arp(mac, addr, A), 0)
ports.put("lan_rx", arp(HOST_MAC, HOST, "10.1.0.1"), 1)
time.sleep(0.2)
ports.drain("wan_tx"); ports.drain("lan_tx")

# LAN -> WAN: four flows, each on one queue; half of them reach the worker that does not own their peer.
N = 150
plan = {1: (2, 0), 2: (2, 1), 3: (3, 0), 4: (3, 1)}     # flow: (peer, queue)
sent = {f: [] for f in plan}
for n in range(N):
    for f, (pid, q) in plan.items():
        p = inner(HOST, PEERS[pid][2], f, n)
        sent[f].append(p)
        ports.put("lan_rx", ports.lan_mac + HOST_MAC + b"\x08\x00" + p, q)
got = {f: [] for f in plan}
by_queue = {pid: set() for pid in PEERS}
end = time.monotonic() + 10
while sum(map(len, got.values())) < 4 * N and time.monotonic() < end:
    idle = True
    for q in (0, 1):
        fr = ports.get("wan_tx", q)
        if fr is None: continue
        idle = False
        pid = next((k for k, v in PEERS.items() if fr[:6] == v[1]), None)
        if pid is None: continue
        by_queue[pid].add(q)
        o = far[pid].open([fr[14:]], with_ip=True)[0]
        if o.status == "OK":
            got[struct.unpack("!H", o.data[28:30])[0]].append(o.data)
    if idle: time.sleep(0.002)
out["lan_to_wan_in_order"] = all(got[f] == sent[f] for f in plan)
out["lan_to_wan_counts"] = {f: len(got[f]) for f in plan}
out["each_peer_leaves_by_its_owner_queue"] = {str(pid): sorted(qs) for pid, qs in by_queue.items()}

# WAN -> LAN: each peer's packets arrive on the queue of the worker that does not own it.
back = {2: [], 3: []}
for n in range(N):
    for pid in (2, 3):
        p = inner(PEERS[pid][2], HOST, 10 + pid, n)
        back[pid].append(p)
        s = far[pid].seal([(1, p)], with_ip=True)[0]
        ports.put("wan_rx", ports.wan_mac + PEERS[pid][1] + b"\x08\x00" + s.data, 1 - pid % 2)
delivered = {2: [], 3: []}
end = time.monotonic() + 10
while sum(map(len, delivered.values())) < 2 * N and time.monotonic() < end:
    frames = ports.drain("lan_tx")
    if not frames: time.sleep(0.002)
    for fr in frames:
        if fr[:6] == HOST_MAC and fr[12:14] == b"\x08\x00":
            flow = struct.unpack("!H", fr[14 + 28:14 + 30])[0]
            delivered[flow - 10].append(fr[14:])
out["wan_to_lan_in_order"] = delivered == back
# IKE arriving on worker 1's queue reaches the control plane.
ike = b"\0\0\0\0hello from 3"
udp = struct.pack("!HHHH", 5653, 5653, 8 + len(ike), 0) + ike
h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, socket.inet_aton(PEERS[3][0]),
                socket.inet_aton(A))
ports.put("wan_rx", ports.wan_mac + PEERS[3][1] + b"\x08\x00" + h[:10] + struct.pack("!H", csum(h)) + h[12:] + udp, 1)
msgs, end = [], time.monotonic() + 5
while not msgs and time.monotonic() < end:
    msgs = w.receive(); time.sleep(0.005)
out["ike_from_worker_1"] = [(m.kind, m.data) for m in msgs] == [("ike", b"hello from 3")]
# The control plane changes a worker's context only with every worker parked.
with w.paused():
    lanes[0].counters()
st = w.stats()
out["handoffs"] = st.handoffs
out["handoff_drops"] = st.handoff_drops
out["sealed_per_worker"] = [lanes[0].counters().sealed_packets, lanes[1].counters().sealed_packets]
w.stop(); w.close()
print(json.dumps(out))
"""


def test_two_workers_each_seal_and_open_their_own_peers_and_hand_the_rest_over_in_order() -> None:
    """Two workers on two queues: every packet reaches the worker owning its peer, flows stay in order."""
    if not os.path.exists(DPDK_LIBRARY):
        pytest.skip(f"{DPDK_LIBRARY} is not built (make -C native dpdk)")
    proc = subprocess.run([sys.executable, "-c", LANES_SCENARIO], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, f"scenario crashed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["lan_to_wan_counts"] == {"1": 150, "2": 150, "3": 150, "4": 150}, out
    assert out["lan_to_wan_in_order"] and out["wan_to_lan_in_order"], out
    # Peer 2 belongs to worker 0, peer 3 to worker 1: each leaves by its owner's queue only.
    assert out["each_peer_leaves_by_its_owner_queue"] == {"2": [0], "3": [1]}, out
    # Half the LAN packets (2 of 4 flows) and all the WAN packets went through a hand-off.
    assert out["handoffs"] == 2 * 150 + 2 * 150 and out["handoff_drops"] == 0, out
    assert out["sealed_per_worker"] == [300, 300], out
    assert out["ike_from_worker_1"], out


def test_the_product_dpdk_library_carries_no_test_ports() -> None:
    """The ring ports and traffic thread are a test library of their own; the gateway's libp3dpdk.so has none."""
    from p3hw.backends.pkcs11.elf import read_elf
    from p3hw.simulators.ringports import DPDK_TEST_LIBRARY

    if not os.path.exists(DPDK_LIBRARY) or not os.path.exists(DPDK_TEST_LIBRARY):
        pytest.skip("the DPDK libraries are not built (make -C native dpdk)")
    product = read_elf(DPDK_LIBRARY)
    test_only = read_elf(DPDK_TEST_LIBRARY)
    assert {"p3_cryptodev_open", "p3_dpdk_ports_open"} <= set(product.exports)
    assert not [name for name in product.exports if "bench" in name or "test" in name or "ring_" in name]
    assert {"p3_dpdk_bench_ports", "p3_dpdk_ring_put", "p3_dpdk_test_port_up"} <= set(test_only.exports)
