"""The Debian package and apt as the update manager (issue 14 items 1-2, docs/install.md).

``make deb`` builds version N from the tree and version N+1 (``P3HW_VERSION``); N is installed with dpkg
into a Debian 12 root made by mmdebstrap (cached under build/deb-test/ across runs, keyed by the
package's dependencies) -- never into this machine. A primary and a secondary run from that root
(chroot) in the gateway namespaces of a two-site testbed, started and restarted by a small stand-in for
systemd (``p3test-service``). N+1 is published to a repository made by ``p3hw update init-repo``;
``p3hw update check`` lists it, ``p3hw update apply`` upgrades and restarts the daemons, and the
sessions come back on the new version. A repository whose signature is broken or missing is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import host

from p3hw.simulators.deployment import Daemon, Deployment, Options
from p3hw.simulators.netns import Site, Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

TREE = Path(__file__).resolve().parents[2]
CACHE = TREE / "build" / "deb-test"
P3HW = [str(TREE / ".venv" / "bin" / "p3hw")]

EDITED = "# edited by the operator\n"

SERVICE = """#!/bin/sh
# The test's stand-in for systemd: start | stop | try-restart p3hw-primary.service / p3hw-secondary.service.
action=$1; role=${2#p3hw-}; role=${role%.service}
pidfile=/run/p3test/$role.pid
gone() { [ ! -e /proc/$1 ] || grep -q '^State:.*Z' /proc/$1/status; }
stop() {
    [ -f $pidfile ] || return 0
    pid=$(cat $pidfile); kill -TERM $pid 2>/dev/null
    n=0; until gone $pid; do sleep 0.1; n=$((n+1)); [ $n -lt 150 ] || kill -KILL $pid; done
    rm -f $pidfile
}
start() {
    nsenter --net=/run/p3test/$role.netns setsid /usr/bin/p3hw $role -c /etc/p3hw/$role.conf \\
        --status-file /run/p3hw/$role.status.json >>/run/p3test/$role.log 2>&1 </dev/null &
    echo $! >$pidfile
}
case $action in
    start) start ;;
    stop) stop ;;
    try-restart) [ -f $pidfile ] || exit 0; stop; start ;;
esac
"""


def _sh(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _make_deb(version: str | None) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "P3HW_VERSION"}
    if version:
        env["P3HW_VERSION"] = version
    _sh(["make", "-s", "deb"], cwd=TREE, env=env)
    debs = [p for p in (TREE / "build" / "deb").glob("p3hw_*.deb")]
    assert len(debs) == 1, debs
    return debs[0]


def _deb_version(deb: Path) -> str:
    return _sh(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()


@dataclass
class Packages:
    old: Path
    new: Path
    old_version: str
    new_version: str


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    out = tmp_path_factory.mktemp("debs")
    old = shutil.copy(_make_deb(None), out)
    old_version = _deb_version(Path(old))
    new = shutil.copy(_make_deb(old_version + ".1"), out)
    return Packages(Path(old), Path(new), old_version, _deb_version(Path(new)))


def _base_root(deb: Path) -> Path:
    """A Debian 12 root with the package's dependencies (mmdebstrap), cached by their list."""
    depends = _sh(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    names = sorted({part.split("|")[0].split("(")[0].split(":")[0].strip() for part in depends.split(",")})
    names = [n for n in names if n] + ["util-linux", "procps"]
    key = hashlib.sha256(" ".join(names).encode()).hexdigest()[:16]
    tarball = CACHE / f"root-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        _sh(["mmdebstrap", "--quiet", "--format=tar", "--variant=apt", "--include=" + ",".join(names), "bookworm",
             str(tarball) + ".part"])
        os.replace(str(tarball) + ".part", tarball)
    return tarball


class ChrootDeployment(Deployment):
    """The deployment's configurations, written for daemons that run from the installed root."""

    def __init__(self, topology: Topology, root: Path, options: Options) -> None:
        super().__init__(topology, root / "etc" / "p3hw", options)
        self.root = root

    def _admin_lines(self, site: Site) -> list[str]:
        role = "primary" if site.index == 0 else "secondary"
        return [f"admin_socket = /run/p3hw/{role}.admin.sock", f"admin_store = /var/lib/p3hw/{role}.db"]

    def _write_daemon(self, site: Site, role: str, lines: list[str]) -> None:
        (self.workdir / f"{role}.conf").write_text("\n".join(lines) + "\n")
        self.daemons[site.index] = Daemon(site, role, self.workdir / f"{role}.conf",
                                          self.root / "run" / "p3hw" / f"{role}.status.json",
                                          self.root / "run" / "p3test" / f"{role}.log")

    def service(self, action: str, role: str) -> None:
        _sh(["chroot", str(self.root), "/usr/local/sbin/p3test-service", action, f"p3hw-{role}.service"])

    def versions(self) -> dict[str, object]:
        """Each daemon's own version and the one its peer sent in CONFIG."""
        found: dict[str, object] = {}
        for d in self.daemons.values():
            status = d.status() or {}
            found[d.role] = status.get("version")
            found[f"{d.role}'s peer"] = [p.get("peer_version") for p in status.get("peers", [])]
        return found


@dataclass
class Site2:
    topo: Topology
    dep: ChrootDeployment
    root: Path
    repo: Path
    packages: Packages

    def chroot(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["chroot", str(self.root), *argv], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(stale_testbeds_removed: list[str], packages: Packages,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site2]:
    if shutil.which("mmdebstrap") is None or shutil.which("reprepro") is None:
        pytest.fail("mmdebstrap and reprepro are needed (packaging/bootstrap.sh installs them)")
    root = tmp_path_factory.mktemp("gateway-root") / "root"
    root.mkdir()
    _sh(["tar", "-C", str(root), "-xf", str(_base_root(packages.old))])
    mounts: list[Path] = []
    try:
        for what, args in (("dev", ["--bind", "/dev"]), ("proc", ["-t", "proc", "proc"])):
            _sh(["mount", *args, str(root / what)])
            mounts.append(root / what)
        shutil.copy(packages.old, root / "tmp")
        _sh(["chroot", str(root), "dpkg", "-i", f"/tmp/{packages.old.name}"])
        # The operator's repository (here inside the root, reached as file:///srv/repo/public).
        repo = root / "srv" / "repo"
        _sh([*P3HW, "update", "init-repo", str(repo), "--url", "file:///srv/repo/public"])
        (root / "etc" / "apt" / "keyrings").mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / "p3hw-update.gpg", root / "etc" / "apt" / "keyrings" / "p3hw-update.gpg")
        shutil.copy(repo / "p3hw.sources", root / "etc" / "apt" / "sources.list.d" / "p3hw.sources")
        _sh([*P3HW, "update", "publish", str(repo), str(packages.old)])
        service = root / "usr" / "local" / "sbin" / "p3test-service"
        service.write_text(SERVICE)
        service.chmod(0o755)
        for folder in ("run/p3test", "run/p3hw"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        with Topology.two_site() as topo:
            dep = ChrootDeployment(topo, root, Options(heartbeat_time_s=1, heartbeat_fail_s=3))
            dep.write_configs()
            for daemon in dep.daemons.values():
                netns = root / "run" / "p3test" / f"{daemon.role}.netns"
                netns.touch()
                _sh(["mount", "--bind", f"/run/netns/{daemon.site.gw_ns}", str(netns)])
                mounts.append(netns)
            try:
                dep.service("start", "primary")
                dep.service("start", "secondary")
                dep.wait_established(30)
                yield Site2(topo, dep, root, repo, packages)
            finally:
                for role in ("secondary", "primary"):
                    subprocess.run(["chroot", str(root), "/usr/local/sbin/p3test-service", "stop",
                                    f"p3hw-{role}.service"], capture_output=True, timeout=60)
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_installed_package_runs_a_primary_and_a_secondary_of_its_version(installed: Site2) -> None:
    old = installed.packages.old_version
    assert installed.chroot("p3hw", "--version").stdout.strip() == f"p3hw {old}"
    # The admin socket belongs to the group the package made: p3ctl for its members.
    assert installed.chroot("stat", "-c", "%G %a", "/run/p3hw/primary.admin.sock").stdout.split() == ["p3hw", "660"]
    installed.dep.wait(lambda: installed.dep.versions() == {"primary": old, "secondary": old, "primary's peer": [old],
                                                            "secondary's peer": [old]},
                       10, "each daemon to show its version and its peer's")
    assert installed.topo.ping(installed.topo.b.lan_ns, host(installed.topo.a, 4), count=3).received == 3


def test_installed_package_finds_its_native_libraries_under_usr_lib_p3hw(installed: Site2) -> None:
    doctor = installed.chroot("p3hw", "doctor").stdout
    lines = {line[4:24].strip(): line for line in doctor.splitlines() if line.startswith(("ok ", "NO "))}
    assert lines["native dataplane"].startswith("ok "), doctor
    assert lines["dpdk library"].startswith("ok  dpdk library         /usr/lib/p3hw/libp3dpdk.so: ELF"), doctor
    assert "all found" in lines["dpdk library"], doctor


def test_installed_package_opens_softhsm_through_its_vendored_python_pkcs11(installed: Site2) -> None:
    # python-pkcs11 is not in Debian: the package carries it in /usr/lib/p3hw/vendor, found like the commands find it.
    probe = ("import sys; sys.path[0:0] = ['/usr/lib/p3hw/python']; sys.path.append('/usr/lib/p3hw/vendor'); "
             "import pkcs11; lib = pkcs11.lib('/usr/lib/softhsm/libsofthsm2.so'); "
             "print(pkcs11.__file__, lib.manufacturer_id)")
    done = installed.chroot("python3", "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("/usr/lib/p3hw/vendor/pkcs11/__init__.py SoftHSM"), done.stdout


def test_update_check_lists_the_new_version_from_the_signed_repository(installed: Site2) -> None:
    pk = installed.packages
    done = installed.chroot("p3hw", "update", "check")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    _sh([*P3HW, "update", "publish", str(installed.repo), str(pk.new)])
    done = installed.chroot("p3hw", "update", "check")
    assert done.returncode == 0, done.stderr
    assert f"p3hw {pk.old_version} -> {pk.new_version}" in done.stdout.splitlines()


def test_update_apply_upgrades_and_the_sessions_come_back_on_the_new_version(installed: Site2) -> None:
    pk = installed.packages
    with open(installed.root / "etc" / "p3hw" / "primary.conf.example", "a") as example:
        example.write(EDITED)
    done = installed.chroot("p3hw", "update", "apply", "--restart-command", "/usr/local/sbin/p3test-service try-restart")
    assert done.returncode == 0, done.stdout + done.stderr
    # The primary first, back with its session, then the secondary.
    restarts = [line for line in done.stdout.splitlines() if ": restarted, version" in line]
    assert restarts == [f"p3hw-primary.service: restarted, version {pk.new_version}, sessions established",
                        f"p3hw-secondary.service: restarted, version {pk.new_version}, sessions established"], done.stdout
    assert installed.chroot("p3hw", "--version").stdout.strip() == f"p3hw {pk.new_version}"
    new = pk.new_version
    installed.dep.wait(lambda: installed.dep.established() and installed.dep.versions() == {
        "primary": new, "secondary": new, "primary's peer": [new], "secondary's peer": [new]},
        60, "both daemons to run the new version with their session established")
    assert installed.topo.ping(installed.topo.b.lan_ns, host(installed.topo.a, 4), count=3).received == 3
    # The examples under /etc/p3hw are conffiles: the operator's edit survives; so does the configuration.
    conffiles = installed.chroot("dpkg-query", "-W", "-f", "${Conffiles}", "p3hw").stdout
    assert "/etc/p3hw/primary.conf.example" in conffiles
    assert (installed.root / "etc" / "p3hw" / "primary.conf.example").read_text().endswith(EDITED)
    assert (installed.root / "etc" / "p3hw" / "primary.conf").read_text().startswith("# generated")
    shown = installed.chroot("p3ctl", "--socket", "/run/p3hw/primary.admin.sock", "status")
    assert shown.returncode == 0, shown.stderr
    assert f", p3hw {new}): 1 session(s)" in shown.stdout.splitlines()[0], shown.stdout


def test_update_refuses_a_repository_whose_signature_does_not_match(installed: Site2) -> None:
    inrelease = installed.repo / "public" / "dists" / "p3hw" / "InRelease"
    saved = inrelease.read_text()
    try:
        inrelease.write_text(saved.replace("Components: main", "Components: main contrib"))
        done = installed.chroot("p3hw", "update", "check")
        assert done.returncode == 2
        assert done.stderr.startswith("p3hw: P3-E124 apt refused the repository of /etc/apt/sources.list.d/p3hw.sources")
        assert "Traceback" not in done.stderr
    finally:
        inrelease.write_text(saved)


def test_update_refuses_an_unsigned_repository(installed: Site2) -> None:
    dists = installed.repo / "public" / "dists" / "p3hw"
    saved = {name: (dists / name).read_bytes() for name in ("InRelease", "Release.gpg")}
    try:
        for name in saved:
            (dists / name).unlink()
        done = installed.chroot("p3hw", "update", "apply")
        assert done.returncode == 2
        # This gateway has seen the repository signed before: apt says "no longer signed".
        assert done.stderr.startswith("p3hw: P3-E124 apt refused the repository"), done.stderr
        assert "is no longer signed" in done.stderr, done.stderr
    finally:
        for name, data in saved.items():
            (dists / name).write_bytes(data)


def _other_repository(installed: Site2, name: str, url_path: str) -> str:
    """A sources entry for another repository at /srv/<url_path>, trusted with the gateway's usual key."""
    sources = f"/etc/apt/{name}.sources"
    (installed.root / sources.lstrip("/")).write_text(
        f"Types: deb\nURIs: file://{url_path}\nSuites: p3hw\nComponents: main\n"
        "Signed-By: /etc/apt/keyrings/p3hw-update.gpg\n")
    return sources


def test_update_refuses_a_repository_that_was_never_signed(installed: Site2) -> None:
    unsigned = installed.root / "srv" / "unsigned"
    shutil.copytree(installed.repo / "public", unsigned)
    for name in ("InRelease", "Release.gpg"):
        (unsigned / "dists" / "p3hw" / name).unlink()
    sources = _other_repository(installed, "unsigned", "/srv/unsigned")
    done = installed.chroot("p3hw", "update", "check", "--sources", sources)
    assert done.returncode == 2
    assert done.stderr.startswith(f"p3hw: P3-E124 apt refused the repository of {sources}"), done.stderr
    assert "is not signed" in done.stderr, done.stderr


def test_update_refuses_a_repository_signed_by_another_key(installed: Site2) -> None:
    other = installed.root / "srv" / "other"
    _sh([*P3HW, "update", "init-repo", str(other)])
    _sh([*P3HW, "update", "publish", str(other), str(installed.packages.new)])
    sources = _other_repository(installed, "other", "/srv/other/public")
    done = installed.chroot("p3hw", "update", "apply", "--sources", sources)
    assert done.returncode == 2
    assert done.stderr.startswith(f"p3hw: P3-E124 apt refused the repository of {sources}"), done.stderr
    assert "NO_PUBKEY" in done.stderr, done.stderr
