"""``p3hw setup``: the installation script of spec §3.

It asks for the role, the IP version and the local address, then the
primary's address (secondary) or each remote host and the subnets behind
it (primary), the key type and the pre-shared key files, and writes a
configuration. Every answer is checked by the configuration parser itself
(p3hw.config): the answer is put into the file being built, the file is
parsed, and any error on the answer's lines is shown (P3-E120) and the
question asked again. Every question also has a flag, so automation can
run it with ``--non-interactive``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from p3hw import constants
from p3hw.config import (
    DEFAULT_KEY_TYPE,
    PRIMARY,
    ROLES,
    SECONDARY,
    ConfigError,
    ConfigErrors,
    load_config,
    parse_config,
)
from p3hw.reasons import P3Error

DEFAULT_OUTPUT = "/etc/p3hw/p3hw.conf"
#: Bytes of random key material written into a new psk file (as hex).
PSK_BYTES = 32

T = TypeVar("T")


class Rejected(Exception):
    """An answer that cannot be used; the text says why (with its reason code)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", help="primary or secondary")
    parser.add_argument("--ip", help="IP version: 4 or 6")
    parser.add_argument("--address", help="this host's address")
    parser.add_argument("--port", help=f"primary: the port secondaries connect to (default {constants.DEFAULT_PORT})")
    parser.add_argument("--remote", action="append", default=[], metavar="ADDR[,SUBNET/MASK...]",
                        help="primary: a remote host and the subnets behind it (repeat for each remote)")
    parser.add_argument("--primary", metavar="ADDR[,SUBNET/MASK...]",
                        help="secondary: the primary's address and the subnets reached through it")
    parser.add_argument("--primary-port", help=f"secondary: the primary's port (default {constants.DEFAULT_PORT})")
    parser.add_argument("--key-type", help="AES128 or AES256 (default AES128)")
    parser.add_argument("--psk-file", action="append", default=[], metavar="PATH",
                        help="pre-shared key file, one per remote in order ('none' for no file); "
                             "a missing file is created with a random key, mode 0600")
    parser.add_argument("--output", "-o", help=f"where to write the configuration (default {DEFAULT_OUTPUT})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing configuration file")
    parser.add_argument("--non-interactive", action="store_true",
                        help="never prompt: use the flags and defaults, fail on anything missing")


@dataclass
class Draft:
    """The configuration being built, as (keyword, value) lines."""

    role: str = PRIMARY
    local: list[tuple[str, str]] = field(default_factory=list)
    remotes: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)

    def render(self, extra: list[tuple[str, str]] | None = None, extra_local: bool = False
               ) -> tuple[str, set[int]]:
        """The file text with ``extra`` lines added; also the line numbers of those lines."""
        lines = ["# Written by 'p3hw setup'. Check it with 'p3hw config check'; keywords: docs/config.md.",
                 "localstart", f"role = {self.role}"]
        extra_lines: set[int] = set()
        lines += [f"{k} = {v}" for k, v in self.local]
        if extra and extra_local:
            for k, v in extra:
                lines.append(f"{k} = {v}")
                extra_lines.add(len(lines))
        lines.append("localend")
        for remote_id in sorted(self.remotes):
            lines.append("")
            lines += [f"{remote_id}/{k} = {v}" for k, v in self.remotes[remote_id]]
        if extra and not extra_local:
            lines.append("")
            for k, v in extra:
                lines.append(f"{k} = {v}")
                extra_lines.add(len(lines))
        return "\n".join(lines) + "\n", extra_lines

    def check(self, extra: list[tuple[str, str]], extra_local: bool = False) -> None:
        """Parse the draft with ``extra`` added; reject if any error falls on those lines."""
        text, extra_lines = self.render(extra, extra_local)
        try:
            parse_config(text, filename="<answer>", role=self.role, base_dir=self.base_dir)
        except ConfigErrors as errors:
            mine = [e for e in errors if e.line in extra_lines]
            if mine:
                raise Rejected("; ".join(_error_text(e) for e in mine)) from None


def _error_text(error: ConfigError) -> str:
    text = f"{error.code} {error.detail}"
    return f"{text} (hint: {error.hint})" if error.hint else text


class Asker:
    """Ask a question (or take its flag), check the answer, ask again on a bad one."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive

    def ask(self, question: str, flag_value: str | None, default: str | None,
            check: Callable[[str], T]) -> T:
        if flag_value is not None or not self.interactive:
            if flag_value is None and default is None:
                raise P3Error("SETUP_BAD_ANSWER", f"{question}: no answer given",
                              "pass its flag (see 'p3hw setup --help') or run without --non-interactive")
            value = (flag_value if flag_value is not None else default or "").strip()
            try:
                return _checked(value, check)
            except Rejected as why:
                raise P3Error("SETUP_BAD_ANSWER", f"{question}: {value!r} not accepted: {why}") from None
        while True:
            prompt = f"{question} [{default}]: " if default else f"{question}: "
            try:
                answer = input(prompt).strip()
            except EOFError:
                raise P3Error("SETUP_BAD_ANSWER", f"{question}: no answer (end of input)",
                              "answer every question, or use the flags") from None
            if not answer and default is not None:
                answer = default
            try:
                return _checked(answer, check)
            except Rejected as why:
                print(f"  P3-E120 not accepted: {why}", file=sys.stderr)


def _checked(answer: str, check: Callable[[str], T]) -> T:
    # One answer is one value on one line of the file: no line breaks or control characters in it.
    if not answer.isprintable():
        raise Rejected("the answer holds a control character")
    return check(answer)


def _word(*allowed: str) -> Callable[[str], str]:
    def check(answer: str) -> str:
        for word in allowed:
            if answer.lower() == word.lower():
                return word
        raise Rejected(f"answer one of: {', '.join(allowed)}")
    return check


def _split_subnet(text: str, ip: str) -> tuple[str, str]:
    """'10.1.0.0/255.255.0.0', '10.1.0.0/16' or a single host '10.1.0.5' (its full mask)."""
    if "/" in text:
        subnet, mask = (part.strip() for part in text.rsplit("/", 1))
        return subnet, f"/{mask}" if mask.isdigit() else mask
    return text, "255.255.255.255" if ip == "4" else "/128"


def _remote_lines(spec: list[str], ip: str) -> list[tuple[str, str]]:
    """'ADDR,SUBNET/MASK,...' as remote keyword lines (without the 'N/')."""
    lines = [("address", spec[0])]
    for index, subnet_text in enumerate(spec[1:], start=1):
        subnet, mask = _split_subnet(subnet_text, ip)
        lines += [(f"subnet{index}", subnet), (f"mask{index}", mask)]
    return lines


def _with_ids(remote_id: int, lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(f"{remote_id}/{k}", v) for k, v in lines]


def _ask_remote(asker: Asker, draft: Draft, remote_id: int, ip: str, flag: str | None, what: str) -> bool:
    """One remote host: its address, then its subnets. False when the user ends the list."""
    if flag is not None:
        spec = [part.strip() for part in flag.split(",") if part.strip()]

        def check_all(_: str) -> list[tuple[str, str]]:
            if len(spec) < 2:
                raise Rejected("give the address and at least one SUBNET/MASK, e.g. "
                               "203.0.113.10,10.1.0.0/255.255.0.0")
            lines = _remote_lines(spec, ip)
            draft.check(_with_ids(remote_id, lines))
            return lines
        label = what if draft.role == SECONDARY else f"{what} {remote_id}"
        draft.remotes[remote_id] = asker.ask(label, flag, None, check_all)
        return True

    def check_address(answer: str) -> str:
        if answer:
            draft.check(_with_ids(remote_id, [("address", answer)]))
        return answer

    label = what if draft.role == SECONDARY else f"{what} {remote_id}"
    optional = remote_id > 1 and draft.role == PRIMARY
    suffix = " (empty to finish)" if optional else ""
    address = asker.ask(f"{label} address{suffix}", None, "" if optional else None, check_address)
    if not address:
        return False
    lines: list[tuple[str, str]] = [("address", address)]
    index = 1
    while True:
        def check_subnet(answer: str, index: int = index, so_far: tuple[tuple[str, str], ...] = tuple(lines)
                         ) -> list[tuple[str, str]]:
            if not answer:
                if index == 1:
                    raise Rejected("give at least one subnet")
                return []
            subnet, mask = _split_subnet(answer, ip)
            new = [(f"subnet{index}", subnet), (f"mask{index}", mask)]
            draft.check(_with_ids(remote_id, [*so_far, *new]))
            return new
        tail = " (empty to finish)" if index > 1 else ""
        new = asker.ask(f"{label} subnet {index} as SUBNET/MASK{tail}", None,
                        "" if index > 1 else None, check_subnet)
        if not new:
            break
        lines += new
        index += 1
    draft.remotes[remote_id] = lines
    return True


def _check_psk(draft: Draft, remote_id: int) -> Callable[[str], str]:
    def check(answer: str) -> str:
        if answer.lower() == "none":
            return ""
        path = Path(answer) if Path(answer).is_absolute() else draft.base_dir / answer
        if path.exists():
            draft.check([(f"{remote_id}/psk_file", answer)])  # mode and readability, as the daemon checks them
        elif not _creatable(path.parent):
            raise Rejected(f"cannot create {path}: its directory cannot be written")
        return answer
    return check


def _creatable(directory: Path) -> bool:
    while not directory.exists():
        directory = directory.parent
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


def _check_output(force: bool) -> Callable[[str], Path]:
    def check(answer: str) -> Path:
        if not answer:
            raise Rejected("give a file path")
        path = Path(answer)
        if path.is_dir():
            raise Rejected(f"{path} is a directory")
        if path.exists() and not force:
            raise Rejected(f"{path} exists; pass --force to overwrite it")
        if not _creatable(path.resolve().parent):
            raise Rejected(f"cannot write into {path.parent}")
        return path
    return check


def _write_psk(path: Path) -> None:
    """A new random key, readable by its owner only, never overwriting a file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(PSK_BYTES) + "\n")


def _write_config(path: Path, text: str, role: str, force: bool) -> None:
    """Write atomically, and only a file that passes the parser with its psk files in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    try:
        load_config(temporary, role=role)
        if path.exists() and not force:
            raise P3Error("SETUP_WRITE_FAILED", f"{path} appeared while writing", "pass --force to overwrite it")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    asker = Asker(interactive=not args.non_interactive)
    draft = Draft()
    draft.role = asker.ask("Role (primary or secondary)", args.role, PRIMARY, _word(*ROLES))
    output = asker.ask("Write the configuration to", args.output, DEFAULT_OUTPUT, _check_output(args.force))
    draft.base_dir = output.resolve().parent

    ip = asker.ask("IP version (4 or 6)", args.ip, "4", _word("4", "6"))
    draft.local.append(("ip", ip))

    def check_address(answer: str) -> str:
        draft.check([("address", answer)], extra_local=True)
        return answer
    draft.local.append(("address", asker.ask("This host's address", args.address, None, check_address)))

    if draft.role == PRIMARY:
        def check_port(answer: str) -> str:
            draft.check([("port", answer)], extra_local=True)
            return answer
        port = asker.ask("Port secondaries connect to", args.port, str(constants.DEFAULT_PORT), check_port)
        draft.local.append(("port", port))
        remote_flags: list[str | None] = list(args.remote) or [None]
        remote_id = 1
        for flag in remote_flags:
            if not _ask_remote(asker, draft, remote_id, ip, flag, "Remote host"):
                break
            remote_id += 1
        if not args.remote and asker.interactive:
            while _ask_remote(asker, draft, remote_id, ip, None, "Remote host"):
                remote_id += 1
    else:
        _ask_remote(asker, draft, 1, ip, args.primary, "Primary")

        def check_primary_port(answer: str) -> str:
            draft.check([("1/port", answer)])
            return answer
        port = asker.ask("The primary's port", args.primary_port, str(constants.DEFAULT_PORT), check_primary_port)
        draft.remotes[1].append(("port", port))

    key_type = asker.ask("Key type (AES128 or AES256)", args.key_type, DEFAULT_KEY_TYPE, _word("AES128", "AES256"))

    to_create: list[Path] = []
    for position, remote_id in enumerate(sorted(draft.remotes)):
        draft.remotes[remote_id].append(("key_type", key_type))
        flag = args.psk_file[position] if position < len(args.psk_file) else None
        default = f"psk/remote-{remote_id}.key" if draft.role == PRIMARY else "psk/primary.key"
        psk = asker.ask(f"Pre-shared key file for remote {remote_id} ('none' for no file)", flag, default,
                        _check_psk(draft, remote_id))
        if psk:
            path = Path(psk) if Path(psk).is_absolute() else draft.base_dir / psk
            if not path.exists() and path not in to_create:
                to_create.append(path)
            draft.remotes[remote_id].append(("psk_file", psk))

    text, _ = draft.render()
    created: list[Path] = []
    try:
        for path in to_create:
            _write_psk(path)
            created.append(path)
        _write_config(output, text, draft.role, args.force)
    except OSError as exc:
        _remove(created)
        raise P3Error("SETUP_WRITE_FAILED", f"cannot write {exc.filename or output}: {exc.strerror or exc}",
                      "check the directory and its permissions") from None
    except P3Error:
        _remove(created)  # leave nothing half-made behind
        raise
    print(f"wrote {output} ({draft.role}, {len(draft.remotes)} remote host(s))")
    for path in to_create:
        mode = stat.S_IMODE(path.stat().st_mode)
        print(f"created {path} (mode {mode:04o}): copy it to the other end's psk_file")
    return 0
