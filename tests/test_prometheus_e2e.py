"""A real Prometheus (Debian's package) scrapes a real bot (`edgebot serve`, gunicorn) and a real publish worker
(`edgebot worker --metrics-port`) sharing a real Redis, with the shipped alert rules loaded; everything is asserted
through Prometheus's HTTP API, as an operator's Grafana or Alertmanager would see it.

The first test drives the records directly (a finished release with stage timings, a job the worker runs, a stuck
build, Slack calls held back by the token bucket); the second scrapes a sandbox Stack (dockerd, registry, ACL'd Redis)
through a real `/edge publish`.

The stuck-release alert waits 10 minutes (``for: 10m``) before it fires, which `promtool test rules` proves
(deploy/prometheus/edgebot-rules.test.yml); here it must go *pending* for a release whose record has not changed
for three hours, which proves the rule's expression matches the series edgebot really exposes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue

from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, EdgebotJob, Step
from edgebot.ratelimit import SlackRateLimiter
from edgebot.release import BUILDING, SUCCEEDED, StageState, StageStatus
from edgebot.store import ReleaseStore
from sandbox.proc_base import free_port, spawn, stop_process, wait_until
from sandbox.processes import RedisServer
from sandbox.prometheus import PrometheusServer
from sandbox.stack import Stack
from tests.test_metrics import ENV, _answers, _config_text, _get, _release

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "edgebot-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "edgebot-dashboard.json"


@pytest.fixture
def fleet(redis_server: RedisServer, redis_conn: redis.Redis, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """The bot and a publish worker, both serving the fleet-wide series; yields their ``host:port``."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    env = {**os.environ, **ENV}
    config = tmp_path / "edgebot.toml"
    config.write_text(_config_text(redis_server.url))
    bot_port, worker_port = free_port(), free_port()
    bot = spawn([sys.executable, "-m", "edgebot.cli", "--config", str(config), "serve", "--bind",
                 f"127.0.0.1:{bot_port}", "--workers", "1", "--threads", "2"], tmp_path / "bot.log", env=env)
    worker = None
    try:
        worker = spawn([sys.executable, "-m", "edgebot.cli", "--config", str(config), "worker", "--publish",
                        "--name", "prometheus-test-worker", "--metrics-port", str(worker_port)],
                       tmp_path / "worker.log", env=env)

        def up() -> bool:
            for proc, log in ((bot, "bot.log"), (worker, "worker.log")):
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / log).read_text())
            return _answers(f"http://127.0.0.1:{bot_port}/healthz") and _answers(
                f"http://127.0.0.1:{worker_port}/healthz") and _get(
                f"http://127.0.0.1:{worker_port}/healthz")[1].get("registered") is True

        wait_until(up, timeout=60, what="the bot and the worker")
        yield f"127.0.0.1:{bot_port}", f"127.0.0.1:{worker_port}"
    finally:
        stop_process(worker)
        stop_process(bot)


def _values(prometheus: PrometheusServer, expr: str, by: str) -> dict[str, float]:
    return {sample["metric"].get(by, ""): float(sample["value"][1]) for sample in prometheus.query(expr)}


def test_prometheus_scrapes_the_bot_and_a_worker_and_evaluates_the_shipped_rules(
        fleet: tuple[str, str], redis_conn: redis.Redis, tmp_path: Path) -> None:
    bot, worker = fleet
    store = ReleaseStore(redis_conn)
    # A release that went through its stages and succeeded (its stage durations are observed when it ends)…
    store.create(_release("r-ok", stages={"source": StageState(StageStatus.DONE, 100.0, 102.0),
                                          "build": StageState(StageStatus.DONE, 102.0, 190.0)}))
    store.update("r-ok", lambda r: setattr(r, "state", SUCCEEDED))
    # …one run by the real worker, which fails (Slack is unreachable) and is counted once…
    queue = Queue(PUBLISH_QUEUE, connection=redis_conn, job_class=EdgebotJob, serializer=SERIALIZER)

    def enqueue(pipe: redis.client.Pipeline) -> None:
        queue.enqueue_call("workers.jobs.prepare_release", args=("r-job",), job_id=Step.PREPARE.job_id("r-job"),
                           pipeline=pipe)

    store.create(_release("r-job"), then=enqueue)
    # …one building release whose record nothing has changed for three hours: stuck…
    store.create(_release("r-stuck", BUILDING))
    record = json.loads(redis_conn.get(store.key("r-stuck")))  # type: ignore[arg-type]
    record["updated_at"] -= 3 * 3600
    redis_conn.set(store.key("r-stuck"), json.dumps(record))
    # …and Slack calls held back by the shared token bucket (1 call a second after a burst of 1).
    limiter = SlackRateLimiter(redis_conn, per_minute={"chat.update": 60.0}, burst=1)
    waited = sum(limiter.acquire("T1", "chat.update") for _ in range(3))
    assert waited > 0

    with PrometheusServer(tmp_path / "prometheus", {"edgebot-bot": [bot], "edgebot-worker": [worker]},
                          rule_files=[RULES]) as prometheus:
        # Both targets up.
        def both_up() -> dict[str, list[dict[str, object]]] | None:
            targets = prometheus.targets_by_job()
            healthy = all(t["health"] == "up" for ts in targets.values() for t in ts)
            return targets if healthy and set(targets) == {"edgebot-bot", "edgebot-worker"} else None

        targets = wait_until(both_up, timeout=30, what="both targets up")
        assert {job: [t["scrapeUrl"] for t in ts] for job, ts in targets.items()} == {
            "edgebot-bot": [f"http://{bot}/metrics"], "edgebot-worker": [f"http://{worker}/metrics"]}
        assert _values(prometheus, 'up{job=~"edgebot-.+"}', "job") == {"edgebot-bot": 1, "edgebot-worker": 1}

        # The fleet-wide series, from both targets, with the same values.
        wait_until(lambda: _values(prometheus, 'min by (outcome) (edgebot_releases_total)', "outcome").get("failed"),
                   timeout=60, what="the worker's failed release in both targets' scrapes")
        outcomes = _values(prometheus, "max by (outcome) (edgebot_releases_total)", "outcome")
        assert outcomes["succeeded"] == 1 and outcomes["failed"] == 1
        assert {o for o, v in outcomes.items() if v == 0} >= {"rejected", "expired", "cancelled", "rolled_back"}
        for series in ("edgebot_releases_total", "edgebot_queue_workers", "edgebot_slack_ratelimit_waits_total"):
            jobs = {s["metric"]["job"] for s in prometheus.query(series)}
            assert jobs == {"edgebot-bot", "edgebot-worker"}, series
        builds = prometheus.query('max by (le) (edgebot_stage_duration_seconds_bucket{stage="build"})')
        assert {s["metric"]["le"]: float(s["value"][1]) for s in builds}["120.0"] == 1
        assert {s["metric"]["le"]: float(s["value"][1]) for s in builds}["60.0"] == 0
        assert 60 < _values(prometheus, 'histogram_quantile(0.5, max by (le, stage) '
                                         '(edgebot_stage_duration_seconds_bucket))', "stage")["build"] <= 120
        assert _values(prometheus, "max by (queue) (edgebot_queue_workers)", "queue")["edgebot-publish"] == 1
        assert _values(prometheus, "max by (state) (edgebot_releases_active)", "state")["building"] == 1
        assert _values(prometheus, "max by (state) (edgebot_release_idle_seconds)", "state")["building"] > 3 * 3600 - 60
        assert set(_values(prometheus, "max by (state) (edgebot_rollout_nodes)", "state")) == {
            "new", "old", "failing", "offline", "waiting"}
        waits = _values(prometheus, "max by (method) (edgebot_slack_ratelimit_waits_total)", "method")
        assert waits["chat.update"] >= 1
        assert _values(prometheus, "max by (method) (edgebot_slack_ratelimit_wait_seconds_total)",
                       "method")["chat.update"] == pytest.approx(waited, abs=0.01)
        errors = prometheus.query('edgebot_call_errors_total{system="slack", job="edgebot-worker"}')
        assert {s["metric"]["call"] for s in errors} >= {"chat.postMessage"}
        assert _values(prometheus, "edgebot_worker_jobs_total", "outcome")["succeeded"] >= 1

        # Every shipped rule is loaded and evaluated without error; the stuck release's alert is pending.
        shipped = re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE)

        def evaluated() -> list[dict[str, object]] | None:
            rules = prometheus.rules()
            return rules if all(r["lastEvaluation"] > "2000" for r in rules) else None

        rules = wait_until(evaluated, timeout=30, what="every rule evaluated once")
        assert sorted(r["name"] for r in rules) == sorted(shipped)
        assert {r["name"]: (r["health"], r.get("lastError", "")) for r in rules} == {
            name: ("ok", "") for name in shipped}
        alerts = wait_until(lambda: [a for a in prometheus.api("alerts")["alerts"]
                                     if a["labels"]["alertname"] == "EdgebotReleaseStuck"],
                            timeout=30, what="EdgebotReleaseStuck to be pending")
        assert [(a["labels"]["state"], a["state"]) for a in alerts] == [("building", "pending")]

        # Every query of the Grafana dashboard runs on this Prometheus without an error.
        for expr in _dashboard_exprs():
            prometheus.api("query", query=expr.replace("$__rate_interval", "1m"))


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())
            if "expr" in target]


def test_prometheus_sees_a_real_publish_of_a_sandbox_stack(tmp_path: Path, docker_daemon: Any,
                                                              registry: Any) -> None:
    """The sandbox Stack (real Redis with ACLs, dockerd, registry, bot, a publish and a build worker, each worker with
    its metrics port) publishes hello 1.0.0; Prometheus sees the release counted, its stage durations, both queues
    served, and the jobs each worker ran."""
    publish_port, build_port = free_port(), free_port()
    stack = Stack(tmp_path / "stack", docker=docker_daemon, registry=registry)
    stack.start(workers=False)
    try:
        stack.start_worker("publish", "--publish", "--metrics-port", str(publish_port))
        stack.start_worker("build-amd64", "--arch", "amd64", "--metrics-port", str(build_port))
        stack.wait_workers(2)
        bot = stack.bot_url.removeprefix("http://")
        targets = {"edgebot-bot": [bot], "edgebot-worker": [f"127.0.0.1:{publish_port}", f"127.0.0.1:{build_port}"]}
        with PrometheusServer(tmp_path / "prometheus", targets, rule_files=[RULES]) as prometheus:
            def all_up() -> bool:
                found = [t for ts in prometheus.targets_by_job().values() for t in ts]
                return len(found) == 3 and all(t["health"] == "up" for t in found)

            try:
                wait_until(all_up, timeout=30, what="the bot and both workers up in Prometheus")
            except TimeoutError:
                raise AssertionError(prometheus.targets_by_job()) from None
            release_id = stack.start_release("publish hello 1.0.0 --registry local")
            release = stack.wait_final(release_id)
            assert release.state == SUCCEEDED, (release.error, stack.log_tail("worker-publish"))

            def counted() -> dict[str, float]:
                return _values(prometheus, "max by (outcome) (edgebot_releases_total)", "outcome")

            wait_until(lambda: counted().get("succeeded"), timeout=30, what="the release in Prometheus")
            up = {(s["metric"]["job"], s["metric"]["instance"]): float(s["value"][1])
                  for s in prometheus.query('up{job=~"edgebot-.+"}')}
            assert up == {("edgebot-bot", bot): 1, ("edgebot-worker", f"127.0.0.1:{publish_port}"): 1,
                          ("edgebot-worker", f"127.0.0.1:{build_port}"): 1}
            assert counted()["succeeded"] == 1 and counted()["failed"] == 0
            stages = _values(prometheus, "max by (stage) (edgebot_stage_duration_seconds_count)", "stage")
            assert {"source", "build", "push", "sign", "publish"} <= {s for s, n in stages.items() if n == 1}
            workers = _values(prometheus, "max by (queue) (edgebot_queue_workers)", "queue")
            assert workers["edgebot-publish"] >= 1 and workers["edgebot-build-amd64"] >= 1
            # the build worker's own series (its Redis user may not read the fleet-wide ones: it serves none)
            jobs = {s["metric"]["instance"]: float(s["value"][1])
                    for s in prometheus.query('edgebot_worker_jobs_total{outcome="succeeded"}')}
            assert jobs.keys() == {f"127.0.0.1:{publish_port}", f"127.0.0.1:{build_port}"}
            assert not prometheus.query(f'edgebot_releases_total{{instance="127.0.0.1:{build_port}"}}')
            rules = wait_until(lambda: (found := prometheus.rules()) and all(
                r["lastEvaluation"] > "2000" for r in found) and found, timeout=30, what="the rules evaluated")
            assert {r["health"] for r in rules} == {"ok"}
    finally:
        stack.stop()
