"""The audit trail (edgebot/audit.py, workers/audit_ship.py): lines written in the action's MULTI, nothing secret in
them, sinks that keep what they accepted, and a shipper that never loses a line (at-least-once) against a real Redis
and a real local HTTP server."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from edgebot import audit
from edgebot.config import parse_config
from edgebot.errors import ConfigError, ReleaseEnded
from edgebot.release import CANCELLED, Approval, ArchResult, Decision, Release, RolloutStageState, RolloutStatus
from edgebot.settings import Settings
from edgebot.store import ReleaseStore
from tests.minimal_config import minimal_config
from workers.audit_ship import FileSink, HttpSink, SinkError, StdoutSink, ship

SECRETS = {
    "deployment_signature": "SIGBODY-3f9a0c77d1e24b5f8a6e",
    "deployment": '{"services":{"hello":{"image":"host/ns/hello@sha256:x","password":"DEPLOYMENTSECRET"}}}',
    "intake_seal": "SEAL-a8d1f0e2c3b4",
    "source_seal": "SEAL-b7c6d5e4f3a2",
    "decision_seal": "SEAL-c0ffee00c0ffee",
    "command_text": "publish hello 1.0.0 --note xoxb-SLACKTOKEN-IN-COMMAND",
}


def _release(release_id: str = "r-aud001", *, many: bool = False) -> Release:
    """``many``: one of several releases of the service at once (each its own service: the publish lock)."""
    release = Release(release_id=release_id, team_id="T1", channel_id="C1", user_id="U1",
                      service=f"hello-{release_id}" if many else "hello",
                      version="1.0.0", org="acme", registry="local", arches=["amd64", "arm64"],
                      command_text=SECRETS["command_text"], intake_seal=SECRETS["intake_seal"],
                      source_seal=SECRETS["source_seal"])
    for arch in ("amd64", "arm64"):
        release.results[arch] = ArchResult(digest=f"sha256:{arch}digest", signature=SECRETS["deployment_signature"],
                                           signature_fingerprint=f"sha256:{arch}fp",
                                           deployment=SECRETS["deployment"])
    release.public_key_fingerprint = "sha256:keyfp"
    return release


def _entries(conn: redis.Redis, prefix: str = "edgebot") -> list[dict[str, Any]]:
    return [json.loads(fields[audit.FIELD.encode()]) for _, fields in conn.xrange(audit.stream_key(prefix))]  # type: ignore[union-attr]


# -- the line builder ---------------------------------------------------------------------------------------------
def test_a_line_carries_digests_and_fingerprints_and_no_secret() -> None:
    release = _release()
    release.rollout = [RolloutStageState(name="canary", status=RolloutStatus.RUNNING,
                                         targets=[{"kind": "policy", "name": "hello-canary", "arch": "amd64",
                                                   "constraints": ["x"], "previous": {"amd64": "0.9"}}])]
    body = audit.line("rollout.started", release, {"user_id": "U2", "error": "e" * 5000})
    text = json.dumps(body)
    for secret in SECRETS.values():
        assert secret not in text
    assert "SEAL-" not in text and "SIGBODY" not in text and "xoxb-" not in text
    assert body["digests"] == {"amd64": "sha256:amd64digest", "arm64": "sha256:arm64digest"}
    assert body["signatures"] == {"amd64": "sha256:amd64fp", "arm64": "sha256:arm64fp"}
    assert body["policies"] == [{"stage": "canary", "kind": "policy", "name": "hello-canary", "arch": "amd64"}]
    assert body["user_id"] == "U2" and len(body["error"]) == audit.TEXT_MAX


def test_actions_follow_the_record() -> None:
    before = _release()
    assert [a for a, _ in audit.actions(None, before)] == ["publish.requested"]
    after = Release.from_dict(before.to_dict())
    after.approval = Approval(required=1, approvers=["U9"], allow_requester=False, requested_at=1.0,
                              expires_at=2.0, covers={}, covers_digest="sha256:cov")
    mid = Release.from_dict(after.to_dict())
    after.approval.decisions.append(Decision(user_id="U9", outcome="approved", at=1.5, covers_digest="sha256:cov",
                                             seal=SECRETS["decision_seal"]))
    found = audit.actions(mid, after)
    assert [(a, e["user_id"]) for a, e in found] == [("approval.approved", "U9")]
    assert SECRETS["decision_seal"] not in json.dumps(audit.line(*found[0][:1], after, found[0][1]))
    cancelled = Release.from_dict(after.to_dict())
    cancelled.state = CANCELLED
    cancelled.event("cancelled", by="U7")
    assert [(a, e["user_id"]) for a, e in audit.actions(after, cancelled)] == [("release.cancelled", "U7")]
    assert audit.actions(after, Release.from_dict(after.to_dict())) == []  # a plain progress write: no line


# -- in the store's MULTI -------------------------------------------------------------------------------------------
def test_the_store_writes_the_line_with_the_action_and_never_without_it(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release())
    assert [e["action"] for e in _entries(redis_conn)] == ["publish.requested"]

    def cancel(r: Release) -> None:
        r.state = CANCELLED
        r.event("cancelled", by="U3")

    def then_fails(r: Release, decided: None, pipe: Any) -> None:
        pipe.lpush("edgebot:wrongtype", "x")  # fails at EXEC: a wrong-type command in the same MULTI
        pipe.hset("edgebot:wrongtype", "k", "v")

    redis_conn.delete("edgebot:wrongtype")
    with pytest.raises(redis.ResponseError):
        store.update("r-aud001", cancel, then=then_fails)
    # Redis runs the rest of a MULTI past a failed command, so the record and the line moved together
    assert (store.require("r-aud001").state == CANCELLED) == ("release.cancelled" in
                                                              [e["action"] for e in _entries(redis_conn)])
    with pytest.raises(ReleaseEnded):  # an aborted write (nothing written) leaves no line either
        store.update("r-aud001", cancel, active=True)
    assert [e["action"] for e in _entries(redis_conn)].count("release.cancelled") <= 1


def test_a_write_retried_under_contention_leaves_one_line_per_decision(redis_conn: redis.Redis) -> None:
    """``mutate`` runs again after a WATCH conflict; only the transaction that commits adds its lines."""
    store = ReleaseStore(redis_conn)
    release = _release()
    release.approval = Approval(required=30, approvers=["*"], allow_requester=True, requested_at=1.0,
                                expires_at=2.0, covers={}, covers_digest="sha256:cov")
    store.create(release)

    def decide(user: str) -> None:
        def mutate(r: Release) -> None:
            assert r.approval is not None
            r.approval.decisions.append(Decision(user_id=user, outcome="approved", at=time.time(),
                                                 covers_digest="sha256:cov"))
        store.update("r-aud001", mutate)

    threads = [threading.Thread(target=decide, args=(f"U{n:02d}",)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    approved = [e["user_id"] for e in _entries(redis_conn) if e["action"] == "approval.approved"]
    assert sorted(approved) == sorted(f"U{n:02d}" for n in range(20))
    stored = store.require("r-aud001").approval
    assert stored is not None and sorted(d.user_id for d in stored.decisions) == sorted(approved)


def test_the_stream_is_capped(redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn, Settings(audit_stream_max=10))
    for n in range(300):
        store.create(_release(f"r-cap{n:03d}", many=True))
    assert redis_conn.xlen(audit.stream_key("edgebot")) < 300


# -- config ----------------------------------------------------------------------------------------------------------
def test_audit_config_is_checked() -> None:
    assert audit.parse_audit({"sink": "stdout"}) == audit.AuditConfig("stdout")
    assert audit.parse_audit({"sink": "file:/var/log/a.jsonl"}) == audit.AuditConfig("file", "/var/log/a.jsonl")
    assert audit.parse_audit({"sink": "http://127.0.0.1:9/x"}) is not None
    for table, words in [({"sink": "http://siem.example/ingest"}, "not https"),
                         ({"sink": "file:audit.jsonl"}, "absolute path"), ({"sink": "syslog"}, "not a sink"),
                         ({"sink": "stdout", "auth_header": "env:T"}, "HTTP sink only"),
                         ({"sink": "https://siem.example/i", "auth_header": "Bearer abc"}, "reference"),
                         ({"sink": "stdout", "rotate": 1}, "unknown key")]:
        with pytest.raises(ConfigError, match=words):
            audit.parse_audit(table)
    text = minimal_config("redis://127.0.0.1:1/0", source="/nowhere") + (
        '\n[audit]\nsink = "https://siem.example/i"\nauth_header = "env:EDGEBOT_AUDIT_TOKEN"\n')
    config = parse_config(tomllib.loads(text))
    assert config.audit is not None and config.audit.kind == "http"


# -- sinks ---------------------------------------------------------------------------------------------------------
def test_file_sink_appends_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    FileSink(str(path)).write(['{"id":"1-0"}'])
    FileSink(str(path)).write(['{"id":"2-0"}', '{"id":"3-0"}'])
    assert path.read_text().splitlines() == ['{"id":"1-0"}', '{"id":"2-0"}', '{"id":"3-0"}']
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(SinkError, match="cannot open the audit file"):
        FileSink(str(tmp_path / "missing" / "a.jsonl")).write(["{}"])


class _Endpoint:
    """A real HTTP server on loopback: answers each POST with the next status of ``script`` (then 200)."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.bodies, self.headers = list(script), [], []  # type: ignore[var-annotated]
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = endpoint.script.pop(0) if endpoint.script else 200
                endpoint.bodies.append((status, body.decode()))
                endpoint.headers.append(dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ingest"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint_factory() -> Iterator[Any]:
    made: list[_Endpoint] = []

    def make(script: list[int]) -> _Endpoint:
        made.append(_Endpoint(script))
        return made[-1]

    yield make
    for e in made:
        e.server.shutdown()


def test_http_sink_retries_5xx_then_delivers(endpoint_factory: Any) -> None:
    endpoint = endpoint_factory([503, 502])
    HttpSink(endpoint.url, Settings(audit_http_retries=3), authorization="Bearer tok").write(['{"id":"1-0"}'])
    assert endpoint.bodies[-1] == (200, '{"id":"1-0"}\n')
    assert all(s >= 500 for s, _ in endpoint.bodies[:-1])
    assert endpoint.headers[-1]["Content-Type"] == "application/x-ndjson"
    assert endpoint.headers[-1]["Authorization"] == "Bearer tok"


def test_http_sink_4xx_is_refused_clearly(endpoint_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    endpoint = endpoint_factory([401, 401, 401, 401, 401])
    with pytest.raises(SinkError) as refused:
        HttpSink(endpoint.url, Settings(audit_http_retries=3), authorization="Bearer SECRETTOKEN").write(["{}"])
    assert "HTTP 401" in str(refused.value) and "auth_header" in str(refused.value)
    assert "SECRETTOKEN" not in str(refused.value)
    assert len(endpoint.bodies) == 1  # a refusal is not retried


def test_http_sink_requires_https() -> None:
    with pytest.raises(SinkError, match="not https"):
        HttpSink("http://siem.example/ingest", Settings())


# -- the shipper -----------------------------------------------------------------------------------------------------
class _Flaky:
    def __init__(self, fail: bool) -> None:
        self.fail, self.lines = fail, []  # type: ignore[var-annotated]

    def write(self, lines: list[str]) -> None:
        if self.fail:
            raise SinkError("the sink is down")
        self.lines.extend(lines)


def test_shipper_is_at_least_once_and_ids_increase(redis_conn: redis.Redis, tmp_path: Path) -> None:
    settings = Settings(audit_batch=3)
    store = ReleaseStore(redis_conn, settings)
    for n in range(5):
        store.create(_release(f"r-shp{n:03d}", many=True))
    down = _Flaky(fail=True)
    with pytest.raises(SinkError):
        ship(redis_conn, settings, down)
    assert redis_conn.get(audit.shipped_key("edgebot")) is None  # nothing accepted, nothing marked shipped
    up = _Flaky(fail=False)
    assert ship(redis_conn, settings, up) == 5
    ids = [json.loads(line)["id"] for line in up.lines]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-"))) and len(set(ids)) == 5
    assert [json.loads(line)["release_id"] for line in up.lines] == [f"r-shp{n:03d}" for n in range(5)]
    assert ship(redis_conn, settings, up) == 0  # nothing new
    store.create(_release("r-shp999"))
    path = tmp_path / "a.jsonl"
    assert ship(redis_conn, settings, FileSink(str(path))) == 1
    assert json.loads(path.read_text())["release_id"] == "r-shp999"


def test_a_failed_batch_keeps_what_was_shipped_before(redis_conn: redis.Redis) -> None:
    settings = Settings(audit_batch=2)
    store = ReleaseStore(redis_conn, settings)
    for n in range(4):
        store.create(_release(f"r-bat{n:03d}", many=True))

    class FailsSecond:
        def __init__(self) -> None:
            self.calls, self.lines = 0, []  # type: ignore[var-annotated]

        def write(self, lines: list[str]) -> None:
            self.calls += 1
            if self.calls == 2:
                raise SinkError("down")
            self.lines.extend(lines)

    sink = FailsSecond()
    with pytest.raises(SinkError):
        ship(redis_conn, settings, sink)
    ship(redis_conn, settings, sink)
    assert [json.loads(line)["release_id"] for line in sink.lines] == [f"r-bat{n:03d}" for n in range(4)]


def test_one_shipper_at_a_time(redis_conn: redis.Redis) -> None:
    settings = Settings()
    ReleaseStore(redis_conn, settings).create(_release("r-lck001"))
    redis_conn.set(audit.ship_lock_key("edgebot"), "someone-else", ex=60)
    sink = _Flaky(fail=False)
    assert ship(redis_conn, settings, sink) == 0 and sink.lines == []
    redis_conn.delete(audit.ship_lock_key("edgebot"))
    assert ship(redis_conn, settings, sink) == 1


def test_stdout_sink_writes_one_line_each(redis_conn: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    ReleaseStore(redis_conn).create(_release("r-out001"))
    assert ship(redis_conn, Settings(), StdoutSink()) == 1
    (printed,) = capsys.readouterr().out.splitlines()
    assert json.loads(printed)["action"] == "publish.requested"
    assert SECRETS["command_text"] not in printed and SECRETS["intake_seal"] not in printed


def test_lines_trimmed_before_shipping_are_reported_once(redis_conn: redis.Redis,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(audit_stream_max=10)
    store = ReleaseStore(redis_conn, settings)
    store.create(_release("r-trm000", many=True))
    sink = _Flaky(fail=False)
    assert ship(redis_conn, settings, sink) == 1  # the sink took the first; then it is down while 300 more happen
    for n in range(1, 301):
        store.create(_release(f"r-trm{n:03d}", many=True))
    kept = redis_conn.xlen(audit.stream_key("edgebot"))
    assert kept < 300
    with caplog.at_level("ERROR", logger="workers.audit_ship"):
        assert ship(redis_conn, settings, sink) == kept
        assert ship(redis_conn, settings, sink) == 0
    reported = [r.getMessage() for r in caplog.records if "trimmed" in r.getMessage()]
    assert len(reported) == 1 and reported[0].startswith(f"{300 - kept} audit line(s)")
    ids = [json.loads(line)["release_id"] for line in sink.lines]
    assert ids[0] == "r-trm000" and ids[-1] == "r-trm300" and len(ids) == len(set(ids))


def test_config_check_says_what_the_sink_will_get(tmp_path: Path) -> None:
    from workers.audit_ship import sink_problem

    assert "will create" in sink_problem(audit.AuditConfig("file", str(tmp_path / "a.jsonl")))
    with pytest.raises(SinkError, match="does not exist or is not writable"):
        sink_problem(audit.AuditConfig("file", str(tmp_path / "missing" / "a.jsonl")))
    loose = tmp_path / "loose.jsonl"
    loose.write_text("")
    loose.chmod(0o644)
    assert "others can read it" in sink_problem(audit.AuditConfig("file", str(loose)))
    assert "not probed" in sink_problem(audit.AuditConfig("http", "https://siem.example/ingest"))


def test_config_check_of_a_publish_worker_checks_the_sink(tmp_path: Path) -> None:
    import copy

    from edgebot.secrets import SecretResolver
    from tests.test_config import BASE
    from workers.config_check import role_references, run_checks

    data = copy.deepcopy(BASE)
    data["audit"] = {"sink": f"file:{tmp_path}/nowhere/audit.jsonl"}
    config = parse_config(data)
    lines = [str(line) for line in run_checks(config, SecretResolver({}), timeout=1, roles=["publish"])]
    (sink,) = [line for line in lines if " audit sink: " in line]
    assert sink.startswith("FAIL audit sink:") and "does not exist or is not writable" in sink
    data["audit"] = {"sink": "https://siem.example/ingest", "auth_header": "env:EDGEBOT_AUDIT_AUTH"}
    config = parse_config(data)
    assert ("audit.auth_header", config.audit.auth_header) in role_references(config, "publish")  # type: ignore[union-attr]
    assert not [r for r in role_references(config, "build") + role_references(config, "bot")
                if r[0] == "audit.auth_header"]


def test_a_slow_sink_never_holds_up_the_worker_loop(monkeypatch: pytest.MonkeyPatch, redis_conn: redis.Redis) -> None:
    """The worker's loop starts a pass and goes on; while that pass runs, the next loop starts no second one."""
    import workers.audit_ship as audit_ship

    release, started = threading.Event(), []

    def slow(connection: Any, settings: Settings) -> int:
        started.append(1)
        release.wait(30)
        return 0

    monkeypatch.setattr(audit_ship, "ship_with_worker_context", slow)
    first = audit_ship.ship_in_background(redis_conn, Settings())
    assert audit_ship.ship_in_background(redis_conn, Settings(), first) is first  # returned at once, still running
    release.set()
    first.join(30)
    assert not first.is_alive() and started == [1]
    second = audit_ship.ship_in_background(redis_conn, Settings(), first)
    second.join(30)
    assert second is not first and started == [1, 1]
