"""Two services in one pattern, rolled out at the same time by two workers: the per-object Redis lock around
re-read → PUT → verify keeps both updates (the Exchange has no ETags). Real Redis, the Exchange stand-in over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from edgebot.config import parse_config
from edgebot.fleet_summary import Target
from edgebot.secrets import SecretResolver
from sandbox.exchange import ExchangeStandIn
from tests.redis_url import url_of
from workers.context import WorkerContext
from workers.exchange import ExchangeClient
from workers.rollout import move, pinned
from workers.rollout_watch import write_object

ORG, PW = "acme", "edgebot-pw"
SLOW = 0.3  # seconds between a writer's read and its PUT, so the other writer tries to read in between
LOCK_TIMEOUT = 30.0
"""settings.rollout_lock_timeout here: the most one writer holds the lock, and waits for it."""
DONE_WITHIN = 2 * LOCK_TIMEOUT + 30
"""Seconds both writers get to end (each may wait out the other's lock once), however busy the machine is."""


@pytest.fixture()
def ex() -> Iterator[ExchangeStandIn]:
    with ExchangeStandIn() as standin:
        standin.add_user(ORG, "edgebot", PW)
        with httpx.Client(base_url=standin.url + "/", auth=(f"{ORG}/edgebot", PW)) as c:
            for url in ("hello", "other"):
                for version in ("1.0.0", "2.0.0"):
                    body = {"label": url, "public": False, "url": url, "version": version, "arch": "amd64",
                            "sharable": "multiple"}
                    assert c.post(f"orgs/{ORG}/services", json=body).status_code == 201
            pattern = {"label": "web", "public": False, "services": [
                {"serviceUrl": url, "serviceOrgid": ORG, "serviceArch": "amd64",
                 "serviceVersions": [{"version": "1.0.0", "priority": {"priority_value": 1}}]}
                for url in ("hello", "other")]}
            assert c.post(f"orgs/{ORG}/patterns/web", json=pattern).status_code == 201
        yield standin


@pytest.fixture()
def ctx(ex: ExchangeStandIn, redis_conn: redis.Redis) -> WorkerContext:
    redis_url = url_of(redis_conn)  # the test Redis's administrator
    config = parse_config({
        "slack": {"bot_token": "env:BOT", "signing_secret": "env:SIGNING"}, "redis": {"url": redis_url},
        "exchange": {"url": ex.url, "username": f"{ORG}/edgebot", "password": "env:EXCHANGE_PW"},
        "signing": {"private_key": "file:/nonexistent"},
        "registries": {"local": {"host": "r.example", "push_username": "u", "push_password": "env:PUSH"}},
        "services": {"hello": {"source": "/x", "org": ORG, "arches": ["amd64"]}},
        "settings": {"rollout_lock_timeout": LOCK_TIMEOUT},
    }, environ={})
    return WorkerContext(config, SecretResolver(environ={"EXCHANGE_PW": PW}))


def _mover(ctx: WorkerContext, url: str, *, locked: bool, errors: list[BaseException],
           both_read: threading.Barrier) -> threading.Thread:
    def change(body: dict[str, Any]) -> Any:
        time.sleep(SLOW)
        moved = move(Target("pattern", "web"), body, org=ORG, url=url, version="2.0.0", published_arches=["amd64"],
                     catalog_arches=["amd64"], retries=1, retry_durations=60)
        return moved.body, moved.previous, moved.changed

    def run() -> None:
        client = ExchangeClient(ctx.config.exchange.url, ORG, f"{ORG}/edgebot", PW)
        try:
            if locked:
                write_object(ctx, client, ORG, "pattern", "web", url, change)
            else:  # what happens without the lock: both read, then each changes and PUTs
                current = client.get_deployment_object("pattern", ORG, "web") or {}
                both_read.wait(timeout=DONE_WITHIN)
                body, _, _ = change(current)
                client.put_deployment_object("pattern", ORG, "web", body)
        except BaseException as exc:  # reported to the test
            errors.append(exc)
        finally:
            client.close()

    return threading.Thread(target=run)


def _run_both(ctx: WorkerContext, *, locked: bool) -> dict[str, dict[str, list[str]]]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)
    threads = [_mover(ctx, url, locked=locked, errors=errors, both_read=barrier) for url in ("hello", "other")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DONE_WITHIN)
    assert not any(thread.is_alive() for thread in threads), f"a writer did not end within {DONE_WITHIN:.0f} s"
    assert not errors, errors
    client = ExchangeClient(ctx.config.exchange.url, ORG, f"{ORG}/edgebot", PW)
    try:
        body = client.get_deployment_object("pattern", ORG, "web") or {}
    finally:
        client.close()
    return {url: pinned("pattern", body, ORG, url) for url in ("hello", "other")}


def test_two_services_in_one_pattern_keep_both_updates(ctx: WorkerContext) -> None:
    assert _run_both(ctx, locked=True) == {"hello": {"amd64": ["2.0.0", "1.0.0"]},
                                           "other": {"amd64": ["2.0.0", "1.0.0"]}}


def test_without_the_lock_one_update_is_lost(ctx: WorkerContext) -> None:
    """The control: the race the lock prevents is real against the stand-in."""
    result = _run_both(ctx, locked=False)
    moved = [url for url, arches in result.items() if arches["amd64"][0] == "2.0.0"]
    assert len(moved) == 1, result
