"""`edgebot` command line: the global options and a dispatcher over the sides that are installed.

Each side brings its own commands in its ``cli`` module: ``bot.cli`` (serve), ``workers.cli`` (worker, config
check), ``sandbox.cli`` (sandbox, the local try-out console). A side module exposes
``add_commands(subparsers: Subparsers) -> None``; every parser it adds sets the default ``handler`` (a
:data:`Handler`), and may set ``own_options=True`` when the command parses the rest of the command line itself
(the global ``--config`` then does not apply to it).

A side is offered only when its package is installed: :func:`installed_sides` asks
:func:`importlib.util.find_spec`, which imports at most the side's empty package ``__init__``. The shipped image
(deploy/Dockerfile) has no ``sandbox/``, so there ``edgebot --help`` does not list ``sandbox`` and ``edgebot
sandbox`` is a usage error (exit 2) that says the sandbox is not part of the installation.

Importing this module loads no side at all; :func:`main` imports the side ``cli`` modules, which keep their heavy
imports (slack_bolt, docker, gunicorn, rq, the stand-ins) inside their handlers, so ``edgebot worker`` never loads
slack_bolt and ``edgebot serve`` never loads docker.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgebot.errors import EdgebotError

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

Handler = Callable[[argparse.Namespace], int]
"""What a command runs: the parsed arguments in, the exit status out. A command with ``own_options`` finds the
arguments it did not declare in ``args.rest``."""

DEFAULT_CONFIG = "/etc/edgebot/edgebot.toml"
USAGE_ERROR = 2  # argparse's status for a bad command line; also a config file that cannot be loaded


@dataclass(frozen=True)
class Side:
    """One side of edgebot that brings commands: its package and the commands its ``cli`` module adds.

    The command names are listed here as well so that a command of a side that is not installed can be named in
    the error instead of argparse's bare "invalid choice"."""

    package: str
    commands: tuple[str, ...]
    what: str

    @property
    def cli_module(self) -> str:
        return f"{self.package}.cli"


SIDES: tuple[Side, ...] = (
    Side("bot", ("serve",), "the Slack app"),
    Side("workers", ("worker", "config", "dockauth", "verify"), "the RQ workers"),
    Side("sandbox", ("sandbox",), "the local stand-ins, which ship with the source tree only"),
)


def is_installed(side: Side) -> bool:
    """True when the side's package and its ``cli`` module can be imported; imports nothing but the (empty)
    package ``__init__`` and only once the package is known to exist."""
    if importlib.util.find_spec(side.package) is None:
        return False
    return importlib.util.find_spec(side.cli_module) is not None


def installed_sides(sides: Sequence[Side] = SIDES) -> list[Side]:
    """The sides whose commands this installation offers, in :data:`SIDES` order."""
    return [side for side in sides if is_installed(side)]


def edgebot_version() -> str:
    """The installed distribution's version; from pyproject.toml next to the package when edgebot runs from a
    source tree that was never installed; ``unknown`` when neither exists."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgebot")
    except PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def build_parser(sides: Sequence[Side]) -> argparse.ArgumentParser:
    """The top-level parser: global options, and the commands of the given (installed) sides."""
    parser = argparse.ArgumentParser(prog="edgebot", description="Chat-ops releases for Open Horizon edge fleets",
                                     epilog="Exit status 2: a usage error, or a config file that cannot be loaded. "
                                            "`edgebot COMMAND --help`: a command's options and exit statuses.")
    parser.add_argument("--config", default=os.environ.get("EDGEBOT_CONFIG", DEFAULT_CONFIG),
                        help=f"config file (default: $EDGEBOT_CONFIG or {DEFAULT_CONFIG})")
    parser.add_argument("--version", action="version", version=f"edgebot {edgebot_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for side in sides:
        add_commands: Callable[[Subparsers], None] = importlib.import_module(side.cli_module).add_commands
        add_commands(subparsers)
    return parser


def _requested_command(argv: Sequence[str]) -> str | None:
    """The first word that is neither a global option nor its value: the command argparse would dispatch on."""
    probe = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    probe.add_argument("--config")
    probe.add_argument("command", nargs="?")
    try:
        known, _ = probe.parse_known_args(list(argv))
    except argparse.ArgumentError:  # e.g. --config without a value: the real parser says so
        return None
    command: str | None = known.command
    return command


def _refuse_missing_side(parser: argparse.ArgumentParser, argv: Sequence[str], offered: Sequence[Side]) -> None:
    """Exit 2 with a plain sentence when the command belongs to a side that is not installed."""
    command = _requested_command(argv)
    for side in SIDES:
        if side not in offered and command in side.commands:
            parser.error(f"'{command}' is not available in this installation: the {side.package} package "
                         f"({side.what}) is not installed")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the chosen command and return its exit status (2: usage error, or a config that
    cannot be loaded)."""
    argv = sys.argv[1:] if argv is None else argv
    sides = installed_sides()
    parser = build_parser(sides)
    _refuse_missing_side(parser, argv, sides)
    args, rest = parser.parse_known_args(argv)
    own_options = bool(getattr(args, "own_options", False))
    if rest and not own_options:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    if not own_options:  # gunicorn's worker processes and RQ's work horses read the path from here
        os.environ["EDGEBOT_CONFIG"] = os.path.abspath(args.config)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EdgebotError as exc:
        print(f"edgebot: {exc}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
