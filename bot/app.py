"""The Bolt app: built from the config (:func:`create_app`), its listeners (``bot.listeners``) registered in one
place (:func:`register`).
"""

from __future__ import annotations

import logging

import redis
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import listeners
from bot.access import AccessCheck
from bot.approve import KINDS, ApprovalDesk
from bot.intake import ChannelCheck
from bot.listeners import BotContext
from edgebot import messages, redis_conn
from edgebot.config import Config, access_problem
from edgebot.errors import ConfigError
from edgebot.ratelimit import SlackRateLimiter
from edgebot.seals import Sealer
from edgebot.secrets import SecretResolver
from edgebot.store import ReleaseStore
from edgebot.thread import ThreadReporter, slack_client

log = logging.getLogger(__name__)


def create_app(config: Config, *, resolver: SecretResolver | None = None,
               connection: redis.Redis | None = None) -> App:
    """Build the Bolt app. The bot resolves only the Slack secrets (least privilege)."""
    check_slack_references(config)
    check_access(config)
    resolver = resolver or SecretResolver()
    token = resolver.resolve(config.slack.bot_token).reveal()
    signing_secret = resolver.resolve(config.slack.signing_secret).reveal()
    client = slack_client(token, config.slack.api_url)
    connection = connection or redis_connection(config, resolver)
    store = ReleaseStore(connection, config.settings)
    app = App(client=client, signing_secret=signing_secret, process_before_response=False,
              token_verification_enabled=False)
    # Bolt logs the whole body of a request whose signature is wrong, at INFO: nobody verified who sent it, so it
    # is never logged (bot.wsgi refuses such requests before Bolt reads them; this covers any other adapter).
    logging.getLogger("slack_bolt.RequestVerification").setLevel(logging.WARNING)
    st = config.settings
    access = AccessCheck(config.access, lambda group: _group_members(client, group),
                         cache_ttl=st.access_group_cache_ttl)
    limiter = SlackRateLimiter(connection, burst=st.slack_burst, prefix=st.key_prefix, per_minute={
        "chat.update": st.slack_update_per_minute, "chat.postMessage": st.slack_post_per_minute})
    sealer = Sealer.from_secret(resolver.resolve(config.seal_key).reveal()) if config.seal_key else None
    desk = ApprovalDesk(store, lambda group: _group_members(client, group), st, sealer=sealer)
    register(app, BotContext(config, store, ChannelCheck(client, connection, config), access,
                             ThreadReporter(client, store, limiter=limiter), desk))
    return app


def check_slack_references(config: Config) -> None:
    """The bot holds no Vault client (only workers talk to Vault): refuse a vault: reference under [slack] with what
    to do instead, at start-up rather than when the first request arrives."""
    for name, ref in (("slack.bot_token", config.slack.bot_token),
                      ("slack.signing_secret", config.slack.signing_secret),
                      ("slack.app_token", config.slack.app_token), ("trust.seal_key", config.seal_key)):
        if ref is not None and ref.scheme == "vault":
            raise ConfigError(
                f"{name} is a vault: reference, but the bot holds no Vault client (only workers talk to Vault): "
                "give it as a file: reference to a file that Vault Agent, the Vault CSI provider or a Kubernetes "
                "Secret keeps up to date, or as an env: reference (docs/production.md, section 2)")


def check_access(config: Config) -> None:
    """Refuse to start while ``[access]`` names nobody who may publish a catalog service: with no rule, nobody but
    the release managers acts, so such a bot could do nothing (the message says what to add)."""
    problem = access_problem(config)
    if problem is not None:
        raise ConfigError(problem)


def _group_members(client: WebClient, usergroup: str) -> set[str]:
    try:
        return set(client.usergroups_users_list(usergroup=usergroup).get("users") or [])
    except SlackApiError as exc:
        log.warning("cannot read user group %s: %s", usergroup, exc.response.get("error"))
        return set()


def redis_connection(config: Config, resolver: SecretResolver) -> redis.Redis:
    password = resolver.resolve(config.redis_password).reveal() if config.redis_password else None
    timeout = config.settings.bot_redis_timeout
    # behind Sentinel, a failover is ridden out for about one command's timeout (the sentinels are asked again);
    # a single node keeps redis-py's default retries (a Redis that is down is said at once)
    sentinel = redis_conn.parse_sentinel_url(config.redis_url) is not None
    return redis_conn.from_config(config, password, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry=redis_conn.retry_for(timeout, config.settings.redis_backoff_cap)
                                  if sentinel else None)


def register(app: App, ctx: BotContext) -> None:
    """Every listener of the bot, in one place; the middleware gives each of them ``ctx`` through Bolt's context."""
    app.use(listeners.AttachContext(ctx))
    app.command("/edge")(listeners.edge_command)
    for rules in KINDS.values():  # every kind of approval card: its buttons and its Reject modal
        app.action(rules.approve_action)(listeners.approve_click)
        app.action(rules.reject_action)(listeners.reject_click)
        app.view(rules.reject_callback)(listeners.reject_submission)
    app.action(messages.STATUS_ACTION)(listeners.status_click)
    app.action(messages.CANCEL_ACTION)(listeners.cancel_click)
