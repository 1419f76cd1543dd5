"""The flow table a daemon saves is what its next run resets (docs/flows.md "After a restart")."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from p3hw.dataplane import FlowTable
from p3hw.runtime.flowstate import FlowState, state_path


def _tcp(src_port: int, flags: int, seq: int, ack: int) -> bytes:
    """An IPv4 TCP segment 10.1.0.2:src_port -> 10.3.0.9:80 (checksums are not checked by the tracker)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0x4000, 64, 6, 0, bytes([10, 1, 0, 2]), bytes([10, 3, 0, 9]))
    return ip + struct.pack("!HHIIBBHHH", src_port, 80, seq, ack, 0x50, flags, 65535, 0, 0)


def _established(table: FlowTable, peer: int, src_port: int) -> None:
    table.observe(peer, _tcp(src_port, 0x02, 100, 0), True, 1000)
    table.observe(peer, _tcp(src_port, 0x10, 101, 501), True, 1000)


def test_flow_file_lives_beside_the_admin_socket() -> None:
    assert state_path("/run/p3hw/admin.sock") == Path("/run/p3hw/admin.flows")


def test_saved_flows_of_every_table_are_reset_once_by_the_next_run(tmp_path: Path) -> None:
    tables = [FlowTable(64), FlowTable(64)]
    _established(tables[0], 2, 40000)
    _established(tables[1], 3, 40001)
    log = logging.getLogger("test")
    FlowState(tmp_path / "admin.flows", log).save(tables, 1.0)
    assert (tmp_path / "admin.flows").stat().st_mode & 0o777 == 0o600

    packets, done, flows = FlowState(tmp_path / "admin.flows", log).restore(5.0)
    assert flows == 2 and done.tcp_flows_reset == 2 and len(packets) == 2
    # Each RST goes to the LAN host (10.1.0.2) from the remote end, SEQ = the host's last ACK (501).
    for packet in packets:
        assert packet[12:16] == bytes([10, 3, 0, 9]) and packet[16:20] == bytes([10, 1, 0, 2])
        assert packet[33] & 0x04 and struct.unpack("!I", packet[24:28])[0] == 501
    # Written once: the file is gone, a second start resets nothing.
    assert not (tmp_path / "admin.flows").exists()
    assert FlowState(tmp_path / "admin.flows", log).restore(6.0)[2] == 0


def test_a_file_that_is_not_a_flow_table_is_ignored_with_a_reason_code(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "admin.flows"
    path.write_bytes(b"P3FS" + bytes(40))
    with caplog.at_level(logging.WARNING):
        packets, _, flows = FlowState(path, logging.getLogger("test")).restore(1.0)
    assert (packets, flows) == ([], 0)
    assert "P3-E901" in caplog.text and "not a flow table" in caplog.text


def test_a_save_that_fails_is_logged_once_and_the_next_good_save_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    state = FlowState(blocker / "admin.flows", logging.getLogger("test"))
    table = FlowTable(64)
    _established(table, 2, 40000)
    with caplog.at_level(logging.INFO):
        state.save([table], 1.0)
        state.save([table], 7.0)
        assert caplog.text.count("P3-E902 cannot write the flow table") == 1
        blocker.unlink()
        state.save([table], 13.0)
    assert "written again after 2 failed attempt(s)" in caplog.text and (blocker / "admin.flows").exists()
