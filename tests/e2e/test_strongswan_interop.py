"""RFC 7296 interoperability with strongSwan 5.9 (issue 15 item 5): the initial exchange both ways, then DPD.

One charon (site 1, its own mount namespace and /run) is a standard IKEv2
peer on both sides of p3hw:

* connection ``to-primary``: charon initiates to the p3hw **primary** (site 0)
  as if it were a secondary — X25519, and a TSi wider (10.0.0.0/8) than the
  subnet the primary's configuration gives it, which the primary narrows;
* connection ``from-secondary``: charon answers the p3hw **secondary**
  (site 2) as if it were its primary — ECP-256 only, so the secondary's
  X25519 first guess gets INVALID_KE_PAYLOAD.

IKE runs on UDP 5653 with the non-ESP marker on both sides (charon's NAT-T
port is 5653). ESP proposals say ``noesn``: charon's user-space
kernel-libipsec (this kernel has no XFRM) refuses ESN SAs, so p3hw offers
ESN and no ESN and takes what the peer can do. P3 data never flows to
charon (P3 packets are not RFC 4303 ESP); the test is about IKE.

Then charon's dead-peer detection runs every 5 s for three minutes. The
IKE SA with the primary must be the same one at the end, and charon must
never have given up on p3hw. Toward the secondary, P3 liveness (not IKE)
ends the P3 session after heartbeat_fail (charon cannot answer P3
heartbeats), and the secondary starts over with a new IKE SA, deleting the
old one (RFC 7296 §1.4.1) — never by charon's DPD.

The three minutes of DPD run beside the rest of the suite: the setup test is
moved to the front of the run and the DPD check to its end (tests/conftest.py),
and the check waits out whatever is left of the three minutes. Run alone, the
check sets the pair up itself and waits the whole three minutes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from p3hw.simulators.deployment import Daemon
from p3hw.simulators.netns import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

CHARON = Path("/usr/lib/ipsec/charon")
PLUGINS = Path("/usr/lib/ipsec/plugins")
#: How long charon's DPD runs against p3hw (issue 15: three minutes), and its interval.
DPD_RUN_S = 180
DPD_DELAY_S = 5
#: Wait bounds, not timing assertions.
UP_WAIT_S = 30.0

STRONGSWAN_CONF = """\
charon {{
    load_modular = no
    load = random nonce openssl aes sha1 sha2 hmac gcm kdf kernel-libipsec kernel-netlink socket-default vici
    # IKE on p3hw's port 5653, with the non-ESP marker: charon's NAT-T port.
    port = 500
    port_nat_t = 5653
    install_routes = no
    install_virtual_ip = no
    plugins {{
        vici {{
            socket = unix://{rundir}/charon.vici
        }}
    }}
    filelog {{
        test {{
            path = {rundir}/charon.log
            default = 1
            ike = 2
            time_format = %T
            flush_line = yes
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
"""

SWANCTL_CONF = """\
connections {{
    to-primary {{
        version = 2
        local_addrs = {me}
        remote_addrs = {primary}
        local_port = 5653
        remote_port = 5653
        encap = yes
        proposals = aes256gcm16-prfsha256-x25519
        dpd_delay = {dpd}s
        local {{
            auth = psk
            id = {me}
        }}
        remote {{
            auth = psk
            id = {primary}
        }}
        children {{
            p3 {{
                local_ts = 10.0.0.0/8
                # Not 0.0.0.0/0: kernel-libipsec routes the remote selectors into its TUN device,
                # which would swallow charon's IKE messages to the p3hw secondary.
                remote_ts = {primary_lan}
                esp_proposals = aes256gcm16-noesn
                mode = tunnel
            }}
        }}
    }}
    from-secondary {{
        version = 2
        local_addrs = {me}
        remote_addrs = {secondary}
        local_port = 5653
        remote_port = 5653
        encap = yes
        proposals = aes256gcm16-prfsha256-ecp256
        dpd_delay = {dpd}s
        local {{
            auth = psk
            id = {me}
        }}
        remote {{
            auth = psk
            id = {secondary}
        }}
        children {{
            p3 {{
                local_ts = {my_lan}
                remote_ts = {secondary_lan}
                esp_proposals = aes256gcm16-noesn
                mode = tunnel
            }}
        }}
    }}
}}
secrets {{
    ike-primary {{
        id-1 = {me}
        id-2 = {primary}
        secret = "{psk_primary}"
    }}
    ike-secondary {{
        id-1 = {me}
        id-2 = {secondary}
        secret = "{psk_secondary}"
    }}
}}
"""


@dataclass
class Interop:
    topo: Topology
    workdir: Path
    rundir: Path
    primary: Daemon
    secondary: Daemon
    #: Set by the setup test: charon's IKE SA with the primary, when DPD started, charon's log then.
    to_primary: dict[str, str] | None = None
    dpd_started_at: float = 0.0
    log_before: int = 0

    def swanctl(self, *args: str) -> str:
        # vici is a unix socket in charon's private /run, a real directory here: reachable from anywhere.
        done = subprocess.run(["swanctl", *args, "--uri", f"unix://{self.rundir}/charon.vici"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"swanctl {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def ike_sas(self, connection: str) -> list[dict[str, str]]:
        """charon's IKE SAs of *connection*: state, SPIs and the child's selectors, from --list-sas."""
        sas = []
        for block in re.split(r"(?m)^(?=\S)", self.swanctl("--list-sas", "--ike", connection)):
            header = re.match(rf"{connection}: #(\d+), (\w+), IKEv2, (\w+)_i\*? (\w+)_r", block)
            if header is None:
                continue
            local_ts = re.search(r"(?m)^\s+local\s+([0-9a-f:.]+/\d+)", block)
            sas.append({"unique": header.group(1), "state": header.group(2), "spis": header.group(3) + header.group(4),
                        "child": "INSTALLED" if "INSTALLED" in block else "", "text": block,
                        "local_ts": local_ts.group(1) if local_ts else ""})
        return sas

    def log(self) -> str:
        return (self.rundir / "charon.log").read_text(errors="replace")


def _p3hw_config(topo: Topology, workdir: Path, index: int, role: str, remote: Any, psk: str,
                 extra: list[str]) -> Daemon:
    site, lan = topo.sites[index], remote.lan4
    psk_path = workdir / f"site{index}.psk"
    psk_path.write_text(psk + "\n")
    os.chmod(psk_path, 0o600)
    mask = str(ipaddress.IPv4Network(lan).netmask)
    lines = ["localstart", f"role = {role}", "ip = 4", f"address = {site.gw_wan4}", "transport = udp",
             "interface = p3-0", f"admin_socket = {workdir / f'site{index}.admin.sock'}",
             f"admin_store = {workdir / f'site{index}-admin.db'}", *extra, "localend",
             "1/ip = 4", f"1/address = {remote.gw_wan4}", "1/key_type = AES256", "1/cipher = gcm",
             f"1/psk_file = {psk_path.name}", f"1/subnet1 = {lan.network_address}", f"1/mask1 = {mask}"]
    config = workdir / f"site{index}-{role}.conf"
    config.write_text("\n".join(lines) + "\n")
    return Daemon(site, role, config, workdir / f"site{index}.status.json", workdir / f"site{index}.log")


def _start(topo: Topology, daemon: Daemon) -> None:
    log = open(daemon.log_path, "ab")
    daemon.proc = topo.popen(daemon.site.gw_ns, [sys.executable, "-m", "p3hw.cli", daemon.role, "-c",
                                                 str(daemon.config_path), "--status-file", str(daemon.status_path)],
                             stdout=log, stderr=subprocess.STDOUT)
    log.close()


def _wait(predicate: Any, timeout_s: float, what: str, *logs: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}\n" +
                               "\n".join(str(log())[-3000:] for log in logs))
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def interop(stale_testbeds_removed: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    missing = [str(p) for p in (CHARON, PLUGINS / "libstrongswan-kernel-libipsec.so",
                                PLUGINS / "libstrongswan-gcm.so") if not p.exists()]
    if missing or shutil.which("swanctl") is None:
        pytest.fail(f"strongSwan is not installed ({missing or 'swanctl'}): run packaging/bootstrap.sh")
    workdir = tmp_path_factory.mktemp("strongswan")
    with Topology.star(2) as topo:
        primary_site, swan_site, secondary_site = topo.sites
        psk_primary, psk_secondary = secrets.token_hex(32), secrets.token_hex(32)
        # The primary knows charon as a secondary with one /24; heartbeats long enough that the
        # P3 session is not what the test watches.
        primary = _p3hw_config(topo, workdir, 0, "primary", swan_site, psk_primary,
                               ["heartbeat_time = 600", "heartbeat_fail = 600"])
        secondary = _p3hw_config(topo, workdir, 2, "secondary", swan_site, psk_secondary, [])
        rundir = workdir / "run-swan"
        rundir.mkdir()
        conf = workdir / "strongswan.conf"
        conf.write_text(STRONGSWAN_CONF.format(rundir=rundir))
        swanctl_conf = workdir / "swanctl.conf"
        swanctl_conf.write_text(SWANCTL_CONF.format(
            me=swan_site.gw_wan4, primary=primary_site.gw_wan4, secondary=secondary_site.gw_wan4,
            my_lan=swan_site.lan4, secondary_lan=secondary_site.lan4, primary_lan=primary_site.lan4, dpd=DPD_DELAY_S,
            psk_primary=psk_primary, psk_secondary=psk_secondary))
        os.chmod(swanctl_conf, 0o600)
        # charon writes /run/charon.pid whatever its configuration says: a private /run.
        charon_out = open(workdir / "charon.out", "wb")
        charon = topo.popen(swan_site.gw_ns, ["unshare", "-m", "--propagation", "private", "sh", "-c",
                                              f'mount --bind "{rundir}" /run && exec {CHARON}'],
                            stdout=charon_out, stderr=subprocess.STDOUT, env=dict(os.environ, STRONGSWAN_CONF=str(conf)))
        charon_out.close()
        state = Interop(topo, workdir, rundir, primary, secondary)
        try:
            _wait(lambda: (rundir / "charon.vici").exists(), UP_WAIT_S, "charon's vici socket",
                  lambda: (workdir / "charon.out").read_text(errors="replace"))
            state.swanctl("--load-all", "--file", str(swanctl_conf))
            _start(topo, primary)
            _start(topo, secondary)
            yield state
        finally:
            _stop(secondary.proc)
            _stop(primary.proc)
            _stop(charon)


def _status(daemon: Daemon) -> dict[str, Any]:
    status = daemon.status()
    assert status is not None, daemon.log()[-2000:]
    return status


def _set_up_both_ways(interop: Interop) -> None:
    # charon -> p3hw primary (X25519, TSi narrowed by the primary).
    _wait(lambda: "p3hw primary up" in interop.primary.log(), UP_WAIT_S, "the primary to start", interop.primary.log)
    started = interop.swanctl("--initiate", "--ike", "to-primary", "--child", "p3", "--timeout", "20")
    assert "initiate completed successfully" in started, started
    (to_primary,) = interop.ike_sas("to-primary")
    assert to_primary["state"] == "ESTABLISHED" and to_primary["child"] == "INSTALLED", to_primary["text"]
    # (g): the primary narrowed charon's 10.0.0.0/8 to the subnet configured for it.
    assert to_primary["local_ts"] == str(interop.topo.sites[1].lan4), to_primary["text"]
    _wait(lambda: any(p["sessions_started"] >= 1 for p in (interop.primary.status() or {"peers": []})["peers"]),
          UP_WAIT_S, "the primary's session with charon", interop.primary.log)
    # p3hw secondary -> charon (ECP-256 after INVALID_KE_PAYLOAD).
    _wait(lambda: any(sa["state"] == "ESTABLISHED" and sa["child"] for sa in interop.ike_sas("from-secondary")),
          UP_WAIT_S, "the secondary's IKE SA at charon", interop.secondary.log, interop.log)
    _wait(lambda: any(p["sessions_started"] >= 1 for p in (interop.secondary.status() or {"peers": []})["peers"]),
          UP_WAIT_S, "the secondary's session with charon", interop.secondary.log)
    interop.to_primary = to_primary
    interop.log_before = len(interop.log())
    interop.dpd_started_at = time.monotonic()


def test_strongswan_and_p3hw_set_up_ike_sas_both_ways(interop: Interop) -> None:
    _set_up_both_ways(interop)
    assert interop.to_primary is not None


def test_charon_dpd_for_three_minutes_keeps_the_ike_sas(interop: Interop) -> None:
    if interop.to_primary is None:     # run alone, or the setup test was not selected
        _set_up_both_ways(interop)
    to_primary = interop.to_primary
    assert to_primary is not None
    # Whatever is left of the three minutes of charon's dead-peer detection.
    while time.monotonic() - interop.dpd_started_at < DPD_RUN_S:
        time.sleep(5)
        assert [sa["spis"] for sa in interop.ike_sas("to-primary")] == [to_primary["spis"]], interop.log()[-3000:]
    assert interop.primary.proc is not None and interop.primary.proc.poll() is None, interop.primary.log()[-3000:]
    assert interop.secondary.proc is not None and interop.secondary.proc.poll() is None, interop.secondary.log()[-3000:]
    ran_s = time.monotonic() - interop.dpd_started_at

    log = interop.log()[interop.log_before:]
    # The IKE SA with the primary is the one set up at the start, and still up.
    (still,) = interop.ike_sas("to-primary")
    assert still["spis"] == to_primary["spis"] and still["state"] == "ESTABLISHED", still["text"]
    # charon's liveness checks went out and came back, and it never gave p3hw up.
    assert "giving up after" not in log and "retransmit" not in log, log[-4000:]
    dpd_rounds = DPD_RUN_S // DPD_DELAY_S // 2
    assert len(re.findall(r"sending DPD request", log)) >= dpd_rounds, log[-4000:]
    answered_primary = _status(interop.primary)["ike"]["informational_answered"]
    answered_secondary = _status(interop.secondary)["ike"]["informational_answered"]
    assert answered_primary >= dpd_rounds
    assert answered_secondary >= 1
    # Any IKE SA charon ended in the meantime, p3hw deleted (a secondary starting over), not DPD.
    assert log.count("deleting IKE_SA") == log.count("received DELETE for IKE_SA"), log[-4000:]
    # Toward the secondary an IKE SA is up at the end (a new one if P3 liveness made it start over).
    assert any(sa["state"] == "ESTABLISHED" for sa in interop.ike_sas("from-secondary")), log[-4000:]
    print(f"DPD ran {ran_s:.0f} s; answered: primary {answered_primary}, secondary {answered_secondary}; "
          f"from-secondary SAs: {[sa['unique'] for sa in interop.ike_sas('from-secondary')]}")
