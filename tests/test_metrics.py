"""Prometheus metrics and health endpoints, scraped over HTTP from real processes (`edgebot serve` under gunicorn and
`edgebot worker`) sharing a real Redis; the numbers come from real release records, RQ queues and failed calls.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from edgebot import metrics
from edgebot.config import parse_config
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, EdgebotJob, Step, build_queue
from edgebot.release import AWAITING_APPROVAL, BUILDING, ROLLING_OUT, SUCCEEDED, Release, StageState
from edgebot.store import ReleaseStore
from edgebot.thread import slack_client
from sandbox.proc_base import free_port, spawn, stop_process, wait_until
from sandbox.processes import RedisServer
from tests.minimal_config import minimal_config

ROOT = Path(__file__).resolve().parent.parent


def _config_text(redis_url: str, *, metrics_port: int = 0, extra_settings: str = "") -> str:
    return minimal_config(redis_url, source="/nonexistent/hello.git", arches=("amd64", "arm64"), namespace="edge",
                          settings=f"metrics_port = {metrics_port}\nworker_ttl = 10\n{extra_settings}\n")


ENV = {"SLACK_BOT_TOKEN": "xoxb-1-test-token", "SLACK_SIGNING_SECRET": "signing-secret-for-tests",
       "EXCHANGE_PASSWORD": "exchange-pw", "SIGNING_KEY": "unused", "PUSH_PASSWORD": "push-pw"}


def _release(release_id: str, state: str = BUILDING, **fields: object) -> Release:
    release = Release(release_id=release_id, team_id="T1", channel_id="C1", user_id="U1", service=f"hello-{release_id}",
                      version="1.0.0", org="acme", registry="local", arches=["amd64"], state=state)
    for name, value in fields.items():
        setattr(release, name, value)
    return release


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name → {sorted label pairs → value} for every sample of a /metrics answer."""
    with urllib.request.urlopen(url, timeout=20) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.fixture
def edgebot_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **ENV}


@pytest.fixture
def bot(redis_server: RedisServer, tmp_path: Path, edgebot_env: dict[str, str]) -> Iterator[str]:
    """`edgebot serve` (gunicorn, 2 worker processes) on a free port; yields its base URL."""
    config = tmp_path / "edgebot.toml"
    config.write_text(_config_text(redis_server.url))
    port = free_port()
    proc = spawn([sys.executable, "-m", "edgebot.cli", "--config", str(config), "serve", "--bind",
                  f"127.0.0.1:{port}", "--workers", "2", "--threads", "2"], tmp_path / "bot.log", env=edgebot_env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/healthz") or proc.poll() is not None, timeout=60, what="the bot")
        assert proc.poll() is None, (tmp_path / "bot.log").read_text()
        yield base
    finally:
        stop_process(proc)


# -- recording -------------------------------------------------------------------------------------------------------

def test_a_release_is_counted_once_when_it_becomes_final_with_its_stage_durations(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release("r-1", stages={"source": StageState("done", 100.0, 103.0),
                                         "build": StageState("done", 103.0, 190.0),
                                         "sign": StageState("running", 190.0, None)}))

    def succeed(release: Release) -> None:
        release.state = SUCCEEDED

    store.update("r-1", succeed)
    store.update("r-1", lambda r: r.notes.append("edited after the end"))  # already final: not counted again
    registry = metrics.build_registry(redis_conn, "edgebot")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in registry.collect() for s in family.samples}
    assert samples[("edgebot_releases_total", (("outcome", "succeeded"),))] == 1
    assert samples[("edgebot_releases_total", (("outcome", "failed"),))] == 0
    assert samples[("edgebot_stage_duration_seconds_count", (("stage", "build"),))] == 1
    assert samples[("edgebot_stage_duration_seconds_sum", (("stage", "build"),))] == pytest.approx(87.0)
    assert samples[("edgebot_stage_duration_seconds_bucket", (("le", "60.0"), ("stage", "build")))] == 0
    assert samples[("edgebot_stage_duration_seconds_bucket", (("le", "120.0"), ("stage", "build")))] == 1
    assert samples[("edgebot_stage_duration_seconds_bucket", (("le", "5.0"), ("stage", "source")))] == 1
    assert ("edgebot_stage_duration_seconds_count", (("stage", "sign"),)) not in samples, "unfinished: no sample"
    assert samples[("edgebot_metrics_redis_up", ())] == 1


def test_rollout_counts_are_read_from_the_running_stages_of_records_that_have_them(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    rollouts = {
        "r-a": [{"name": "canary", "status": "healthy", "counts": {"total": 3, "new": 3}},  # done: not counted
                {"name": "fleet", "status": "running",
                 "counts": {"total": 11, "new": 7, "old": 2, "failing": 1, "offline": 1, "waiting": 0}}],
        "r-b": [{"name": "override", "status": "running", "counts": {"total": 2, "new": 1, "waiting": 1}}],
        "r-c": [{"name": "canary", "status": "pending", "counts": {}}],
    }
    for release_id, stages in rollouts.items():
        store.create(_release(release_id, ROLLING_OUT))
        record = json.loads(redis_conn.get(store.key(release_id)))  # type: ignore[arg-type]
        record["rollout"] = stages
        redis_conn.set(store.key(release_id), json.dumps(record))
    store.create(_release("r-d", ROLLING_OUT))  # no rollout field at all
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in metrics.FleetCollector(redis_conn, "edgebot").collect() for s in family.samples}
    nodes = {labels[0][1]: value for (name, labels), value in samples.items() if name == "edgebot_rollout_nodes"}
    assert nodes == {"new": 8, "old": 2, "failing": 1, "offline": 1, "waiting": 1}
    assert samples[("edgebot_releases_active", (("state", "rolling_out"),))] == 4


def test_slack_rate_limit_waits_are_counted_fleet_wide_by_method(redis_conn: redis.Redis) -> None:
    from edgebot.ratelimit import SlackRateLimiter

    slept: list[float] = []
    # two processes' limiters share one bucket per (team, method); only calls that had to wait are counted
    first, second = (SlackRateLimiter(redis_conn, per_minute={"chat.update": 60.0, "chat.postMessage": 6000.0},
                                      burst=1, sleep=slept.append) for _ in range(2))
    assert first.acquire("T1", "chat.update") == 0
    waited = second.acquire("T1", "chat.update") + first.acquire("T1", "chat.postMessage")
    assert waited > 0 and slept
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in metrics.FleetCollector(redis_conn, "edgebot").collect() for s in family.samples}
    assert samples[("edgebot_slack_ratelimit_waits_total", (("method", "chat.update"),))] == 1
    assert samples[("edgebot_slack_ratelimit_wait_seconds_total", (("method", "chat.update"),))] == \
        pytest.approx(waited)
    assert ("edgebot_slack_ratelimit_waits_total", (("method", "chat.postMessage"),)) not in samples


def test_a_release_nobody_advances_shows_as_idle_in_its_state(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release("r-moving", BUILDING))
    store.create(_release("r-stuck", BUILDING))
    record = json.loads(redis_conn.get(store.key("r-stuck")))  # type: ignore[arg-type]
    record["updated_at"] -= 3 * 3600
    redis_conn.set(store.key("r-stuck"), json.dumps(record))
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in metrics.FleetCollector(redis_conn, "edgebot").collect() for s in family.samples}
    assert 3 * 3600 <= samples[("edgebot_release_idle_seconds", (("state", "building"),))] < 3 * 3600 + 600
    assert samples[("edgebot_release_idle_seconds", (("state", "awaiting_approval"),))] == 0, "none in that state"


def test_scrape_reports_redis_down_instead_of_failing() -> None:
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=2)
    families = list(metrics.FleetCollector(dead, "edgebot").collect())
    assert [(f.name, f.samples[0].value) for f in families] == [("edgebot_metrics_redis_up", 0)]


def test_exchange_route_labels_are_bounded() -> None:
    assert metrics.exchange_route("PUT", "orgs/acme/services/hello_1.0.0_amd64/keys/k.pem") == \
        "PUT orgs/{}/services/{}/keys/{}"
    assert metrics.exchange_route("GET", "orgs/acme/node-details?x=1") == "GET orgs/{}/node-details"


# -- the bot's /metrics ----------------------------------------------------------------------------------------------

def test_bot_serves_fleet_metrics_from_redis(bot: str, redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release("r-wait1", AWAITING_APPROVAL))
    store.create(_release("r-wait2", AWAITING_APPROVAL))
    store.create(_release("r-build", BUILDING))
    store.create(_release("r-done"))
    store.update("r-done", lambda r: setattr(r, "state", "failed"))
    queue = Queue(build_queue("arm64"), connection=redis_conn, job_class=EdgebotJob, serializer=SERIALIZER)
    for n in range(3):
        queue.enqueue_call("workers.jobs.build_arch", args=(f"r-{n}", "arm64"), job_id=f"r-{n}-build-arm64")
    # A Slack call that fails (nothing listens at the API URL) and an Exchange call that fails, each counted once.
    metrics.install(redis_conn, "edgebot")
    try:
        with pytest.raises(Exception):  # noqa: B017 (urllib's connection error; its type is slack_sdk's business)
            slack_client("xoxb-1-test-token", f"http://127.0.0.1:{free_port()}/api/").chat_postMessage(
                channel="C1", text="x")
        _fail_an_exchange_call()
    finally:
        metrics.install(None)

    samples = _scrape(f"{bot}/metrics")
    assert samples["edgebot_approvals_pending"][()] == 2
    assert samples["edgebot_releases_active"][(("state", "awaiting_approval"),)] == 2
    assert samples["edgebot_releases_active"][(("state", "building"),)] == 1
    assert samples["edgebot_releases_total"][(("outcome", "failed"),)] == 1
    assert samples["edgebot_queue_depth"][(("queue", "edgebot-build-arm64"),)] == 3
    assert samples["edgebot_queue_depth"][(("queue", "edgebot-build-amd64"),)] == 0, "known from the config"
    assert samples["edgebot_queue_workers"][(("queue", "edgebot-publish"),)] == 0
    errors = samples["edgebot_call_errors_total"]
    assert errors[(("call", "chat.postMessage"), ("reason", "URLError"), ("system", "slack"))] == 1
    assert errors[(("call", "GET orgs/{}/services/{}"), ("reason", "unreachable"), ("system", "exchange"))] == 1
    assert samples["edgebot_metrics_redis_up"][()] == 1
    assert "process_resident_memory_bytes" in samples

    assert _get(f"{bot}/readyz") == (200, {"ok": True})
    assert _get(f"{bot}/healthz") == (200, {"ok": True})


def _fail_an_exchange_call() -> None:
    from edgebot.errors import StepFailed
    from workers.exchange import ExchangeClient
    from workers.failures import translated

    config = parse_config({"slack": {"bot_token": "env:T", "signing_secret": "env:S"}, "redis": {"url": "redis://x"},
                           "exchange": {"url": "http://x/v1", "username": "acme/u", "password": "env:P"},
                           "signing": {"private_key": "env:K"},
                           "registries": {"local": {"host": "h", "push_username": "u", "push_password": "env:P"}},
                           "services": {"hello": {"source": "s", "org": "acme", "arches": ["amd64"]}}}, environ={})
    client = ExchangeClient(f"http://127.0.0.1:{free_port()}/edge-exchange/v1", "acme", "acme/u", "pw", timeout=5)
    with pytest.raises(StepFailed, match="cannot reach the Exchange"), \
            translated("publish", _release("r-x"), config.registries["local"]):
        client.get_service("acme", "hello_1.0.0_amd64")


# -- a worker's metrics port and /healthz ----------------------------------------------------------------------------

def test_worker_serves_metrics_and_health_and_reports_redis_down(tmp_path: Path, edgebot_env: dict[str, str]) -> None:
    with RedisServer(tmp_path / "redis") as own_redis:
        config = tmp_path / "edgebot.toml"
        port = free_port()
        config.write_text(_config_text(own_redis.url))
        proc = spawn([sys.executable, "-m", "edgebot.cli", "--config", str(config), "worker", "--publish",
                      "--name", "metrics-test-worker", "--metrics-port", str(port)], tmp_path / "worker.log",
                     env=edgebot_env)
        base = f"http://127.0.0.1:{port}"
        try:
            def registered() -> bool:
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "worker.log").read_text())
                return _answers(f"{base}/healthz") and _get(f"{base}/healthz")[1].get("registered") is True

            wait_until(registered, timeout=60, what="the worker to register")
            assert _get(f"{base}/healthz") == (200, {"ok": True, "redis": True, "registered": True})
            samples = _scrape(f"{base}/metrics")
            assert samples["edgebot_queue_workers"][(("queue", "edgebot-publish"),)] == 1
            assert samples["edgebot_queue_workers"][(("queue", "edgebot-build-amd64"),)] == 0
            assert samples["edgebot_approvals_pending"][()] == 0
            assert samples["edgebot_worker_jobs_total"] == {(("outcome", "succeeded"),): 0, (("outcome", "failed"),): 0}
            assert samples["edgebot_worker_busy"][()] == 0
            status, _ = _get(f"{base}/nope")
            assert status == 404

            # One job, in a forked work horse: its release fails (Slack is unreachable), RQ counts the job for this
            # worker, the outcome is counted once in Redis, and the failed Slack call is counted too.
            connection = redis.Redis.from_url(own_redis.url)
            store = ReleaseStore(connection)
            queue = Queue(PUBLISH_QUEUE, connection=connection, job_class=EdgebotJob, serializer=SERIALIZER)
            store.create(_release("r-job1"), then=lambda pipe: queue.enqueue_call(
                "workers.jobs.prepare_release", args=("r-job1",), job_id=Step.PREPARE.job_id("r-job1"), pipeline=pipe))
            wait_until(lambda: _scrape(f"{base}/metrics")["edgebot_worker_jobs_total"][(("outcome", "succeeded"),)],
                       timeout=120, what="the job to be counted")
            samples = _scrape(f"{base}/metrics")
            assert store.require("r-job1").state == "failed"
            assert samples["edgebot_releases_total"][(("outcome", "failed"),)] == 1
            assert samples["edgebot_worker_working_seconds_total"][()] > 0
            errors = samples["edgebot_call_errors_total"]
            assert errors[(("call", "chat.postMessage"), ("reason", "URLError"), ("system", "slack"))] >= 1
            connection.close()

            own_redis.stop()
            wait_until(lambda: _get(f"{base}/healthz")[0] == 503, timeout=30, what="/healthz to fail")
            assert _get(f"{base}/healthz") == (503, {"ok": False, "redis": False, "registered": None})
            assert _scrape(f"{base}/metrics")["edgebot_metrics_redis_up"][()] == 0
        finally:
            stop_process(proc)


def test_metrics_port_zero_serves_nothing(tmp_path: Path, redis_server: RedisServer,
                                          edgebot_env: dict[str, str]) -> None:
    config = tmp_path / "edgebot.toml"
    config.write_text(_config_text(redis_server.url))
    proc = spawn([sys.executable, "-m", "edgebot.cli", "--config", str(config), "worker", "--arch", "riscv64",
                  "--burst", "--name", "burst-no-metrics"], tmp_path / "worker.log", env=edgebot_env)
    try:
        assert proc.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()
    finally:
        stop_process(proc)
    assert "worker metrics and health on port" not in (tmp_path / "worker.log").read_text()
