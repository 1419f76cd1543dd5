"""``p3hw update``: apt from a signed repository as the one update manager (spec §5.3, docs/install.md).

* ``init-repo DIR`` makes a reprepro repository and its own GPG signing key in DIR (operator side).
* ``publish DIR DEB...`` adds packages (p3hw, and the Debian packages of DPDK, SoftHSM, OpenSSL, the
  kernel, ... the operator has vetted) and signs the repository again.
* ``check`` / ``apply`` run on a gateway: apt reads only the p3hw sources entry (``signed-by`` the
  repository's key), with index files of its own under /var/lib/p3hw/apt, so nothing else in
  /etc/apt/sources.list* takes part. A repository that is unsigned, signed by another key or whose files
  do not match their signed checksums is refused with P3-E124. ``apply`` upgrades, then restarts the
  daemons one at a time (primary first, waiting until its sessions are back, then the secondary):
  secondaries reconnect by the session recovery path (§2.1.7).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from p3hw.reasons import P3Error

SOURCES = "/etc/apt/sources.list.d/p3hw.sources"
KEYRING = "/etc/apt/keyrings/p3hw-update.gpg"
LISTS = "/var/lib/p3hw/apt/lists"
#: An empty directory in place of /etc/apt/sources.list.d: only the p3hw entry is read.
NO_PARTS = "/var/lib/p3hw/apt/sources.list.d"
SUITE = "p3hw"
#: The daemons' systemd units in the order ``apply`` restarts them, and the status file each writes
#: (their ExecStart, packaging/p3hw-*.service).
UNITS = (("p3hw-primary.service", "primary.status.json"), ("p3hw-secondary.service", "secondary.status.json"))
#: What apt says about a repository it does not trust (apt 2.6, bookworm).
_UNTRUSTED = re.compile(r"is not signed|is no longer signed|NO_PUBKEY|BADSIG|signatures were invalid|signatures couldn't be verified|"
                        r"Hash Sum mismatch|File has unexpected size|Clearsigned file isn't valid|"
                        r"not signed by a key|Signed-By|insecure", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.prog.split()[-1]
    if action == "init-repo":
        parser.add_argument("repo", metavar="DIR", help="directory of the new repository (made if missing)")
        parser.add_argument("--name", default="p3hw update repository",
                            help="the signing key's user id (default: %(default)s)")
        parser.add_argument("--url", help="where gateways will reach DIR/public, the part to serve (default: "
                            "file://DIR/public)")
    elif action == "publish":
        parser.add_argument("repo", metavar="DIR", help="a repository made by 'p3hw update init-repo'")
        parser.add_argument("debs", nargs="+", metavar="DEB", help=".deb files to add")
    else:
        parser.add_argument("--sources", default=SOURCES, help="the apt sources entry of the repository "
                            "(default: %(default)s)")
        if action == "apply":
            parser.add_argument("--restart-command", default="systemctl try-restart", metavar="CMD",
                                help="run as 'CMD UNIT' for each daemon after the upgrade (default: %(default)s)")
            parser.add_argument("--status-dir", default="/run/p3hw",
                                help="where the daemons write their status files (default: %(default)s)")
            parser.add_argument("--wait-s", type=float, default=90.0,
                                help="how long to wait for a restarted daemon's sessions (default: %(default)s)")


# -- operator side: the repository

def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise P3Error("UPDATE_FAILED", f"'{name}' is not installed", f"apt-get install {name}")
    return path


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-5:]
        raise P3Error("UPDATE_FAILED", f"{what} failed ({argv[0]} exit {done.returncode}): {' | '.join(tail)}")
    return done.stdout


def _gpg_env(repo: Path) -> dict[str, str]:
    return {**os.environ, "GNUPGHOME": str(repo / "gnupg")}


def init_repo(repo: Path, name: str, url: str | None) -> None:
    gpg, reprepro = _tool("gpg"), _tool("reprepro")
    if (repo / "conf" / "distributions").exists():
        raise P3Error("UPDATE_FAILED", f"{repo} already holds a repository (conf/distributions)")
    (repo / "conf").mkdir(parents=True, exist_ok=True)
    home = repo / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    env = _gpg_env(repo)
    _run([gpg, "--batch", "--quiet", "--passphrase", "", "--quick-generate-key", name, "ed25519", "sign", "never"],
         "making the signing key", env)
    listing = _run([gpg, "--batch", "--with-colons", "--list-secret-keys"], "reading the signing key", env)
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    (repo / "conf" / "distributions").write_text(
        f"Origin: p3hw\nLabel: p3hw\nCodename: {SUITE}\nSuite: {SUITE}\nArchitectures: amd64\n"
        f"Components: main\nDescription: p3hw and the platform packages for its gateways\nSignWith: {fingerprint}\n")
    # What gateways read (dists/, pool/) is in DIR/public; the signing key in DIR/gnupg is never served.
    (repo / "conf" / "options").write_text(f"basedir {repo.resolve()}\noutdir {repo.resolve() / 'public'}\n")
    keyring = repo / "p3hw-update.gpg"
    keyring.write_bytes(subprocess.run([gpg, "--batch", "--export", fingerprint], capture_output=True, env=env,
                                       check=True).stdout)
    _run([reprepro, "-b", str(repo), "export", SUITE], "signing the empty repository", env)
    entry = _sources_entry(url or f"file://{repo.resolve() / 'public'}")
    (repo / "p3hw.sources").write_text(entry)
    print(f"repository {repo} signed by {fingerprint}")
    print(f"on each gateway: {keyring} -> {KEYRING} and {repo / 'p3hw.sources'} -> {SOURCES}:")
    print(entry, end="")


def _sources_entry(url: str) -> str:
    return f"Types: deb\nURIs: {url}\nSuites: {SUITE}\nComponents: main\nSigned-By: {KEYRING}\n"


def publish(repo: Path, debs: list[str]) -> None:
    reprepro = _tool("reprepro")
    if not (repo / "conf" / "distributions").exists():
        raise P3Error("UPDATE_FAILED", f"{repo} is not a repository made by 'p3hw update init-repo'")
    for deb in debs:
        if not os.path.isfile(deb):
            raise P3Error("UPDATE_FAILED", f"{deb}: no such package file")
        _run([reprepro, "-b", str(repo), "includedeb", SUITE, deb], f"adding {deb}", _gpg_env(repo))
        print(f"published {os.path.basename(deb)}")


# -- gateway side: apt

def _apt_options(sources: str) -> list[str]:
    return ["-o", f"Dir::Etc::SourceList={sources}", "-o", f"Dir::Etc::SourceParts={NO_PARTS}",
            "-o", f"Dir::State::Lists={LISTS}", "-o", "APT::Get::List-Cleanup=true",
            "-o", "Acquire::AllowInsecureRepositories=false", "-o", "Acquire::AllowDowngradeToInsecureRepositories=false"]


def refresh(sources: str) -> None:
    """apt-get update of the p3hw repository only; P3-E124 when apt does not trust it."""
    if not os.path.isfile(sources):
        raise P3Error("UPDATE_FAILED", f"{sources}: no apt sources entry for the update repository",
                      "copy p3hw.sources from the repository made by 'p3hw update init-repo'")
    os.makedirs(os.path.join(LISTS, "partial"), exist_ok=True)
    os.makedirs(NO_PARTS, exist_ok=True)
    done = subprocess.run(["apt-get", *_apt_options(sources), "-q", "update"], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})
    problems = untrusted(done.stdout + done.stderr)
    if problems:
        raise P3Error("UPDATE_REPO_UNTRUSTED", f"apt refused the repository of {sources}: {' | '.join(problems[:3])}",
                      "publish again with 'p3hw update publish' and check the Signed-By key")
    if done.returncode != 0:
        tail = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("E:", "Err:"))][-3:]
        raise P3Error("UPDATE_FAILED", f"apt-get update of {sources} failed: {' | '.join(tail) or done.returncode}")


def untrusted(apt_output: str) -> list[str]:
    """apt's errors and warnings that say it does not trust a repository."""
    return [line.strip() for line in apt_output.splitlines()
            if line.startswith(("E:", "W:", "Err:")) and _UNTRUSTED.search(line)]


@dataclass(frozen=True)
class Change:
    package: str
    installed: str | None     # None: a new package
    candidate: str | None     # None: removed


def parse_simulation(apt_output: str) -> list[Change]:
    """The changes in ``apt-get -s dist-upgrade`` output (its Inst and Remv lines)."""
    changes = []
    for line in apt_output.splitlines():
        if match := re.match(r"Inst (\S+) (?:\[(\S+)\] )?\((\S+)", line):
            changes.append(Change(match.group(1), match.group(2), match.group(3)))
        elif match := re.match(r"Remv (\S+) \[(\S+)\]", line):
            changes.append(Change(match.group(1), match.group(2), None))
    return changes


def planned(sources: str) -> list[Change]:
    """What a dist-upgrade from the repository would change (apt-get -s), after a refresh."""
    return parse_simulation(_run(["apt-get", *_apt_options(sources), "-s", "-q", "dist-upgrade"],
                                 "apt-get -s dist-upgrade", {**os.environ, "LC_ALL": "C"}))


def _show(changes: list[Change]) -> None:
    if not changes:
        print("up to date: nothing to upgrade from the repository")
    for c in changes:
        print(f"{c.package} {c.installed or '(new)'} -> {c.candidate or '(removed)'}")


def _running_version(status_path: Path) -> tuple[str | None, bool, float] | None:
    try:
        status = json.loads(status_path.read_text())
        mtime = status_path.stat().st_mtime
    except (OSError, ValueError):
        return None
    peers = status.get("peers") or []
    up = bool(peers) and all(p.get("state") == "established" for p in peers)
    return status.get("version"), up, mtime


def _restart(unit: str, status_path: Path, command: str, wait_s: float) -> None:
    before = _running_version(status_path)
    if before is None:
        print(f"{unit}: not running here (no {status_path}), not restarted")
        return
    started = time.time()
    _run([*command.split(), unit], f"restarting {unit}")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        now = _running_version(status_path)
        if now is not None and now[2] >= started and now[1]:
            print(f"{unit}: restarted, version {now[0]}, sessions established")
            return
        time.sleep(0.5)
    raise P3Error("UPDATE_FAILED", f"{unit} was restarted but its sessions were not back within {wait_s:g} s "
                  f"(status {status_path})", "see the daemon's log; the packages are upgraded")


def apply(args: argparse.Namespace) -> None:
    refresh(args.sources)
    changes = planned(args.sources)
    _show(changes)
    if not changes:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    # Conffiles under /etc/p3hw stay as the operator left them (--force-confold).
    _run(["apt-get", *_apt_options(args.sources), "-y", "-q", "-o", "Dpkg::Options::=--force-confdef",
          "-o", "Dpkg::Options::=--force-confold", "dist-upgrade"], "the upgrade (apt-get dist-upgrade)", env)
    print(f"upgraded {len(changes)} package(s)")
    kernels = [c.package for c in changes if c.package.startswith("linux-image")]
    if kernels:
        print(f"a new kernel is installed ({', '.join(kernels)}): the gateway runs it after a reboot")
    for unit, status_name in UNITS:
        _restart(unit, Path(args.status_dir) / status_name, args.restart_command, args.wait_s)


def run(args: argparse.Namespace) -> int:
    action = args._path[1]
    if action == "init-repo":
        init_repo(Path(args.repo), args.name, args.url)
    elif action == "publish":
        publish(Path(args.repo), args.debs)
    elif action == "check":
        refresh(args.sources)
        _show(planned(args.sources))
    else:
        if os.geteuid() != 0:
            raise P3Error("NEED_ROOT", "'p3hw update apply' installs packages")
        apply(args)
    return 0
