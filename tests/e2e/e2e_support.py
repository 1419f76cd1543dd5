"""Helpers of the end-to-end tests: traffic through real daemons in network namespaces.

The tests build a testbed (``p3hw.simulators.netns``), deploy the real
``p3hw primary`` / ``p3hw secondary`` on it (``p3hw.simulators.deployment``)
and push traffic through the tunnels with ``p3hw.simulators.traffic`` run
inside the LAN namespaces. See docs/testing-e2e.md.

Every test that uses these fixtures builds namespaces: mark it
``@pytest.mark.root`` and ``@pytest.mark.netns`` (tests/conftest.py skips it
when not root, and fails the skip in CI).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from p3hw.simulators.deployment import Deployment, Options
from p3hw.simulators.netns import Site, Topology

TRAFFIC = [sys.executable, "-m", "p3hw.simulators.traffic"]
#: Every traffic program gets its own port, so a socket in TIME_WAIT or a
#: program still exiting from an earlier test never collides with the next.
_ports = itertools.count(20000)


def next_port() -> int:
    return next(_ports)


def host(site: Site, family: int) -> str:
    """The LAN host's address of ``site`` in ``family`` (4 or 6)."""
    return str(site.host4 if family == 4 else site.host6)


class Traffic:
    """One ``p3hw.simulators.traffic`` program; its stdout lines are collected as they come."""

    def __init__(self, popen: Callable[..., subprocess.Popen[str]], args: Sequence[str],
                 ready: str | None = "READY", timeout_s: float = 15.0) -> None:
        self.args = list(args)
        self.proc = popen([*TRAFFIC, *self.args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()
        if ready is not None:
            self.wait_line(ready, timeout_s)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_line(self, expected: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while expected not in self.lines:
            if self.proc.poll() is not None and not self._reader.is_alive() and expected not in self.lines:
                raise AssertionError(f"traffic {self.args[0]} exited ({self.proc.returncode}) before {expected}:"
                                     f" {self.lines} {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"traffic {self.args[0]} did not print {expected} in {timeout_s:g} s")
            time.sleep(0.02)

    def result(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait for the program to end; its report (the last stdout line, JSON)."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"traffic {self.args} did not finish in {timeout_s:g} s") from None
        self._reader.join(5)
        self._err_reader.join(5)
        if self.proc.returncode != 0 or not self.lines:
            raise AssertionError(f"traffic {self.args} failed ({self.proc.returncode}): {self.lines} {self.stderr}")
        return json.loads(self.lines[-1])

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """SIGTERM (a receiver's way to end), then its report."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.result(timeout_s)


def in_ns(topo: Topology, ns: str) -> Callable[..., subprocess.Popen[str]]:
    return lambda argv, **kwargs: topo.popen(ns, argv, **kwargs)


def start_udp_receiver(topo: Topology, site: Site, port: int, *extra: str) -> Traffic:
    return Traffic(in_ns(topo, site.lan_ns), ["udp-recv", "--port", str(port), *extra])


def start_udp_sender(topo: Topology, src: Site, dst: Site, family: int, port: int, *extra: str) -> Traffic:
    return Traffic(in_ns(topo, src.lan_ns), ["udp-send", "--to", host(dst, family), "--port", str(port), *extra],
                   ready=None)


def udp_stream(topo: Topology, src: Site, dst: Site, family: int, *, rate: int, count: int,
               size: int = 200, marker: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """A whole sequence-numbered stream, src LAN -> dst LAN: (sender report, receiver report)."""
    port = next_port()
    extra = ["--marker", marker] if marker else []
    receiver = start_udp_receiver(topo, dst, port, "--idle-exit-s", "1", "--max-s", str(count / rate + 30), *extra)
    sender = start_udp_sender(topo, src, dst, family, port, "--rate", str(rate), "--count", str(count),
                              "--size", str(size), *extra)
    sent = sender.result(count / rate + 30)
    got = receiver.result(40)
    return sent, got


def start_tcp_sink(topo: Topology, site: Site, port: int) -> Traffic:
    return Traffic(in_ns(topo, site.lan_ns), ["tcp-sink", "--port", str(port)])


def start_tcp_sender(topo: Topology, src: Site, dst: Site, family: int, port: int, nbytes: int,
                     rate_mbit: float = 0.0) -> Traffic:
    return Traffic(in_ns(topo, src.lan_ns), ["tcp-send", "--to", host(dst, family), "--port", str(port),
                                              "--bytes", str(nbytes), "--rate-mbit", str(rate_mbit)], ready=None)


def tcp_transfer(topo: Topology, src: Site, dst: Site, family: int, nbytes: int,
                 rate_mbit: float = 0.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checksummed TCP transfer, src LAN -> dst LAN: (sender report, sink report)."""
    port = next_port()
    sink = start_tcp_sink(topo, dst, port)
    sender = start_tcp_sender(topo, src, dst, family, port, nbytes, rate_mbit)
    return sender.result(120), sink.result(30)


def assert_transfer_verified(sent: dict[str, Any], sunk: dict[str, Any], nbytes: int) -> None:
    assert sent["bytes"] == nbytes
    assert sunk["outcome"] == "eof", sunk
    assert sunk["bytes"] == nbytes and sunk["sha256"] == sent["sha256"], (sent, sunk)
    assert sent["verified"] is True, sent


def peer(dep: Deployment, index: int, address: str | None = None) -> dict[str, Any]:
    """Daemon ``index``'s status entry for one peer (its only one when ``address`` is None)."""
    entry = dep.peer_status(index, address)
    assert entry is not None, f"no status for site {index} peer {address}: {dep.daemons[index].status()}"
    return entry


def network(site: Site, family: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return site.lan4 if family == 4 else site.lan6


@contextmanager
def deployed(topo: Topology, workdir: Path, options: Options, timeout_s: float = 30.0) -> Iterator[Deployment]:
    """Write the configurations, start every daemon, wait until all sessions are up; stop them after."""
    dep = Deployment(topo, workdir, options)
    dep.write_configs()
    try:
        dep.start()
        dep.wait_established(timeout_s)
        yield dep
    finally:
        dep.stop()


def wait_for(dep: Deployment, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Like ``Deployment.wait``, for when a daemon is down on purpose (that one fails on any exited daemon)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- site {i} ({d.role})\n{d.log()[-2000:]}" for i, d in dep.daemons.items())
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}\n{logs}")
        time.sleep(0.1)
