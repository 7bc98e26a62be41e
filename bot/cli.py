"""The bot's command: `edgebot serve` runs the Slack app, over HTTP behind gunicorn or in Socket Mode.

Registered by the dispatcher in ``edgebot.cli`` through :func:`add_commands`. Importing this module loads neither
slack_bolt nor gunicorn nor the rest of ``bot``: :func:`serve` imports them when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebot.cli import Subparsers
    from edgebot.config import Config


def add_commands(subparsers: Subparsers) -> None:
    """Add `serve` with its options; its handler is :func:`serve`."""
    serve_parser = subparsers.add_parser("serve", help="run the Slack app (HTTP behind gunicorn, or Socket Mode)")
    serve_parser.add_argument("--bind", default="0.0.0.0:3000")
    serve_parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    serve_parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    serve_parser.add_argument("--socket-mode", action="store_true",
                              help="connect out to Slack instead (needs app_token)")
    serve_parser.add_argument("--log-format", choices=["text", "json"], default=None,
                              help="text lines or one JSON object per line (default: settings.log_format)")
    serve_parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Refuse a bad config (a literal secret, a vault: reference for a Slack secret) before anything listens, then
    run the app until it stops. ``--log-format`` becomes ``EDGEBOT_LOG_FORMAT`` so gunicorn's worker processes see
    it too."""
    if args.log_format:
        os.environ["EDGEBOT_LOG_FORMAT"] = args.log_format
    from edgebot.config import load_config

    config = load_config(args.config)  # a bad file (a literal secret…) is refused here, before any server starts
    from bot.app import check_access, check_slack_references

    check_slack_references(config)
    check_access(config)  # nobody may publish: refused here (exit 2), not as a traceback from gunicorn's worker
    if args.socket_mode:
        return _serve_socket_mode(config)
    return _serve_http(config, args)


def _serve_socket_mode(config: Config) -> int:
    """Connect out to Slack with the app-level token; 2 when the config has none."""
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


def _serve_http(config: Config, args: argparse.Namespace) -> int:
    """Run the WSGI app (bot.wsgi) under gunicorn's gthread workers; each worker process loads the config itself."""
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
