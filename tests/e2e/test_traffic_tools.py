"""The traffic tools themselves, on loopback (no namespaces): what the e2e tests rely on."""

from __future__ import annotations

import subprocess

from e2e_support import Traffic, assert_transfer_verified, next_port

from p3hw.simulators.traffic import SeqStats, main, seq_datagram


def local(argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_seq_stats_counts_duplicates_reordering_and_gaps() -> None:
    stats = SeqStats()
    for seq in (0, 1, 3, 2, 2, 5):
        stats.add(seq_datagram(seq, 64))
    stats.add(b"not ours")
    assert (stats.unique, stats.duplicates, stats.reordered, stats.foreign) == (5, 1, 1, 1)
    assert stats.max_seq == 5 and stats.missing_below_max == 1  # seq 4


def test_udp_stream_on_loopback_arrives_whole_and_in_order() -> None:
    port = next_port()
    receiver = Traffic(local, ["udp-recv", "--bind", "127.0.0.1", "--port", str(port), "--idle-exit-s", "1",
                               "--marker", "MARK"])
    sender = Traffic(local, ["udp-send", "--to", "127.0.0.1", "--port", str(port), "--rate", "2000",
                             "--count", "1000", "--marker", "MARK"], ready=None)
    sent, got = sender.result(30), receiver.result(30)
    assert sent["sent"] == 1000 and sent["errors"] == 0
    assert got["unique"] == 1000 and got["duplicates"] == 0 and got["reordered"] == 0
    assert got["marker_seen"] == 1000


def test_tcp_transfer_on_loopback_is_checksum_verified() -> None:
    port = next_port()
    sink = Traffic(local, ["tcp-sink", "--bind", "::1", "--port", str(port)])
    sender = Traffic(local, ["tcp-send", "--to", "::1", "--port", str(port), "--bytes", "3000001"], ready=None)
    assert_transfer_verified(sender.result(30), sink.result(30), 3000001)


def test_tcp_hold_reports_a_timeout_when_nothing_happens() -> None:
    port = next_port()
    server = Traffic(local, ["tcp-echo", "--bind", "127.0.0.1", "--port", str(port)])
    try:
        held = Traffic(local, ["tcp-hold", "--to", "127.0.0.1", "--port", str(port), "--timeout-s", "0.3"],
                       ready="CONNECTED")
        assert held.result(10)["outcome"] == "timeout"
    finally:
        assert server.stop()["connections"] == 1


def test_bad_arguments_give_a_reason_code_not_a_traceback(capsys: object) -> None:
    assert main(["udp-send", "--to", "127.0.0.1", "--port", "9", "--rate", "0", "--count", "1"]) == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.startswith("P3-E122") and "Traceback" not in err
