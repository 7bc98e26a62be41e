"""The sandbox's command: `edgebot sandbox`, a terminal that plays Slack in front of a local stack.

Registered by the dispatcher in ``edgebot.cli`` through :func:`add_commands`, and only where the ``sandbox``
package is installed (a source checkout; the image built by deploy/Dockerfile has none). The console parses its own
options (``edgebot sandbox --help``) and writes its own config, so the global ``--config`` does not apply. Importing
this module loads nothing of the stack: :func:`run_sandbox` imports :mod:`sandbox.console` when it runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgebot.cli import Subparsers


def add_commands(subparsers: Subparsers) -> None:
    """Add `sandbox`, which hands the rest of the command line to the console (handler :func:`run_sandbox`)."""
    sandbox_parser = subparsers.add_parser(
        "sandbox", add_help=False,
        help="try edgebot locally: a terminal that plays Slack in front of a local stack (`edgebot sandbox --help`)")
    sandbox_parser.set_defaults(handler=run_sandbox, own_options=True)


def run_sandbox(args: argparse.Namespace) -> int:
    """Run the console with the arguments that follow `sandbox` (``args.rest``) until the user quits."""
    from sandbox.console import main as console_main

    rest: list[str] = args.rest
    return console_main(rest)
