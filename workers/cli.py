"""The workers' commands: `edgebot worker` runs an RQ worker, `edgebot config check` tests a config.

Registered by the dispatcher in ``edgebot.cli`` through :func:`add_commands`. Importing this module loads neither
docker nor rq nor the rest of ``workers``: the handlers import them when they run.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgebot.cli import Subparsers

CHECKS_PASSED = 0
CHECK_FAILED = 1

CONFIG_EPILOG = """\
exit status:
  0  all checks passed
  1  at least one check failed (each failure is a FAIL line)
  2  usage error, or a config that cannot be loaded (the message says why)"""


def add_commands(subparsers: Subparsers) -> None:
    """Add `worker` (handler :func:`worker`) and `config check` (handler :func:`config_check`)."""
    worker_parser = subparsers.add_parser("worker", help="run an RQ worker on edgebot's queues")
    worker_parser.add_argument("--arch", action="append", default=[],
                               help="build images for this arch (repeatable)")
    worker_parser.add_argument("--publish", action="store_true", help="serve the source/sign/publish queue")
    worker_parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker_parser.add_argument("--name", default=None)
    worker_parser.add_argument("--log-format", choices=["text", "json"], default=None,
                               help="text lines or one JSON object per line (default: settings.log_format)")
    worker_parser.add_argument("--metrics-port", type=int, default=None,
                               help="serve /metrics and /healthz on this port (default: settings.metrics_port; 0: off)")
    worker_parser.set_defaults(handler=worker)

    config_parser = subparsers.add_parser(
        "config", help="configuration tools: `config check` resolves every reference and tests every connection",
        description="check: resolve every secret reference and test every connection,\none OK/FAIL line per item",
        epilog=CONFIG_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    config_parser.add_argument("action", choices=["check"])
    config_parser.add_argument("--role", action="append", choices=["bot", "build", "publish"], default=[],
                               help="check only what a process of this role needs (repeatable; default: every role):"
                                    " bot = Slack, access rules; build = Docker Engine, git, push credentials;"
                                    " publish = Slack, Exchange, signing, seal key, pull credentials; Redis for all")
    config_parser.set_defaults(handler=config_check)

    dockauth_parser = subparsers.add_parser(
        "dockauth", help="`dockauth refresh SERVICE`: replace the registry tokens of its deployed versions",
        description="refresh: replace the dockauths of the versions the service's policies and patterns pin (or,\n"
                    "without rollout targets, the versions edgebot published) with the current pull credential of\n"
                    "the registry each names; prints one line per dockauth, never a token. Run where the publish\n"
                    "worker runs (it needs the Exchange and pull credentials).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    dockauth_parser.add_argument("action", choices=["refresh"])
    dockauth_parser.add_argument("service", help="a service of the catalog")
    dockauth_parser.add_argument("--org", default=None, help="the Exchange org (default: the service's own)")
    dockauth_parser.set_defaults(handler=dockauth_refresh)
    add_verify_command(subparsers)


def worker(args: argparse.Namespace) -> int:
    """Run the worker until it stops (or, with ``--burst``, until the queues are empty). ``--log-format`` and
    ``--metrics-port`` become ``EDGEBOT_LOG_FORMAT`` / ``EDGEBOT_METRICS_PORT`` so RQ's work horses see them too."""
    if args.log_format:
        os.environ["EDGEBOT_LOG_FORMAT"] = args.log_format
    if args.metrics_port is not None:
        os.environ["EDGEBOT_METRICS_PORT"] = str(args.metrics_port)
    from workers.worker import run_worker

    arches = [a for value in args.arch for a in value.split(",") if a]
    run_worker(args.config, arches=arches, publish=args.publish, burst=args.burst, name=args.name)
    return 0


def config_check(args: argparse.Namespace) -> int:
    """Resolve every reference and test every connection, one line per item (see workers/config_check.py).

    Returns 0 when every check passed and 1 when at least one failed; a config that cannot be loaded raises
    :class:`~edgebot.errors.EdgebotError`, which the dispatcher turns into 2."""
    from edgebot.config import load_config
    from workers.config_check import run_checks
    from workers.vault import build_resolver

    path: str = args.config
    config = load_config(path)
    print(f"OK   config {path}: {len(config.services)} service(s), {len(config.registries)} registry alias(es)")
    failures = 0
    roles = args.role or ["bot", "build", "publish"]
    print(f"OK   role(s): {', '.join(roles)}")
    for line in run_checks(config, build_resolver(config), roles=roles):
        print(line, flush=True)
        failures += not line.ok
    print(f"{failures} problem(s)" if failures else "all checks passed")
    return CHECK_FAILED if failures else CHECKS_PASSED


def dockauth_refresh(args: argparse.Namespace) -> int:
    """``edgebot dockauth refresh SERVICE [--org ORG]`` (workers/dockauths.py). A usage problem raises
    :class:`~edgebot.errors.UsageError` (exit 2 from the dispatcher); an Exchange error prints its reason, exit 1."""
    from edgebot.config import load_config
    from workers.context import WorkerContext
    from workers.dockauths import refresh
    from workers.exchange import ExchangeError
    from workers.vault import build_resolver

    config = load_config(args.config)
    try:
        lines = refresh(WorkerContext(config, build_resolver(config)), args.service, args.org)
    except ExchangeError as exc:
        print(f"FAIL the Exchange: {exc}")
        return CHECK_FAILED
    for line in lines:
        print(line, flush=True)
    return CHECKS_PASSED

# -- `edgebot verify SERVICE VERSION [--org ORG]` (issue 15) --------------------------------------------------------

VERIFY_EPILOG = """\
exit status:
  0  every arch verifies (signature, pinned images in their registries with dockauths, service policy, dependencies)
  1  something does not verify (each problem is a line of the report), or the version is not in the source
  2  usage error, or a config that cannot be loaded (the message says why)"""


def add_verify_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="read a published version back from the Exchange and check it the way nodes will meet it",
        epilog=VERIFY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service", help="a service of the catalog")
    parser.add_argument("version")
    parser.add_argument("--org", default=None, help="the Exchange org (default: the catalog's org of the service)")
    parser.set_defaults(handler=verify)


def verify(args: argparse.Namespace) -> int:
    """Print the same report `/edge verify` posts; 0 when everything verifies, 1 otherwise."""
    from edgebot import fleet_messages
    from edgebot.config import load_config
    from edgebot.errors import EdgebotError, StepFailed
    from workers.context import WorkerContext
    from workers.exchange import ExchangeError
    from workers.vault import build_resolver
    from workers.verify_job import for_catalog

    config = load_config(args.config)
    service = config.services.get(args.service)
    if service is None:
        raise EdgebotError(f"`{args.service}` is not in edgebot's catalog: one of {', '.join(sorted(config.services))}")
    org = args.org or service.org
    if org not in service.allowed_orgs:
        raise EdgebotError(f"org `{org}` is not one the catalog allows for {service.name}: "
                           + ", ".join(service.allowed_orgs))
    ctx = WorkerContext(config, build_resolver(config))
    try:
        report = for_catalog(ctx, service.name, args.version, org)
    except (StepFailed, ExchangeError) as exc:
        print(f"FAIL {exc}")
        return CHECK_FAILED
    print(fleet_messages.verify_report(service.name, args.version, org, report.as_data()).text)
    return CHECKS_PASSED if report.ok else CHECK_FAILED
