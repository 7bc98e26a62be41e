"""The smallest config a real `edgebot serve` / `edgebot worker` starts with: every secret an ``env:`` reference
(SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, EXCHANGE_PASSWORD, SIGNING_KEY, PUSH_PASSWORD), Slack and the Exchange on
free ports nobody answers, one registry, the service ``hello`` of org ``acme``, and everyone may publish it (the bot
refuses to start until ``[access]`` says who may)."""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.proc_base import free_port


def minimal_config(redis_url: str, *, source: str, arches: Sequence[str] = ("amd64",), namespace: str = "",
                   settings: str = "") -> str:
    """The TOML text; ``settings`` is the body of the ``[settings]`` table (omitted when empty)."""
    namespace_line = f'namespace = "{namespace}"\n' if namespace else ""
    arch_list = ", ".join(f'"{a}"' for a in arches)
    settings_table = f"[settings]\n{settings}" if settings else ""
    return f"""
[slack]
bot_token = "env:SLACK_BOT_TOKEN"
signing_secret = "env:SLACK_SIGNING_SECRET"
api_url = "http://127.0.0.1:{free_port()}/api/"
[redis]
url = "{redis_url}"
[exchange]
url = "http://127.0.0.1:{free_port()}/edge-exchange/v1"
username = "acme/edgebot"
password = "env:EXCHANGE_PASSWORD"
[signing]
private_key = "env:SIGNING_KEY"
[registries.local]
host = "127.0.0.1:5000"
{namespace_line}push_username = "pusher"
push_password = "env:PUSH_PASSWORD"
[services.hello]
source = "{source}"
org = "acme"
arches = [{arch_list}]
[access]
publish = ["*"]
{settings_table}"""
