"""A compromised build worker, played with the build role's own Redis credentials (edgebot.redis_acl), cannot get
anything shipped that approvers did not approve.

The stack runs every process as its role's Redis ACL user (the sandbox's Redis has ACLs on, as deploy/ has): the bot
as ``edgebot-bot``, publish workers as ``edgebot-publish``, build workers as ``edgebot-build``. The attacker here
connects exactly as a build worker does and tries what a build worker running a hostile Dockerfile would: forge a
quorum, change a digest or the deployment in the record, enqueue a publish job, push a job naming another step onto
a queue it may write, report a forged digest through its own channel, and read secrets. Each is refused, nothing is
signed or published, and the publish worker that detects a forgery fails the release with a security alert in its
thread. What counts is read back from Redis (as the administrator), the Exchange stand-in and the Slack stand-in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue, Worker

from edgebot import redis_acl
from edgebot.config import load_config
from edgebot.errors import SecretUnavailable
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, EdgebotJob, Step, build_queue, enqueue_step
from edgebot.release import Decision, Release
from edgebot.steps import StepEntry, StepLedger
from edgebot.store import ReleaseStore
from sandbox.stack import (
    APP_TOKEN,
    BOT_TOKEN,
    CHANNEL_ID,
    EXCHANGE_PASSWORD,
    ORG,
    PULL_PASSWORD,
    SIGNING_SECRET,
    Stack,
    wait_until,
)
from workers.build_report import BuildReport, report_key
from workers.vault import build_resolver

pytestmark = pytest.mark.slow

APPROVALS = """
[approvals]
approvers = ["U0APPROVER", "U0APPROVER2"]
required = 2

[approvals.services.hello-free]
required = 0

[approvals.services.hello-arm]
required = 0
"""
VERSIONS = tuple(f"7.0.{n}" for n in range(6))
FORGED_DIGEST = "sha256:" + "ab" * 32
ALERT = "Security check failed"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("acl")
    services = {"hello-free": ["amd64"], "hello-arm": ["arm64"], "hello-b": ["amd64"], "hello-c": ["amd64"]}
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=VERSIONS, arches=("amd64",),
               extra_services=services, extra_toml=APPROVALS) as running:
        running.wait_workers(2)
        yield running


@pytest.fixture
def attacker(stack: Stack) -> Iterator[redis.Redis]:
    """A connection with the build role's own credentials, exactly what a build worker process holds."""
    assert stack.redis_server is not None
    conn = stack.redis_server.role_client(redis_acl.BUILD)
    yield conn
    conn.close()


def _request(stack: Stack, text: str) -> str:
    before = set(stack.release_ids())
    response = stack.command(text)
    assert response.status_code == 200, response.text
    (release_id,) = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the release record")
    return str(release_id)


def _awaiting_approval(stack: Stack, release_id: str) -> Release:
    store = stack.store()

    def carded() -> Release | None:
        release = store.require(release_id)
        assert not release.is_final, (release.state, release.error, stack.log_tail("worker-publish"))
        return release if release.approval is not None and release.approval.card_ts else None

    return wait_until(carded, timeout=240, interval=0.25, what="the approval card")  # type: ignore[no-any-return]


def _raw(stack: Stack, release_id: str) -> bytes:
    raw = stack.redis().get(f"edgebot:release:{release_id}")
    assert raw is not None
    return raw  # type: ignore[return-value]


def _published(stack: Stack) -> dict[str, dict[str, Any]]:
    return stack.exchange.services(ORG)


def _thread(stack: Stack, release: Release) -> str:
    return json.dumps(stack.slack.thread(CHANNEL_ID, release.message_ts))


def test_every_process_runs_as_its_roles_acl_user_and_a_release_ships(stack: Stack) -> None:
    admin = stack.redis()
    admin.execute_command("ACL", "LOG", "RESET")
    release = stack.wait_final(_request(stack, "publish hello-free 7.0.0 --registry local"), timeout=300)
    assert release.state == "succeeded", (release.error, stack.log_tail("worker-publish"),
                                          stack.log_tail("worker-build-amd64"))
    users = {c["name"].split("-")[0]: c["user"] for c in admin.client_list() if c.get("name")}
    assert users.get("build") == "edgebot-build" and users.get("publish") == "edgebot-publish", users
    assert admin.execute_command("ACL", "LOG") == [], "no role was refused anything a release needs"
    with pytest.raises(redis.AuthenticationError):
        assert stack.redis_server is not None
        redis.Redis(port=stack.redis_server.port).ping()  # nobody gets in without a password


def test_a_build_worker_cannot_forge_a_quorum(stack: Stack, attacker: redis.Redis) -> None:
    release_id = _request(stack, "publish hello 7.0.1 --registry local")
    _awaiting_approval(stack, release_id)
    before = _raw(stack, release_id)
    readable = attacker.get(f"edgebot:release:{release_id}")  # reading the record is allowed
    assert readable == before
    forged = Release.from_dict(json.loads(readable))
    assert forged.approval is not None
    covers = forged.approval.covers_digest
    forged.approval.decisions = [Decision(user_id=u, outcome="approved", at=time.time(), covers_digest=covers)
                                 for u in ("U0X", "U0Y")]
    forged.approval.quorum_at = time.time()
    body = json.dumps(forged.to_dict())
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.set(f"edgebot:release:{release_id}", body)
    with pytest.raises(redis.exceptions.NoPermissionError):
        ReleaseStore(attacker).update(release_id, lambda r: setattr(r, "state", "publishing"))
    with pytest.raises(redis.exceptions.ResponseError, match="(?i)no permissions|NOPERM"):
        attacker.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, f"edgebot:release:{release_id}", body)
    attacker.set(report_key("edgebot", release_id, "amd64"), body)  # its own key: allowed, but no way to move it
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.rename(report_key("edgebot", release_id, "amd64"), f"edgebot:release:{release_id}")
    assert _raw(stack, release_id) == before
    assert not any(s.get("version") == "7.0.1" for s in _published(stack).values())
    stored = stack.store().require(release_id).approval
    assert stored is not None and not stored.decisions


def test_the_audit_stream_is_written_by_the_bot_and_publish_roles_only(stack: Stack, attacker: redis.Redis) -> None:
    """The bot (a release's request) and the publish worker (its publish) append to ``edgebot:audit`` in the MULTI
    of their record writes; the build role may neither append a made-up action, nor trim or delete the trail, nor
    read it, nor move the shipper's mark (edgebot.audit)."""
    (release_id,) = [r.release_id for r in stack.store().history(ORG, "hello-free") if r.version == "7.0.0"]
    admin = stack.redis()
    mine = [json.loads(f[b"line"]) for _, f in admin.xrange("edgebot:audit")  # type: ignore[union-attr]
            if json.loads(f[b"line"])["release_id"] == release_id]
    assert [e["action"] for e in mine] == ["publish.requested", "publish.completed", "release.succeeded"]
    length = admin.xlen("edgebot:audit")
    forged = json.dumps({"action": "approval.approved", "release_id": release_id, "user_id": "U0X"})
    for attempt in (lambda: attacker.xadd("edgebot:audit", {"line": forged}),
                    lambda: attacker.xtrim("edgebot:audit", maxlen=0), lambda: attacker.delete("edgebot:audit"),
                    lambda: attacker.xrange("edgebot:audit"), lambda: attacker.set("edgebot:audit-shipped", "9-9"),
                    lambda: attacker.get("edgebot:audit-shipped")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert admin.xlen("edgebot:audit") == length


def test_a_build_worker_cannot_change_a_digest_or_the_deployment_in_the_record(
        stack: Stack, attacker: redis.Redis) -> None:
    (release_id,) = [r.release_id for r in stack.store().history(ORG, "hello-free") if r.version == "7.0.0"]
    before = _raw(stack, release_id)
    data = json.loads(before)
    data["results"]["amd64"]["digest"] = FORGED_DIGEST
    data["results"]["amd64"]["deployment"] = json.dumps({"services": {"x": {"binds": ["/:/host"], "privileged": True}}})
    key = f"edgebot:release:{release_id}"
    for attempt in (lambda: attacker.set(key, json.dumps(data)), lambda: attacker.delete(key),
                    lambda: attacker.expire(key, 1), lambda: attacker.append(key, "x")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    assert _raw(stack, release_id) == before


def test_a_build_worker_cannot_enqueue_a_publish_job(stack: Stack, attacker: redis.Redis) -> None:
    release_id = _request(stack, "publish hello-b 7.0.2 --registry local")
    _awaiting_approval(stack, release_id)
    admin = stack.redis()
    queued = admin.llen(f"rq:queue:{PUBLISH_QUEUE}")
    settings = stack.store().settings
    with pytest.raises(redis.exceptions.NoPermissionError):
        enqueue_step(attacker, settings, Step.PUBLISH, release_id)
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.rpush(f"rq:queue:{PUBLISH_QUEUE}", f"{release_id}-publish-release")
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.hset(f"rq:job:{release_id}-publish-release", "func_name", "workers.jobs.publish_release")

    # nor through the reaper: the ledger of publish-side steps is not its to write, and a build-step entry it forges
    # naming the publish function is not resumed (the reaper runs in publish workers, as edgebot-publish)
    job_id = f"{release_id}-publish-release"
    forged = StepEntry(step="publish", job_id=job_id, base_job_id=job_id, function="workers.jobs.publish_release",
                       args=[release_id], queue=PUBLISH_QUEUE)
    ledger = StepLedger(attacker, settings)
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.hset(ledger.steps_key(release_id), "publish", forged.to_json())
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.hset(f"edgebot:steps:{release_id}", "build-amd64", forged.to_json())
    as_build = dataclasses.replace(forged, step="build-amd64")
    attacker.hset(ledger.steps_key(release_id, "build-amd64"), "build-amd64", as_build.to_json())  # allowed
    attacker.zadd(ledger.inflight_key, {release_id: time.time()})
    wait_until(lambda: f"{release_id}: step build-amd64 names job function" in stack.log_tail("worker-publish", 400),
               timeout=120, what="the reaper to look at the forged entry")
    assert admin.llen(f"rq:queue:{PUBLISH_QUEUE}") == queued
    assert not admin.exists(f"rq:job:{release_id}-publish-release")
    assert not admin.exists(f"rq:job:{release_id}-publish-release-a2")
    assert not any(s.get("version") == "7.0.2" for s in _published(stack).values())
    attacker.hdel(ledger.steps_key(release_id, "build-amd64"), "build-amd64")


def test_a_job_naming_another_step_on_a_queue_the_build_role_may_write_is_refused_with_an_alert(
        stack: Stack, attacker: redis.Redis) -> None:
    release_id = _request(stack, "publish hello-c 7.0.3 --registry local")
    _awaiting_approval(stack, release_id)
    job_id = f"{release_id}-build-forged"
    reports = Queue(redis_acl.BUILD_REPORTS_QUEUE, connection=attacker, job_class=EdgebotJob, serializer=SERIALIZER)
    reports.enqueue_call("workers.jobs.publish_release", args=(release_id,), job_id=job_id)  # the ACL lets it in
    builds = Queue(build_queue("amd64"), connection=attacker, job_class=EdgebotJob, serializer=SERIALIZER)
    builds.enqueue_call("workers.jobs.sign_release", args=(release_id,), job_id=f"{release_id}-build-forged-2")

    admin = stack.redis()
    for jid in (job_id, f"{release_id}-build-forged-2"):
        key = f"rq:job:{jid}"
        wait_until(lambda key=key: admin.hget(key, "status") == b"failed", timeout=120,  # type: ignore[misc]
                   what=f"job {jid} to be refused")
    release = stack.wait_final(release_id, timeout=60)
    assert release.state == "failed" and ALERT in (release.error or "")
    wait_until(lambda: ALERT in _thread(stack, release), timeout=60, what="the alert in the thread")
    assert not any(s.get("version") == "7.0.3" for s in _published(stack).values())
    assert "refusing to run job" in stack.log_tail("worker-publish", 400)


def test_a_forged_digest_reported_by_a_build_worker_is_caught_nothing_signed_or_published(
        stack: Stack, attacker: redis.Redis) -> None:
    """The attacker *is* the arm64 build worker: it registers on the arm64 queue (its ACL allows that), takes the
    build job and reports a digest it never pushed, through the one channel a build worker has."""
    arm = Queue(build_queue("arm64"), connection=attacker, job_class=EdgebotJob, serializer=SERIALIZER)
    fake = Worker([arm], connection=attacker, name=f"build-arm64-attacker-{os.getpid()}", job_class=EdgebotJob,
                  serializer=SERIALIZER)
    fake.register_birth()
    try:
        fake.heartbeat()
        release_id = _request(stack, "publish hello-arm 7.0.4 --registry local")
        job_id = Step.BUILD.job_id(release_id, "arm64")
        wait_until(lambda: job_id.encode() in attacker.lrange(arm.key, 0, -1), timeout=120,
                   what="the arm64 build job")
        report = BuildReport(seq=1, steps={"build": ["done", "forged"], "push": ["done", FORGED_DIGEST[:19]]},
                             image_id=FORGED_DIGEST, digest=FORGED_DIGEST)
        attacker.set(report_key("edgebot", release_id, "arm64"), report.to_json())
        enqueue_step(attacker, stack.store().settings, Step.APPLY_BUILD_REPORT, release_id, "arm64", "1")
        release = stack.wait_final(release_id, timeout=240)
    finally:
        fake.register_death()
    assert release.state == "failed" and ALERT in (release.error or ""), (release.state, release.error)
    assert not release.result("arm64").signature, "nothing was signed"
    wait_until(lambda: ALERT in _thread(stack, release), timeout=60, what="the alert in the thread")
    assert not any(s.get("version") == "7.0.4" for s in _published(stack).values())


def test_a_build_worker_holds_no_slack_exchange_signing_or_seal_secret(stack: Stack, attacker: redis.Redis) -> None:
    proc = stack.processes["worker-build-amd64"]
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    for secret in (BOT_TOKEN, SIGNING_SECRET, APP_TOKEN, EXCHANGE_PASSWORD, PULL_PASSWORD):
        assert secret.encode() not in environ
    env = dict(item.split("=", 1) for item in environ.decode().split("\0") if "=" in item)
    config = load_config(stack.build_config_path, environ=env)
    resolver = build_resolver(config)
    refs = [config.slack.bot_token, config.slack.signing_secret, config.exchange.password, config.signing.private_key,
            config.seal_key, config.registries["local"].pull_password]
    for ref in refs:
        assert ref is not None
        with pytest.raises(SecretUnavailable):
            resolver.resolve(ref)
    for command in (("ACL", "LIST"), ("ACL", "GETUSER", "edgebot-publish"), ("CONFIG", "GET", "*"),
                    ("KEYS", "*"), ("MONITOR",), ("FLUSHALL",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attacker.execute_command(*command)
    with pytest.raises(redis.exceptions.NoPermissionError):
        attacker.publish("rq:pubsub:publish", json.dumps({"command": "shutdown"}))  # no stopping other workers
