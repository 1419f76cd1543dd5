"""The ``p3hw`` command.

Each subcommand lives in its own module that provides ``add_arguments(parser)``
and ``run(args) -> int``; this file only wires them and turns failures into
reason-coded messages (never a traceback for bad input).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from p3hw.reasons import REASONS, P3Error

#: subcommand path -> (module, help)
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("config", "check"): ("p3hw.commands.config_check", "validate a configuration file and show its effective values"),
    ("setup",): ("p3hw.commands.setup", "write a configuration by prompts or flags (spec §3)"),
    ("reasons",): ("p3hw.commands.reasons", "list the reason codes"),
    ("doctor",): ("p3hw.commands.doctor", "tell what this machine can use, and why not"),
    ("bench",): ("p3hw.commands.bench", "run benchmarks"),
    ("demo",): ("p3hw.commands.demo", "run the two-site demo in network namespaces"),
    ("primary",): ("p3hw.commands.daemon", "run a primary gateway in the foreground"),
    ("secondary",): ("p3hw.commands.daemon", "run a secondary gateway in the foreground"),
    ("failclosed", "status"): ("p3hw.commands.failclosed", "list the routes that keep remote subnets closed"),
    ("failclosed", "clear"): ("p3hw.commands.failclosed", "remove the fail-closed routes of a configuration"),
    ("failclosed", "install"): ("p3hw.commands.failclosed", "install the fail-closed routes of a configuration without the gateway (at boot)"),
    ("update", "init-repo"): ("p3hw.commands.update", "make a signed apt repository and its key (docs/install.md)"),
    ("update", "publish"): ("p3hw.commands.update", "add .deb files to a repository made by init-repo and sign it"),
    ("update", "check"): ("p3hw.commands.update", "list what an update from the signed repository would change"),
    ("update", "apply"): ("p3hw.commands.update", "upgrade from the signed repository and restart the daemons"),
}


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked (a checkout asks git)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version of p3hw and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object, **_kwargs: object) -> None:
        import p3hw

        print(f"p3hw {p3hw.__version__}")
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p3hw", description="Protected Point to Point (P3) gateway")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # not built yet: the command is simply absent from the help
        if len(path) == 1:
            cmd = sub.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                group_parser = sub.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            cmd = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        cmd.set_defaults(_module=module, _path=path)
        module.add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(module.run(args))
    except P3Error as exc:
        print(f"p3hw: {exc.message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `p3hw reasons | head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback for users
        if os.environ.get("P3HW_DEBUG"):
            raise
        internal = REASONS["P3-E999"]
        print(f"p3hw: {internal.code} internal error: {type(exc).__name__}: {exc} "
              "(set P3HW_DEBUG=1 for a traceback and report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
