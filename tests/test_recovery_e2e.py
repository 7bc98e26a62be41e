"""Crash recovery with real processes: SIGKILLed `rq worker` processes (alone, and with their work horses) in the
middle of a build, a push, a sign and a publish; a killed scheduler; a Redis SIGKILL and restart with AOF; two
identical commands at once; one publish per service.

Every release must end final, publish exactly once (the Exchange stand-in's write log is counted), reuse what its
completed steps stored, and say in its thread that it resumed. Leases and intervals are seconds here (settings), and
nothing waits for RQ's own abandoned-job detection (90 s execution TTL, 10-minute maintenance by default).

Seconds-long leases expire for real when both cores are busy: a starved horse that misses its renewals has its step
resumed once more, which is recovery doing its job. So the tests assert invariants (succeeded, published once,
resumed at least once and only the step that was hit, nothing left behind), never an exact number of attempts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rq.job import Job, JobStatus

from edgebot.jobs import SERIALIZER
from edgebot.release import Release
from edgebot.steps import StepLedger
from sandbox.processes import RedisServer, add_commit
from sandbox.stack import CHANNEL_ID, FAST_RECOVERY, ORG, Stack, wait_until
from workers.build_report import BuildReport, report_key

pytestmark = pytest.mark.slow

DUPLICATE_WINDOW = 120
"""Seconds in which the same command is the same release: two commands sent at once must land within it even when both
cores are busy (every other command of this module has a user of its own, so nothing else is deduplicated)."""
SETTINGS = {**FAST_RECOVERY, "duplicate_window": DUPLICATE_WINDOW}
SURVIVOR_LEASE_TTL = 30 * FAST_RECOVERY["lease_ttl"]
"""The lease TTL of a build worker whose horse must keep its step: many times any stall a loaded machine causes, so
only a real bug (resuming a step whose horse is alive) can hand the step to a new attempt."""
IN_FLIGHT = FAST_RECOVERY["lease_ttl"] / 2
"""Seconds the Exchange holds the POST a test kills (or freezes) its caller during: the test's reaction time, and
still well under the lease, so the POST lands before the step is resumed (the resumed step must find it done)."""
STEP_END = 60.0
"""Seconds after a release's summary for its last steps to mark themselves done (they flush the thread first)."""
REACH_STEP = 240.0
"""Seconds for a new release to reach a given step (prepare, build, push, sign come before publish), both cores busy."""
FINAL = 240.0
"""Seconds for a release to end, resumed steps included, with both cores busy."""
HERE = Path(__file__).resolve().parent.parent
DEFINITION = (HERE / "examples/hello/horizon/service.definition.json").read_text()
PUBLISH_WORKERS = ("publish-a", "publish-b")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("recovery")
    with RedisServer(workdir / "redis", appendonly=True) as redis_server:  # AOF on, as deploy/ configures it
        running = Stack(workdir, docker=docker_daemon, registry=registry, redis_server=redis_server,
                        settings=SETTINGS)
        try:
            running.start(workers=False)
            _restore_workers(running)
            yield running
        finally:
            running.stop()


def _restore_workers(stack: Stack) -> None:
    """Two publish workers (so one can take over the other's scheduler) and one amd64 build worker."""
    for name in PUBLISH_WORKERS:
        if f"worker-{name}" not in stack.processes:
            stack.start_worker(name, "--publish")
    if "worker-build-amd64" not in stack.processes:
        stack.start_worker("build-amd64", "--arch", "amd64")
    stack.wait_workers(3)


def _version(stack: Stack, version: str, dockerfile: str) -> None:
    add_commit(stack.source_path, {"Dockerfile.amd64": dockerfile, "horizon/service.definition.json": DEFINITION,
                                   "index.html": f"{version}\n"}, tag=f"v{version}")


def _sleepy(seconds: int) -> str:
    return (f'FROM amd64/busybox:1.36\nRUN ["/bin/busybox", "sleep", "{seconds}"]\n'
            'COPY index.html /www/index.html\nCMD ["/bin/busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]\n')


def _command(stack: Stack, text: str, user_id: str) -> str:
    before = set(stack.release_ids())
    answer = stack.command(text, user_id=user_id).json()
    assert "Queued" in answer["text"], answer
    (release_id,) = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the new release")
    return str(release_id)


def _wait(stack: Stack, release_id: str, what: str, check: Any, timeout: float = REACH_STEP) -> Release:
    store = stack.store()

    def ready() -> Release | None:
        release = store.require(release_id)
        return release if check(release) else None

    return wait_until(ready, timeout=timeout, interval=0.05, what=what)  # type: ignore[no-any-return]


def _build_report(stack: Stack, release_id: str, arch: str = "amd64") -> BuildReport | None:
    """What the build worker itself reported (before a publish worker applies it to the record)."""
    raw = stack.redis().get(report_key(stack.store().settings.key_prefix, release_id, arch))
    return None if raw is None else BuildReport.from_json(raw)


def _push_status(stack: Stack, release_id: str) -> str:
    report = _build_report(stack, release_id)
    return report.steps.get("push", [""])[0] if report is not None else ""


def _writes(stack: Stack, mark: int) -> list[tuple[str, str, int]]:
    return [(r["method"], r["path"], r["status"]) for r in stack.exchange.requests()[mark:]
            if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]


def _assert_published_once(stack: Stack, mark: int, version: str) -> None:
    """One service created, one key stored, one dockauth added — and no service ever overwritten."""
    sid = f"hello_{version}_amd64"
    ok = [(m, p) for m, p, status in _writes(stack, mark) if status == 201]
    assert ok.count(("POST", f"/edge-exchange/v1/orgs/{ORG}/services")) == 1, _writes(stack, mark)
    assert ok.count(("PUT", f"/edge-exchange/v1/orgs/{ORG}/services/{sid}/keys/edgebot.public.pem")) == 1
    assert ok.count(("POST", f"/edge-exchange/v1/orgs/{ORG}/services/{sid}/dockauths")) == 1
    assert not [w for w in _writes(stack, mark) if w[0] == "PUT" and w[1].endswith(f"/services/{sid}")]


def _assert_answer_unseen(stack: Stack, mark: int) -> None:
    """Right after the caller of the delayed POST was killed or frozen: the POST is still unanswered (the stand-in
    records an answer before sending it), so the caller never saw it. Fails clearly if the test reacted too late."""
    answered = [w for w in _writes(stack, mark) if w[0] == "POST" and w[1].endswith("/services")]
    assert not answered, f"the POST was answered before its caller stopped (raise IN_FLIGHT): {answered}"


def _thread(stack: Stack, release: Release) -> str:
    return json.dumps(stack.slack.thread(CHANNEL_ID, release.message_ts))


def _assert_resumed(stack: Stack, release: Release, step: str, label: str) -> int:
    """``step`` (``label`` in the thread) was resumed at least once, and nothing else was; returns its last attempt.

    How often it was resumed depends on the machine (a starved horse can miss its renewals and be resumed again),
    so no exact count: the ledger's attempt and the ``-aN`` job id agree, every ``resumed`` event is for ``step``,
    and the thread says so with an attempt of 2 or more."""
    entry = StepLedger(stack.redis(), stack.store().settings).entries(release.release_id)[step]
    assert entry.attempt >= 2 and entry.job_id == f"{entry.base_job_id}-a{entry.attempt}", entry
    resumed = [e for e in release.events if e["what"] == "resumed"]
    assert resumed and all(e["step"] == step for e in resumed), resumed
    thread = _thread(stack, release)
    said = [int(n) for n in re.findall(rf"Resumed \*{re.escape(label)}\* \(attempt (\d+)\)", thread)]
    assert said and min(said) >= 2 and max(said) <= entry.attempt, (said, entry)
    return entry.attempt


def _worker_running(stack: Stack, job_id: str) -> str:
    """The Stack process name of the worker that runs ``job_id``."""
    from rq.exceptions import NoSuchJobError

    def name() -> str | None:
        try:
            return Job.fetch(job_id, connection=stack.redis(), serializer=SERIALIZER).worker_name or None
        except NoSuchJobError:  # not enqueued yet
            return None

    worker = wait_until(name, timeout=REACH_STEP, what=f"a worker to take {job_id}")
    return next(n for n in stack.processes if n.startswith("worker-") and str(worker).startswith(n[len("worker-"):]
                                                                                                + "-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _diagnose(stack: Stack, release_id: str) -> str:
    """What the ledger, the leases and RQ know about a release that did not end (for the failure message)."""
    from rq.exceptions import NoSuchJobError

    lines = []
    for step, entry in StepLedger(stack.redis(), stack.store().settings).entries(release_id).items():
        try:
            job = Job.fetch(entry.job_id, connection=stack.redis(), serializer=SERIALIZER)
            status = f"{job.get_status()} retries_left={job.retries_left}"
        except NoSuchJobError:
            status = "no such job"
        lease = stack.redis().get(f"edgebot:lease:{release_id}:{step}")
        lines.append(f"{step}: {entry} job={status} lease={lease!r}")
    return "\n".join(lines)


def _finish(stack: Stack, release_id: str) -> Release:
    _restore_workers(stack)
    try:
        release = stack.wait_final(release_id, timeout=FINAL)
    except TimeoutError as exc:
        raise AssertionError(_diagnose(stack, release_id)) from exc
    assert release.state == "succeeded", (release.error, release.error_detail)
    store = stack.store()
    wait_until(lambda: store.require(release_id).summary_ts, timeout=30, what="the summary")
    ledger = StepLedger(stack.redis(), store.settings)
    try:  # a step marks itself done (and frees its lease, atomically) a moment after the state it wrote
        wait_until(lambda: all(e.status == "done" for e in ledger.entries(release_id).values()), timeout=STEP_END,
                   what="every step to be marked done")
    except TimeoutError as exc:
        raise AssertionError(_diagnose(stack, release_id)) from exc
    assert not list(stack.redis().scan_iter(match=f"edgebot:lease:{release_id}:*")), "no lease left behind"
    assert stack.store().publish_lock_holder(ORG, "hello") is None, "the publish lock ended with the release"
    return store.require(release_id)


def _settled(stack: Stack, release_id: str) -> Release:
    """The record once the job of each of its steps has ended (thread flushes included): nothing writes it any more."""
    from rq.exceptions import NoSuchJobError

    ledger = StepLedger(stack.redis(), stack.store().settings)

    def ended(job_id: str) -> bool:
        try:
            status = Job.fetch(job_id, connection=stack.redis(), serializer=SERIALIZER).get_status()
        except NoSuchJobError:  # its result expired: long over
            return True
        return status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)

    wait_until(lambda: all(ended(e.job_id) for e in ledger.entries(release_id).values()), timeout=STEP_END,
               what="the jobs of every step to end")
    return stack.store().require(release_id)


# -- the `rq worker` process alone ----------------------------------------------------------------------------------

def test_worker_killed_alone_its_horse_finishes_the_build_and_publishes_once(stack: Stack) -> None:
    # this build worker's horse renews as usual, but a stall of the loaded machine cannot cost it the lease
    stack.stop_process("worker-build-amd64")
    stack.start_worker("build-amd64", "--arch", "amd64",
                       env={**stack.env(), "EDGEBOT_LEASE_TTL": str(SURVIVOR_LEASE_TTL)})
    stack.wait_workers(3)
    _version(stack, "2.0.1", _sleepy(6))
    mark = len(stack.exchange.requests())
    release_id = _command(stack, "publish hello 2.0.1 --registry local", "U0ALONE")
    _wait(stack, release_id, "the build to run", lambda r: r.arch_step("build", "amd64").status == "running")
    horses = stack.kill_worker("worker-build-amd64", horse=False)
    assert len(horses) == 1 and _alive(horses[0]), "RQ's work horse survives its worker (own process group)"
    release = _finish(stack, release_id)
    wait_until(lambda: not _alive(horses[0]), timeout=60, what="the orphaned horse to exit")
    _assert_published_once(stack, mark, "2.0.1")
    entries = StepLedger(stack.redis(), stack.store().settings).entries(release_id)
    assert entries["build-amd64"].attempt == 1, "the surviving horse kept its lease: the build was not resumed"
    # (another step may have been resumed if a starved horse of its own missed its renewals: not this test's business)
    assert not [e for e in release.events if e["what"] == "resumed" and e["step"] == "build-amd64"]


# -- work horse and worker together ---------------------------------------------------------------------------------

def test_killed_mid_build_resumes_the_build_and_a_second_publish_is_refused_meanwhile(stack: Stack) -> None:
    _version(stack, "2.0.2", _sleepy(8))
    _version(stack, "2.0.3", _sleepy(0))
    mark = len(stack.exchange.requests())
    release_id = _command(stack, "publish hello 2.0.2 --registry local", "U0MIDBUILD")
    _wait(stack, release_id, "the build to run", lambda r: r.arch_step("build", "amd64").status == "running")

    before = set(stack.release_ids())
    refused = stack.command("publish hello 2.0.3 --registry local", user_id="U0HOTFIX").json()
    assert refused["response_type"] == "ephemeral"
    assert f"is being published by <@U0MIDBUILD>: release `{release_id}`" in refused["text"], refused
    assert "since <!date^" in refused["text"] and f"/edge cancel {release_id}" in refused["text"]
    assert set(stack.release_ids()) == before, "the refused command wrote nothing"

    stack.kill_worker("worker-build-amd64", horse=True)
    killed = StepLedger(stack.redis(), stack.store().settings).entries(release_id)["build-amd64"]
    assert killed.status == "running", "the kill landed in the middle of the build"
    release = _finish(stack, release_id)
    _assert_published_once(stack, mark, "2.0.2")
    _assert_resumed(stack, release, "build-amd64", "build (amd64)")
    digest, _ = stack.registry.manifest("edge/hello_amd64", "2.0.2")  # type: ignore[union-attr]
    assert digest == release.results["amd64"].digest


def test_killed_mid_push_resumes_the_push_and_reuses_the_built_image(stack: Stack) -> None:
    big = ('FROM amd64/busybox:1.36\n'
           'RUN ["/bin/busybox", "dd", "if=/dev/urandom", "of=/blob", "bs=1048576", "count=160"]\n'
           'COPY index.html /www/index.html\n')
    _version(stack, "2.0.4", big)
    mark = len(stack.exchange.requests())
    release_id = _command(stack, "publish hello 2.0.4 --registry local", "U0MIDPUSH")
    # the build worker's own report, not the record: a publish worker applies reports to the record a moment later
    # (workers/build_report.py), and under load the push can be over by the time the record says it started
    wait_until(lambda: _push_status(stack, release_id) == "running", timeout=REACH_STEP, interval=0.05,
               what="the push to start")
    stack.kill_worker("worker-build-amd64", horse=True)
    killed = _build_report(stack, release_id)
    assert killed is not None and killed.digest == "", "the kill landed in the middle of the push"
    pushing = _wait(stack, release_id, "the record to say the build is done",
                    lambda r: r.arch_step("build", "amd64").status == "done")
    built = killed.image_id
    built_at = pushing.arch_step("build", "amd64").ended_at
    assert built
    release = _finish(stack, release_id)
    _assert_published_once(stack, mark, "2.0.4")
    assert release.results["amd64"].image_id == built, "the resumed step pushed the image it had built"
    assert release.arch_step("build", "amd64").ended_at == built_at, "and did not build again"
    digest, _ = stack.registry.manifest("edge/hello_amd64", "2.0.4")  # type: ignore[union-attr]
    assert digest == release.results["amd64"].digest
    _assert_resumed(stack, release, "build-amd64", "build (amd64)")


def test_killed_mid_publish_resumes_with_the_stored_signature_and_writes_once(stack: Stack) -> None:
    _version(stack, "2.0.5", _sleepy(0))
    mark = len(stack.exchange.requests())
    delayed = stack.exchange.delayed_requests()
    stack.exchange.delay_next("POST", rf"/orgs/{ORG}/services$", IN_FLIGHT)  # reaches the Exchange; answer lost
    release_id = _command(stack, "publish hello 2.0.5 --registry local", "U0MIDPUB")
    signed = _wait(stack, release_id, "the signature", lambda r: bool(r.results.get("amd64")
                                                                      and r.results["amd64"].signature))
    publisher = _worker_running(stack, f"{release_id}-publish-release")
    wait_until(lambda: stack.exchange.delayed_requests() > delayed, timeout=60, interval=0.02,
               what="the POST to be in flight")
    stack.kill_worker(publisher, horse=True)
    _assert_answer_unseen(stack, mark)
    release = _finish(stack, release_id)
    _assert_published_once(stack, mark, "2.0.5")
    service = stack.exchange.service(ORG, "hello_2.0.5_amd64")
    assert service is not None
    assert service["deploymentSignature"] == signed.results["amd64"].signature == release.results["amd64"].signature
    assert service["deployment"] == signed.results["amd64"].deployment
    _assert_resumed(stack, release, "publish", "publish")


def test_frozen_horse_loses_its_lease_and_cannot_write_late(stack: Stack) -> None:
    """A work horse paused (SIGSTOP: a GC pause, a frozen VM) in the middle of publish outlives its lease; another
    worker resumes the step and finishes the release; woken up, the old horse stops at its next write."""
    _version(stack, "2.0.9", _sleepy(0))
    mark = len(stack.exchange.requests())
    delayed = stack.exchange.delayed_requests()
    stack.exchange.delay_next("POST", rf"/orgs/{ORG}/services$", IN_FLIGHT)
    release_id = _command(stack, "publish hello 2.0.9 --registry local", "U0FROZEN")
    publisher = _worker_running(stack, f"{release_id}-publish-release")
    wait_until(lambda: stack.exchange.delayed_requests() > delayed, timeout=60, interval=0.02,
               what="the POST to be in flight")
    (horse,) = stack.horse_pids(publisher)
    os.kill(horse, signal.SIGSTOP)
    try:
        _assert_answer_unseen(stack, mark)
        _finish(stack, release_id)  # resumed by the other publish worker while this horse is frozen
        release = _settled(stack, release_id)  # the record as the resumed job left it, before the horse wakes
    finally:
        os.kill(horse, signal.SIGCONT)
    wait_until(lambda: not _alive(horse), timeout=60, what="the woken horse to end its job")
    wait_until(lambda: "lost its lease" in stack.log_tail(publisher, 100_000), timeout=30,
               what="the woken horse to find its lease lost")
    _assert_published_once(stack, mark, "2.0.9")
    key_puts = [w for w in _writes(stack, mark) if w[0] == "PUT" and "/keys/" in w[1]]
    assert len(key_puts) == 1, f"the woken horse sent nothing after its POST: {key_puts}"
    assert stack.store().require(release_id).updated_at == release.updated_at, "nor wrote to the record"
    _assert_resumed(stack, release, "publish", "publish")


def test_killed_mid_sign_resumes_the_sign_and_reuses_the_digest(stack: Stack, tmp_path: Path) -> None:
    """The signing key comes from Vault (a real OpenBao); Vault hangs (SIGSTOP) while sign reads the key, and the
    publish worker running sign is killed with its horse."""
    from sandbox.bao import BaoServer

    with BaoServer(tmp_path / "bao") as bao:
        bao.put_secret("edgebot/publish", {"signing_key": stack.key_file.read_text()})
        bao.write_policy("edgebot-sign", bao.read_only_policy(["secret/data/edgebot/publish"]))
        token = bao.create_token(["edgebot-sign"])
        config = stack.config_path.read_text().replace(f'"file:{stack.key_file}"',
                                                        '"vault:secret/data/edgebot/publish#signing_key"')
        config += f'\n[vault]\nurl = "{bao.url}"\ntoken = "env:EDGEBOT_VAULT_TOKEN"\ntimeout = 120\n'
        vault_config = tmp_path / "edgebot-vault.toml"
        vault_config.write_text(config)
        for name in PUBLISH_WORKERS:
            stack.stop_process(f"worker-{name}")
        env = {**stack.env(), "EDGEBOT_VAULT_TOKEN": token}
        for name in ("vault-a", "vault-b"):
            stack.start_worker(name, "--publish", config=vault_config, env=env)
        stack.wait_workers(3)
        _version(stack, "2.0.6", _sleepy(3))
        mark = len(stack.exchange.requests())
        try:
            release_id = _command(stack, "publish hello 2.0.6 --registry local", "U0MIDSIGN")
            _wait(stack, release_id, "the build to run", lambda r: r.arch_step("build", "amd64").status == "running")
            bao.pause()  # nothing before sign reads Vault; sign will hang reading the key
            signing = _wait(stack, release_id, "sign to start", lambda r: r.stage("sign").status == "running")
            signer = _worker_running(stack, f"{release_id}-sign-release")
            stack.kill_worker(signer, horse=True)
        finally:
            bao.resume()
        release = stack.wait_final(release_id, timeout=FINAL)
        assert release.state == "succeeded", (release.error, release.error_detail)
        for name in ("worker-vault-a", "worker-vault-b"):
            stack.stop_process(name)
    release = _finish(stack, release_id)
    _assert_published_once(stack, mark, "2.0.6")
    assert release.results["amd64"].digest == signing.results["amd64"].digest
    assert release.results["amd64"].image_id == signing.results["amd64"].image_id
    _assert_resumed(stack, release, "sign", "sign")


# -- the scheduler, Redis, duplicates -------------------------------------------------------------------------------

def test_killed_scheduler_is_replaced_and_a_scheduled_retry_still_runs(stack: Stack) -> None:
    connection = stack.redis()
    lock = "rq:scheduler-lock:edgebot-publish"

    def live_holder() -> tuple[bytes, str] | None:
        """The lock's holder once it is a live scheduler of one of our workers (an earlier test's killed worker may
        still hold the lock, or its scheduler may not have written its pid yet)."""
        holder = connection.get(lock)
        if not holder:
            return None
        pid = int(connection.hget(f"rq:scheduler:{holder.decode()}", "pid") or 0)  # type: ignore[union-attr]
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) if pid else 0
        except (FileNotFoundError, ProcessLookupError):
            return None
        owner = next((n for n, p in stack.processes.items() if p.pid in (parent, pid)), None)
        return (holder, owner) if owner else None

    holder, owner = wait_until(live_holder, timeout=120, what="a live scheduler for the publish queue")
    stack.kill_worker(owner, horse=True)

    _version(stack, "2.0.7", _sleepy(0))
    mark = len(stack.exchange.requests())
    stack.exchange.fail_next("POST", rf"/orgs/{ORG}/services$", 502, count=1)  # a retry scheduled with backoff
    release_id = _command(stack, "publish hello 2.0.7 --registry local", "U0SCHED")
    release = stack.wait_final(release_id, timeout=FINAL)
    assert release.state == "succeeded", (release.error, release.error_detail)
    posts = [s for m, p, s in _writes(stack, mark) if m == "POST" and p.endswith("/services")]
    assert posts[:1] == [502] and 201 in posts, f"the retry ran: another worker's scheduler enqueued it: {posts}"
    new_holder = connection.get(lock)
    assert new_holder is not None and new_holder != holder
    _finish(stack, release_id)
    _assert_published_once(stack, mark, "2.0.7")


def test_redis_killed_and_restarted_with_aof_loses_no_release(stack: Stack) -> None:
    _version(stack, "2.0.8", _sleepy(6))
    mark = len(stack.exchange.requests())
    running = _command(stack, "publish hello 2.0.8 --registry local", "U0AOF")
    queued = _command(stack, "publish hello 2.0.8 --registry local --dry-run", "U0AOFDRY")  # behind it on amd64
    _wait(stack, running, "the build to run", lambda r: r.arch_step("build", "amd64").status == "running")
    assert stack.redis_server is not None
    stack.redis_server.kill()
    stack.redis_server.restart()
    for release_id in (queued, running):
        release = stack.wait_final(release_id, timeout=FINAL)
        assert release.state == "succeeded", (release_id, release.error, release.error_detail)
    _finish(stack, running)
    _assert_published_once(stack, mark, "2.0.8")


def test_two_identical_commands_at_once_are_one_release(stack: Stack) -> None:
    before = set(stack.release_ids())
    answers: list[str] = []
    barrier = threading.Barrier(2)

    def send() -> None:
        barrier.wait()
        answers.append(stack.command("publish hello 2.0.1 --registry local --dry-run", user_id="U0TWINS").json()
                       ["text"])

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    new = set(stack.release_ids()) - before
    assert len(new) == 1, answers
    (release_id,) = new
    assert sorted("Queued" in a for a in answers) == [False, True], answers
    assert all(release_id in a for a in answers) and any("Nothing new was queued" in a for a in answers)
    assert stack.wait_final(release_id).state == "succeeded"
