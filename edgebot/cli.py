"""`edgebot` command line: serve (the bot), worker, config check, sandbox (the local try-out console).

Imports stay inside the subcommands so `edgebot worker` never loads slack_bolt and `edgebot serve` never loads
docker.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from edgebot.errors import EdgebotError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgebot", description="Chat-ops releases for Open Horizon edge fleets")
    parser.add_argument("--config", default=os.environ.get("EDGEBOT_CONFIG", "/etc/edgebot/edgebot.toml"),
                        help="config file (default: $EDGEBOT_CONFIG or /etc/edgebot/edgebot.toml)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the Slack app (HTTP behind gunicorn, or Socket Mode)")
    serve.add_argument("--bind", default="0.0.0.0:3000")
    serve.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    serve.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    serve.add_argument("--socket-mode", action="store_true", help="connect out to Slack instead (needs app_token)")
    serve.add_argument("--log-format", choices=["text", "json"], default=None,
                       help="text lines or one JSON object per line (default: settings.log_format)")

    worker = sub.add_parser("worker", help="run an RQ worker on edgebot's queues")
    worker.add_argument("--arch", action="append", default=[], help="build images for this arch (repeatable)")
    worker.add_argument("--publish", action="store_true", help="serve the source/sign/publish queue")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.add_argument("--name", default=None)
    worker.add_argument("--log-format", choices=["text", "json"], default=None,
                        help="text lines or one JSON object per line (default: settings.log_format)")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics and /healthz on this port (default: settings.metrics_port; 0: off)")

    config = sub.add_parser("config", help="configuration tools")
    config.add_argument("action", choices=["check"])

    sub.add_parser("sandbox", add_help=False,
                   help="try edgebot locally: a terminal that plays Slack in front of a local stack "
                        "(`edgebot sandbox --help`)")

    args, rest = parser.parse_known_args(argv)
    if args.command == "sandbox":  # its own options; the sandbox writes its own config
        from sandbox.console import main as sandbox_main

        return sandbox_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    os.environ["EDGEBOT_CONFIG"] = os.path.abspath(args.config)
    # Flags become the settings' env overrides, so gunicorn's worker processes and RQ's work horses see them too.
    if getattr(args, "log_format", None):
        os.environ["EDGEBOT_LOG_FORMAT"] = args.log_format
    if getattr(args, "metrics_port", None) is not None:
        os.environ["EDGEBOT_METRICS_PORT"] = str(args.metrics_port)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            from workers.worker import run_worker

            arches = [a for value in args.arch for a in value.split(",") if a]
            run_worker(args.config, arches=arches, publish=args.publish, burst=args.burst, name=args.name)
            return 0
        if args.command == "config":
            return _config_check(args.config)
    except EdgebotError as exc:
        print(f"edgebot: {exc}", file=sys.stderr)
        return 2
    return 1


def _serve(args: argparse.Namespace) -> int:
    from edgebot.config import load_config

    config = load_config(args.config)  # a bad file (a literal secret…) is refused here, before any server starts
    from bot.app import check_slack_references

    check_slack_references(config)
    if args.socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        from bot.app import create_app
        from edgebot.logs import configure_from
        from edgebot.secrets import SecretResolver

        configure_from(config.settings)
        if config.slack.app_token is None:
            print("edgebot: --socket-mode needs slack.app_token (an xapp- token reference)", file=sys.stderr)
            return 2
        resolver = SecretResolver()
        app_token = resolver.resolve(config.slack.app_token).reveal()
        SocketModeHandler(create_app(config, resolver=resolver), app_token).start()
        return 0
    from gunicorn.app.base import BaseApplication

    from edgebot.logs import configure_from, gunicorn_logconfig

    config_path = args.config
    settings = config.settings
    configure_from(settings)

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", args.bind)
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", None)
            self.cfg.set("logconfig_dict", gunicorn_logconfig(settings.log_format, settings.log_level))
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("control_socket_disable", True)  # one shared ~/.gunicorn/gunicorn.ctl per host otherwise

        def load(self) -> Any:
            from bot.wsgi import create

            return create(config_path)

    Server().run()
    return 0


def _config_check(path: str) -> int:
    """Resolve every reference and test every connection; one line per item (see workers/config_check.py)."""
    from edgebot.config import load_config
    from workers.config_check import run_checks
    from workers.vault import build_resolver

    config = load_config(path)
    print(f"OK   config {path}: {len(config.services)} service(s), {len(config.registries)} registry alias(es)")
    failures = 0
    for line in run_checks(config, build_resolver(config)):
        print(line, flush=True)
        failures += not line.ok
    print(f"{failures} problem(s)" if failures else "all checks passed")
    return min(failures, 100)


if __name__ == "__main__":
    sys.exit(main())
