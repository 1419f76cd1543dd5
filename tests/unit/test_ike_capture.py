"""The initial exchange as the simulation harness carries it (over its links,
recognised as IKE by the receiving native dataplane) and captures it as pcap
is read by an independent dissector, tshark, as IKEv2 without a single
malformed-packet or expert-info finding.

tests/unit/test_ike_pcap.py checks a capture built beside the handshake
machines; this one checks the capture the harness writes (issue 4, item 8),
including a retransmission caused by a lost message and an IPv6 outer path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from p3hw.constants import NON_ESP_MARKER
from p3hw.protocol.handshake import IkeProposalConfig
from p3hw.simulators.harness import IKE_AUTH, DropIke, Harness, HarnessReport
from p3hw.wire.ike import DH_CURVE25519, DH_ECP_256

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


def _tshark(pcap: Path, *arguments: str) -> str:
    assert TSHARK is not None
    # P3 runs NAT-T style encapsulation on port 5653, not 4500: tell tshark (pcap.py docstring).
    result = subprocess.run([TSHARK, "-r", str(pcap), "-d", "udp.port==5653,udpencap", *arguments],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def _decryption_table(harness: Harness) -> str:
    assert harness.handshake_results is not None
    established = harness.handshake_results[1]  # the initiator's view: SK_ei / SK_er
    keys = established.ike_keys
    return (f"uat:ikev2_decryption_table:{established.spi_i.hex()},{established.spi_r.hex()},{keys.sk_ei.hex()},"
            f"{keys.sk_er.hex()},\"AES-GCM-{established.ike_key_bits} with 16 octet ICV [RFC5282]\",,,"
            f"\"NONE [RFC4306]\"")


def _assert_clean_ikev2(pcap: Path, harness: Harness, expected_exchanges: list[str], ip_layer: str = "ip") -> str:
    decryption = _decryption_table(harness)
    verbose = _tshark(pcap, "-o", decryption, "-V")
    # Every frame is IKEv2 behind the non-ESP marker, in the order the harness sent it.
    protocols = re.findall(r"\[Protocols in frame: (\S+)\]", verbose)
    assert protocols == [f"raw:{ip_layer}:udp:udpencap:isakmp"] * len(expected_exchanges)
    assert verbose.count("Internet Security Association and Key Management Protocol") == len(expected_exchanges)
    assert re.findall(r"^    Version: (\S+)$", verbose, re.MULTILINE) == ["2.0"] * len(expected_exchanges)
    assert re.findall(r"^    Exchange type: (\S+) \(\d+\)$", verbose, re.MULTILINE) == expected_exchanges
    # The SK payloads were opened with the harness's IKE SA keys (their ICV
    # verified): the IKE_AUTH content is visible, authenticated by PSK.
    auths = expected_exchanges.count("IKE_AUTH")
    assert verbose.count("Authentication Method: Shared Key Message Integrity Code (2)") == auths
    assert len(re.findall(r"Integrity Checksum Data: [0-9a-f]{32} \(16 bytes\)\[correct\]", verbose)) == auths
    assert "Malformed" not in verbose
    assert "Expert Info" not in verbose
    expert = _tshark(pcap, "-o", decryption, "-q", "-z", "expert")
    assert expert.strip() == "", expert
    return verbose


def _assert_sessions_run(harness: Harness) -> HarnessReport:
    harness.run_for(1.0)
    harness.rekey()
    harness.run_for(1.0)
    harness.quiesce()
    report = harness.report()
    assert report.rekeys_completed == 1
    assert report.data_delivered == report.data_sent > 0
    assert report.dataplane_drops == {}
    return report


def test_harness_capture_of_a_clean_exchange_is_ikev2_without_warnings(tmp_path: Path) -> None:
    harness = Harness(seed=4, handshake=True)
    assert all(datagram.payload.startswith(NON_ESP_MARKER) for datagram in harness.ike_capture)
    pcap = tmp_path / "ike.pcap"
    harness.write_ike_pcap(pcap)
    _assert_clean_ikev2(pcap, harness, ["IKE_SA_INIT", "IKE_SA_INIT", "IKE_AUTH", "IKE_AUTH"])
    # The sessions that follow run on the keys of that exchange.
    _assert_sessions_run(harness)


def test_capture_with_a_lost_ike_auth_answer_shows_the_retransmission(tmp_path: Path) -> None:
    # The responder's IKE_AUTH answer is lost on the link (the capture, taken on
    # the sender's side, still shows it); the initiator retransmits after 1 s
    # and the responder answers again from its cache (RFC 7296 §2.1).
    rule = DropIke(IKE_AUTH, response=True)
    harness = Harness(seed=5, handshake=True, drop_rules=[rule],
                      ike_proposals=IkeProposalConfig(dh_groups=(DH_ECP_256,), ike_key_bits=(128,)))
    assert rule.dropped == 1
    pcap = tmp_path / "ike-retransmit.pcap"
    harness.write_ike_pcap(pcap)
    verbose = _assert_clean_ikev2(pcap, harness, ["IKE_SA_INIT", "IKE_SA_INIT"] + ["IKE_AUTH"] * 4)
    assert verbose.count("DH Group #: 256-bit random ECP group (19)") == 2  # KEi, KEr
    assert harness.ike_capture[4].time_s - harness.ike_capture[2].time_s == pytest.approx(1.0)
    _assert_sessions_run(harness)


def test_capture_over_an_ipv6_outer_path_is_ikev2_without_warnings(tmp_path: Path) -> None:
    harness = Harness(seed=6, handshake=True, primary_outer=("2001:db8::1", 5653),
                      secondary_outer=("2001:db8:1::2", 5653),
                      ike_proposals=IkeProposalConfig(dh_groups=(DH_CURVE25519,)))
    pcap = tmp_path / "ike6.pcap"
    harness.write_ike_pcap(pcap)
    verbose = _assert_clean_ikev2(pcap, harness, ["IKE_SA_INIT", "IKE_SA_INIT", "IKE_AUTH", "IKE_AUTH"],
                                  ip_layer="ipv6")
    assert "Internet Protocol Version 6, Src: 2001:db8:1::2, Dst: 2001:db8::1" in verbose
    _assert_sessions_run(harness)
