"""A publish worker that dies right after the fan-in write (applying the last build report: every arch built, build
and push marked done, sign enqueued in the same MULTI): the crash is placed exactly by cutting the worker off from
Redis right after that transaction (sandbox.redis_cut), then the worker and its work horse are SIGKILLed. The reaper
of the next publish worker resumes the apply step; the release must still sign and publish, exactly once. Before the
fan-in and its enqueue were one MULTI, this release stranded in "building" forever. (Build workers report through
Redis and never write the record: workers.build_report.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot.steps import StepLedger
from sandbox.processes import RedisServer
from sandbox.redis_cut import RedisCut
from sandbox.stack import CHANNEL_ID, FAST_RECOVERY, ORG, Stack, wait_until

pytestmark = pytest.mark.slow

FAN_IN = rb'"stages":\{"build":\{"ended_at":[0-9.e+]+,"note":"[^"]*","started_at":[0-9.e+]+,"status":"done"\}'
"""The record write that marks the whole build stage done (JSON with sorted keys, as edgebot.store writes it)."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("fanin")
    with RedisServer(workdir / "redis", appendonly=True) as redis_server:
        running = Stack(workdir, docker=docker_daemon, registry=registry, redis_server=redis_server,
                        settings=FAST_RECOVERY, versions=("4.0.1",))
        try:
            running.start(workers=False)
            running.start_worker("build-amd64", "--arch", "amd64")
            yield running
        finally:
            running.stop()


def _config_through(stack: Stack, cut: RedisCut, path: Path) -> Path:
    assert stack.redis_server is not None
    text = stack.config_path.read_text()
    assert stack.redis_server.plain_url in text
    path.write_text(text.replace(stack.redis_server.plain_url, cut.url()))
    return path


def test_killed_between_the_fan_in_and_the_enqueue_of_sign_still_signs_and_publishes_once(
        stack: Stack, tmp_path: Path) -> None:
    assert stack.redis_server is not None
    with RedisCut(stack.redis_server.port, FAN_IN) as cut:
        stack.start_worker("publish-cut", "--publish", config=_config_through(stack, cut, tmp_path / "cut.toml"))
        stack.wait_workers(2)
        mark = len(stack.exchange.requests())
        answer = stack.command("publish hello 4.0.1 --registry local", user_id="U0FANIN").json()
        assert "Queued" in answer["text"], answer
        (release_id,) = wait_until(lambda: stack.release_ids() or None, timeout=10, what="the release")
        wait_until(cut.cut.is_set, timeout=240, what="the publish worker to write the fan-in")
        stack.kill_worker("worker-publish-cut", horse=True)

    store = stack.store()
    cut_off = store.require(release_id)
    assert cut_off.stage("build").status == "done", "the fan-in write reached Redis before the cut"

    stack.start_worker("publish", "--publish")  # a healthy publish worker: its reaper resumes the apply step
    try:
        release = stack.wait_final(release_id, timeout=240)
    except TimeoutError as exc:
        entries = StepLedger(stack.redis(), store.settings).entries(release_id)
        raise AssertionError(f"stranded in {store.require(release_id).state}: {entries}") from exc
    assert release.state == "succeeded", (release.error, release.error_detail)
    assert release.stage("sign").status == "done"
    assert release.results["amd64"].digest == cut_off.results["amd64"].digest, "the resumed build reused the push"
    writes = [(r["method"], r["path"]) for r in stack.exchange.requests()[mark:]
              if r["method"] in ("POST", "PUT") and r["status"] == 201]
    assert writes.count(("POST", f"/edge-exchange/v1/orgs/{ORG}/services")) == 1, writes
    signed = [e for e in release.events if e["what"] == "signed"]
    assert len(signed) == 1, "sign ran once"
    wait_until(lambda: store.require(release_id).summary_ts, timeout=30, what="the summary")
    # the killed horse's lease expires on its own (lease_ttl); nothing renews it
    wait_until(lambda: not list(stack.redis().scan_iter(match=f"edgebot:lease:{release_id}:*")),
               timeout=10 * store.settings.lease_ttl, what="no lease left behind")
    assert stack.slack.thread(CHANNEL_ID, release.message_ts)
