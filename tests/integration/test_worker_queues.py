"""The control plane's packets go down to the worker through a queue, never a pause (issue 11 item 4).

A kernel-mode worker on a real TUN and a real UDP socket, in a fresh
network namespace (``unshare --net``; this file is the child's
``__main__``). The far peer is a plain UDP socket with its own dataplane:
it opens what the worker sealed.

* 1,000 control messages queued with ``Worker.send_control`` arrive sealed
  with the session's data SA, all of them, in order, as control packets —
  and the worker was never paused.
* A TCP RST queued with ``Worker.send_lan`` is written into the TUN by the
  worker (with the virtio-net header of an offloading TUN) and the local
  stack takes it: a connecting socket is refused at once.
* Under IKE load the worker answers a real initiator's IKE_SA_INIT with a
  COOKIE itself and queues the retry that brings it back (RFC 7296 §2.6).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
TUN_NAME = "p3queue0"
GATEWAY_PORT, PEER_PORT = 5653, 5700
LOCAL_P3, PEER_P3 = "10.99.0.1", "10.99.0.2"      # P3 addresses (control-channel endpoints)
LAN_ADDR, REMOTE_NET, REMOTE_HOST = "10.1.0.1/24", "10.2.0.0/24", "10.2.0.7"
CONTROL_MESSAGES = 1000
MANY_RSTS = 3000      # more than the worker's down queue holds (1,024)
SO_RCVBUFFORCE = 33     # <asm-generic/socket.h>; not in the socket module


def run_scenario(name: str) -> dict[str, object]:
    if shutil.which("unshare") is None or not os.path.exists("/dev/net/tun"):
        pytest.fail("needs unshare(1) and /dev/net/tun")
    proc = subprocess.run(["unshare", "--net", sys.executable, str(HERE), name],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.root
@pytest.mark.netns
def test_thousand_control_messages_arrive_sealed_in_order_without_a_pause() -> None:
    result = run_scenario("control")
    assert result["queued"] == CONTROL_MESSAGES
    assert result["received"] == CONTROL_MESSAGES
    assert result["opened_as_control"] == CONTROL_MESSAGES
    assert result["in_order_and_intact"] is True
    assert result["pauses"] == 0
    assert result["control_sent"] == CONTROL_MESSAGES
    assert result["send_queue_drops"] == 0


@pytest.mark.root
@pytest.mark.netns
def test_rst_injected_through_the_worker_refuses_a_connecting_socket() -> None:
    result = run_scenario("lan_rst")
    assert result["syn_seen_by_peer"] is True
    assert result["connect"] == "ECONNREFUSED"
    assert result["pauses"] == 0
    assert result["written"] == 1 + MANY_RSTS


@pytest.mark.root
@pytest.mark.netns
def test_worker_answers_cookies_under_load_and_queues_the_retry() -> None:
    result = run_scenario("cookies")
    # Always-on cookies: the first request is answered by the worker, never queued...
    assert result["first_answer_is_cookie"] is True
    assert result["queued_before_retry"] == 0
    # ...and the initiator's retry with the cookie goes up to the control plane, intact.
    assert result["retry_queued"] is True
    # The cookie is the one the responder makes with the same secret (p3hw.dataplane.ike_cookie).
    assert result["cookie_matches_formula"] is True
    # Under-load mode: a burst over the rate limit turns cookies on for later requests.
    assert result["under_load_rate_drops"] > 0
    assert result["under_load_answer_is_cookie"] is True
    assert result["cookies_sent"] >= 2


# ---- the child, inside its own network namespace ----------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"") -> bytes:
    import ipaddress
    import struct
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload)
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    tcp[16:18] = _checksum(pseudo + bytes(tcp)).to_bytes(2, "big")
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, s, d))
    ip[10:12] = _checksum(bytes(ip)).to_bytes(2, "big")
    return bytes(ip) + bytes(tcp)


def _gateway_and_peer():  # type: ignore[no-untyped-def]
    """A started kernel-mode worker (TUN + UDP on 127.0.0.1) and the far peer's dataplane and socket."""
    import ipaddress
    import socket

    from pyroute2 import IPRoute

    from p3hw.backends import tun as tun_backend
    from p3hw.crypto.keys import SaKeys, material_length
    from p3hw.dataplane import Dataplane, FlowTable, PeerConfig, Routes, Worker

    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
    cipher = "aes-128-gcm"
    out_sa = SaKeys.from_material(0x1111, cipher, os.urandom(material_length(cipher)))
    in_sa = SaKeys.from_material(0x2222, cipher, os.urandom(material_length(cipher)))
    hp_out, hp_in = os.urandom(16), os.urandom(16)
    gw, peer = Dataplane(), Dataplane()
    gw.set_local_address(LOCAL_P3)
    peer.set_local_address(PEER_P3)
    gw.add_peer(PeerConfig(2, "127.0.0.1", "127.0.0.1", local_port=GATEWAY_PORT, remote_port=PEER_PORT))
    peer.add_peer(PeerConfig(1, "127.0.0.1", "127.0.0.1", local_port=PEER_PORT, remote_port=GATEWAY_PORT))
    gw.set_hp_keys(2, hp_out=hp_out, hp_in=hp_in)
    peer.set_hp_keys(1, hp_out=hp_in, hp_in=hp_out)
    gw.add_outbound_sa(2, out_sa)
    peer.add_inbound_sa(1, out_sa)
    peer.add_outbound_sa(1, in_sa)
    gw.add_inbound_sa(2, in_sa)

    tun_fd = tun_backend.open_tun(TUN_NAME, offloads=True)
    tun_backend.configure(TUN_NAME, [ipaddress.ip_interface(LAN_ADDR)], 1400,
                          routes=[ipaddress.ip_network(REMOTE_NET)])
    wan = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wan.bind(("127.0.0.1", GATEWAY_PORT))
    wan.setblocking(False)
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    far.bind(("127.0.0.1", PEER_PORT))
    far.settimeout(5.0)
    routes = Routes()
    routes.add(REMOTE_NET, 2)
    flows = FlowTable()
    worker = Worker(gw, routes, flows, lan_fd=tun_fd, wan_fd=wan.fileno())
    worker.start()
    keep = (gw, routes, flows, wan, tun_fd)
    return worker, peer, far, keep


def _scenario_control() -> dict[str, object]:
    import time


    worker, peer, far, _keep = _gateway_and_peer()
    from p3hw.wire.control import wrap_packet

    # Inner packets as the control channel makes them (the bodies stand in for control-key sealed messages).
    inner = [wrap_packet(f"control message {i:04d}".encode(), LOCAL_P3, PEER_P3) for i in range(CONTROL_MESSAGES)]
    for packet in inner:
        worker.send_control(2, packet)
    received = []
    try:
        while len(received) < CONTROL_MESSAGES:
            received.append(far.recv(65536))
    except TimeoutError:
        pass
    opened = peer.open([(data, "127.0.0.1", GATEWAY_PORT) for data in received], with_ip=False)
    control = [o for o in opened if o.status == "OK" and o.kind == "control"]
    deadline = time.monotonic() + 5    # the worker counts a burst once the socket has taken it
    while worker.stats().control_sent < len(received) and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = worker.stats()
    worker.stop()
    return {"queued": len(inner), "received": len(received), "opened_as_control": len(control),
            "in_order_and_intact": [o.data for o in control] == inner, "pauses": stats.pauses,
            "control_sent": stats.control_sent, "send_queue_drops": stats.send_queue_drops}


def _scenario_lan_rst() -> dict[str, object]:
    import errno
    import select
    import socket
    import time

    worker, peer, far, _keep = _gateway_and_peer()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setblocking(False)
    client.connect_ex((REMOTE_HOST, 80))
    # The SYN went into the TUN, through the worker, sealed to the far peer: read its ISN there.
    syn = None
    while syn is None:
        opened = peer.open([(far.recv(65536), "127.0.0.1", GATEWAY_PORT)], with_ip=False)[0]
        if opened.status == "OK" and opened.kind == "data" and opened.data[33] & 0x02:
            syn = opened.data
    sport = int.from_bytes(syn[20:22], "big")
    isn = int.from_bytes(syn[24:28], "big")
    rst = _ipv4_tcp(REMOTE_HOST, LAN_ADDR.split("/")[0], 80, sport, 0, (isn + 1) & 0xFFFFFFFF, 0x14)
    before = worker.stats().lan_tx_packets
    worker.send_lan(rst)
    select.select([], [client], [], 5.0)
    err = client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    # A termination of many flows: more packets than the queue holds, all written (the stack
    # drops RSTs for connections it does not have). Counted from before the first RST.
    resets = [_ipv4_tcp(REMOTE_HOST, LAN_ADDR.split("/")[0], 80, 1024 + port, 0, 1, 0x14) for port in range(MANY_RSTS)]
    for packet in resets:
        worker.send_lan(packet, wait_s=5.0)
    deadline = time.monotonic() + 5
    while worker.stats().lan_tx_packets - before < 1 + MANY_RSTS and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = worker.stats()
    worker.stop()
    return {"syn_seen_by_peer": True, "connect": errno.errorcode.get(err, str(err)), "pauses": stats.pauses,
            "written": stats.lan_tx_packets - before}


def _scenario_cookies() -> dict[str, object]:
    import time

    from p3hw.dataplane import ike_cookie
    from p3hw.protocol.handshake import InitiatorHandshake
    from p3hw.wire.ike import N_COOKIE, Identity, NoncePayload, decode_message

    worker, _peer, far, _keep = _gateway_and_peer()
    far.settimeout(2.0)
    secret = os.urandom(32)
    worker.set_ike_cookies("always", 5, secret)
    initiator = InitiatorHandshake(Identity.ip("127.0.0.1"), b"k" * 32)
    first = initiator.start(0.0)[0]
    far.sendto(bytes(4) + first, ("127.0.0.1", GATEWAY_PORT))
    answer = far.recv(65536)
    reply = decode_message(answer[4:])
    cookie = reply.notify(N_COOKIE)
    request = decode_message(first)
    nonce = request.first(NoncePayload).nonce
    expected = ike_cookie(secret, 5, nonce, "127.0.0.1", request.spi_i)
    time.sleep(0.2)
    queued_before = len(worker.receive())
    retry = initiator.receive(answer[4:], 0.1)[0]
    far.sendto(bytes(4) + retry, ("127.0.0.1", GATEWAY_PORT))
    got: list = []
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        got = worker.receive()
        time.sleep(0.01)

    # Under load: a tight limit, a burst of requests over it, then a fresh request.
    worker.set_ike_cookies("under-load", 6, os.urandom(32))
    worker.set_ike_limits(5, 5, 0, 0)
    for _ in range(40):
        far.sendto(bytes(4) + InitiatorHandshake(Identity.ip("127.0.0.1"), b"k" * 32).start(0.0)[0],
                   ("127.0.0.1", GATEWAY_PORT))
    loaded_answer = None
    try:
        while True:       # what the burst drew: cookies, once the limit was hit
            data = far.recv(65536)
            if decode_message(data[4:]).notify(N_COOKIE) is not None:
                loaded_answer = data
    except TimeoutError:
        pass
    stats = worker.stats()
    worker.stop()
    return {"first_answer_is_cookie": cookie is not None and reply.spi_i == request.spi_i,
            "queued_before_retry": queued_before,
            "retry_queued": len(got) == 1 and got[0].kind == "ike" and got[0].data == retry,
            "cookie_matches_formula": cookie is not None and cookie.notification_data == expected,
            "under_load_rate_drops": stats.ike_rate_drops,
            "under_load_answer_is_cookie": loaded_answer is not None,
            "cookies_sent": stats.ike_cookies_sent}


if __name__ == "__main__":
    scenarios = {"control": _scenario_control, "lan_rst": _scenario_lan_rst, "cookies": _scenario_cookies}
    print(json.dumps(scenarios[sys.argv[1]]()))
