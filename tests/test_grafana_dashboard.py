"""The Grafana dashboard (deploy/grafana/edgebot-dashboard.json) is linted offline: importable JSON, every PromQL
expression parsed by promtool (Debian's prometheus package), and every series it names exported by edgebot, so a
renamed or removed metric breaks this test rather than a panel in production. tests/test_prometheus_e2e.py runs the
same queries on a real Prometheus scraping real processes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from edgebot import metrics
from edgebot.release import BUILDING, Release, StageState, StageStatus
from edgebot.store import ReleaseStore
from workers.health import WorkerCollector

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "edgebot-dashboard.json"
REQUIRED_SERIES = {"edgebot_releases_total", "edgebot_stage_duration_seconds_bucket", "edgebot_queue_depth",
                   "edgebot_queue_workers", "edgebot_releases_active", "edgebot_approvals_pending",
                   "edgebot_rollout_nodes", "edgebot_slack_ratelimit_waits_total",
                   "edgebot_slack_ratelimit_wait_seconds_total", "edgebot_call_errors_total",
                   "edgebot_release_idle_seconds"}
"""What the dashboard is for (issue 17): releases, stage durations, queues, rollout progress, Slack rate-limit waits,
call errors, stuck releases."""
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1d"}


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", ()))  # a collapsed row keeps its panels inside
    return panels


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in _panels(dashboard) for target in panel.get("targets", ()) if "expr" in target]


def _substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the lint does not know: {expr}"
    return expr


def exported_series(connection: redis.Redis) -> set[str]:
    """Every sample name a bot's and a worker's /metrics can carry, from the real collectors (with data in Redis, so
    the series that appear only once something happened are there too)."""
    metrics.CallErrorRecorder(connection, "edgebot").record("slack", "chat.update", "ratelimited")
    metrics.ratelimit_wait(connection, "edgebot", "chat.update", 0.5)
    store = ReleaseStore(connection)
    store.create(Release(release_id="r-1", team_id="T1", channel_id="C1", user_id="U1", service="hello",
                         version="1.0.0", org="acme", registry="local", arches=["amd64"], state=BUILDING,
                         stages={"build": StageState(StageStatus.DONE, 100.0, 160.0)}))
    store.update("r-1", lambda r: setattr(r, "state", "failed"))
    connection.hset("rq:worker:lint", mapping={"successful_job_count": 1, "state": "idle"})
    worker = WorkerCollector(SimpleNamespace(redis=connection, worker_key="rq:worker:lint"))  # type: ignore[arg-type]
    registry = metrics.build_registry(connection, "edgebot", ["edgebot-publish"], extra=[worker])
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_dashboard_is_importable_json() -> None:
    dashboard = _dashboard()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard):
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel.get("description"), f"panel {panel['title']!r} says what it shows"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses PromQL when it checks rules: each query becomes a recording rule of a temporary file."""
    exprs = _exprs(_dashboard())
    assert exprs
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"edgebot_dashboard:query_{n}",
                                                         "expr": _substituted(expr)}
                                                        for n, expr in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in check.stdout


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    """The lint above would catch a typo: promtool refuses an unparsable expression."""
    path = tmp_path / "bad.yml"
    path.write_text(json.dumps({"groups": [{"name": "g", "rules": [
        {"record": "x:y", "expr": "max by (state (edgebot_rollout_nodes)"}]}]}))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert check.returncode != 0


def test_every_series_the_dashboard_names_is_exported(redis_conn: redis.Redis) -> None:
    named = {name for expr in _exprs(_dashboard()) for name in re.findall(r"\bedgebot_\w+", expr)}
    exported = exported_series(redis_conn)
    assert named <= exported, f"the dashboard names series edgebot does not export: {sorted(named - exported)}"
    assert named >= REQUIRED_SERIES, f"the dashboard does not show: {sorted(REQUIRED_SERIES - named)}"


@pytest.mark.parametrize("renamed", ["edgebot_rollout_nodes", "edgebot_slack_ratelimit_waits_total"])
def test_a_renamed_metric_would_fail_the_lint(redis_conn: redis.Redis, renamed: str) -> None:
    exported = exported_series(redis_conn) - {renamed}
    named = {name for expr in _exprs(_dashboard()) for name in re.findall(r"\bedgebot_\w+", expr)}
    assert not named <= exported
