"""Build progress through Redis: a build worker writes a report, a publish worker applies it to the release record.

Build workers run repository-controlled Dockerfiles next to a Docker daemon, so they are the part most likely to be
compromised; their Redis user (edgebot.redis_acl ``edgebot-build``) may read release records but never write one,
and they hold no Slack token. What a build step learns (stage running/done, image id, digest, registry notes, or the
failure and its log tail) goes into its arch's report, ``<prefix>:build-report:<release_id>:<arch>``, one JSON value
that only grows: each write bumps ``seq`` and enqueues an :data:`~edgebot.jobs.Step.APPLY_BUILD_REPORT` job
(``r-7f3a9c-build-report-amd64-3``) on the reports queue, in the same MULTI and fenced by the build step's lease,
so a build that lost its lease reports nothing and every report has its apply job.

The apply job runs on a publish worker (:func:`apply`): it re-reads the report, applies it to the record unless a
later report was applied already (``ArchResult.report_seq``), checks the digest's form, runs the fan-in (the arch
that completes the set marks build and push done and enqueues sign, in the same MULTI, as before) and repaints the
thread. A report is only ever a claim: sign still reads every digest back from the registry (workers.trust), so a
forged digest fails the release there with a security alert, and nothing is signed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from edgebot import messages, smoke
from edgebot.errors import ReleaseEnded
from edgebot.jobs import Step, enqueue_step
from edgebot.release import DONE, RUNNING, SKIPPED, Release, StageStatus
from workers import build_log, progress
from workers.context import WorkerContext
from workers.images import pinned_reference
from workers.trust import SecurityCheckFailed

log = logging.getLogger(__name__)

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
STAGES = ("build", "push")
STEP_NOTE_MAX, NOTE_MAX, NOTES_MAX, FAILURE_MAX = 80, 600, 10, 4000
"""Bounds on what a report can carry (an honest one stays well inside them: image ids, digests, registry notes)."""


@dataclass
class BuildReport:
    seq: int = 0
    token: int = 0
    """The fencing token of the build lease that wrote it (edgebot.lease)."""
    steps: dict[str, list[str]] = field(default_factory=dict)
    """``stage`` (build, push) → ``[status, note]``."""
    image_id: str = ""
    digest: str = ""
    notes: list[str] = field(default_factory=list)
    failure: str = ""
    failure_detail: list[str] = field(default_factory=list)
    resumed: int = 0
    """The attempt of a build step the reaper resumed (its apply job says so in the thread, once)."""
    smoke: dict[str, Any] = field(default_factory=dict)
    """The passed smoke run of the built image (edgebot.smoke.SmokeResult.to_report; {}: none configured)."""
    progress: list[int] = field(default_factory=list)
    """``[step, total]`` of the running build (workers.build_log); [] before the first step."""

    @classmethod
    def from_json(cls, raw: str | bytes) -> BuildReport:
        data = json.loads(raw)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    def mark(self, stage: str, status: StageStatus, note: str = "") -> None:
        self.steps[stage] = [str(status), note]


def report_key(prefix: str, release_id: str, arch: str) -> str:
    return f"{prefix}:build-report:{release_id}:{arch}"


def read(ctx: WorkerContext, release_id: str, arch: str) -> BuildReport | None:
    raw = ctx.redis.get(report_key(ctx.config.settings.key_prefix, release_id, arch))
    return None if raw is None else BuildReport.from_json(raw)  # type: ignore[arg-type]


# -- the build worker's side ---------------------------------------------------------------------------------------

def write(ctx: WorkerContext, release_id: str, arch: str, change: Callable[[BuildReport], None], *,
          log: bytes | None = None) -> BuildReport:
    """Apply ``change`` to the arch's report and enqueue its apply job, in one MULTI fenced by the step's lease.
    ``log``: the build's whole log (workers.build_log), stored with the report for the publish worker to attach.
    Raises ReleaseEnded (writing nothing) when the release has ended, LeaseLost when the lease is gone."""
    if ctx.store.require(release_id).is_final:
        raise ReleaseEnded(f"release {release_id} ended while its {arch} build ran")
    settings = ctx.config.settings
    key = report_key(settings.key_prefix, release_id, arch)
    while True:
        with ctx.redis.pipeline(transaction=True) as pipe:
            try:
                if ctx.lease is not None:
                    ctx.lease.verify_watched(pipe)
                pipe.watch(key)
                raw = pipe.get(key)
                report = BuildReport.from_json(raw) if raw else BuildReport()  # type: ignore[arg-type]
                change(report)
                report.seq += 1
                report.token = ctx.lease.token if ctx.lease is not None else 0
                pipe.multi()
                pipe.set(key, report.to_json(), ex=max(1, settings.release_ttl))
                if log is not None:
                    pipe.set(build_log.log_key(settings.key_prefix, release_id, arch), log,
                             ex=max(1, settings.build_log_ttl))
                enqueue_step(ctx.redis, settings, Step.APPLY_BUILD_REPORT, release_id, arch, str(report.seq),
                             pipe=pipe)
                pipe.execute()
                return report
            except redis.WatchError:
                continue


def stage(ctx: WorkerContext, release_id: str, arch: str, *marks: tuple[str, StageStatus, str],
          **found: Any) -> BuildReport:
    """Report stage moves (``(stage, status, note)``) and what was found (``image_id``, ``digest``, ``notes``)."""

    def change(report: BuildReport) -> None:
        for name, status, note in marks:
            report.mark(name, status, note)
            if name == "build":
                report.progress = []  # a (resumed) build starts counting again; an ended one shows no step
        report.image_id = report.image_id or found.get("image_id", "")
        report.digest = report.digest or found.get("digest", "")
        report.smoke = report.smoke or dict(found.get("smoke") or {})
        report.notes.extend(n for n in found.get("notes", ()) if n not in report.notes)

    built = any(name == "build" and status == DONE for name, status, _ in marks)
    return write(ctx, release_id, arch, change, log=build_log.take(release_id, arch) if built else None)


def progress_report(ctx: WorkerContext, release_id: str, arch: str, step: int, total: int) -> BuildReport:
    """Report that the running build is at step ``step`` of ``total`` (workers.build_log.Watch, throttled). A report
    whose build has ended already (built or failed) is left as it is."""

    def change(report: BuildReport) -> None:
        if (report.steps.get("build") or [""])[0] == RUNNING and not report.failure:
            report.progress = [step, total]

    return write(ctx, release_id, arch, change)


def fail_build(arch: str) -> Callable[[WorkerContext, str, str, list[str] | None], None]:
    """The ``fail`` of a build job (workers.jobs): the failure goes into the report; the apply job fails the
    release and posts the summary."""

    def fail(ctx: WorkerContext, release_id: str, message: str, detail: list[str] | None) -> None:
        def change(report: BuildReport) -> None:
            report.failure = report.failure or message
            report.failure_detail = report.failure_detail or list(detail or [])

        with contextlib.suppress(ReleaseEnded):  # cancelled meanwhile: nothing to report
            write(ctx, release_id, arch, change, log=build_log.take(release_id, arch))

    return fail


# -- the publish worker's side -------------------------------------------------------------------------------------

def _bound(report: BuildReport, log_lines: int, smoke_lines: int = 15) -> None:
    """A report is written by a process that runs untrusted Dockerfiles: keep what it can put in the record (and the
    thread) as small as an honest build's."""
    report.steps = {k: [str(x)[:STEP_NOTE_MAX] for x in v[:2]] for k, v in report.steps.items() if k in STAGES}
    report.notes = [str(n)[:NOTE_MAX] for n in report.notes[:NOTES_MAX]]
    report.failure = str(report.failure)[:FAILURE_MAX]
    report.failure_detail = [str(line)[:NOTE_MAX] for line in report.failure_detail[-max(1, log_lines):]]
    result = smoke.bounded(report.smoke, smoke_lines)
    report.smoke = result.to_report() if result is not None else {}
    shown = report.progress if isinstance(report.progress, list) and len(report.progress) == 2 else []
    report.progress = [int(x) for x in shown] if all(type(x) is int for x in shown) and shown \
        and 1 <= shown[0] <= shown[1] <= build_log.MAX_STEPS else []


def fan_in(r: Release) -> bool:
    """The build that completes the set of arches marks build and push done (True: enqueue sign now)."""

    def finished(arch: str) -> bool:
        res = r.results.get(arch)
        return bool(res and (res.digest or (r.dry_run and res.image_id)))

    if not (all(finished(a) for a in r.arches) and r.stage("build").status == RUNNING):
        return False
    r.stage("build").mark(DONE)
    pushes = [s.started_at for s in r.arch_steps.get("push", {}).values() if s.started_at]
    r.stage("push").started_at = min(pushes, default=None)
    r.stage("push").mark(SKIPPED if r.dry_run else DONE)
    return True


def apply(ctx: WorkerContext, release_id: str, arch: str) -> None:
    """Apply the arch's current report to the record (fenced by this apply step's lease) and repaint the thread."""
    report = read(ctx, release_id, arch)
    if report is None:
        log.warning("release %s: no build report for %s (expired?); nothing to apply", release_id, arch)
        return
    _bound(report, ctx.config.settings.build_log_lines, ctx.config.settings.smoke_log_lines)
    if report.failure:
        build_log.attach(ctx, release_id, arch, failed=True)
        progress.fail(ctx, release_id, report.failure, report.failure_detail)
        return
    if report.digest and not DIGEST.fullmatch(report.digest):
        raise SecurityCheckFailed(f"the build worker of {arch} reported {report.digest[:80]!r}, which is not a "
                                  "sha256 digest")
    if arch not in ctx.store.require(release_id).arches:
        raise SecurityCheckFailed(f"a build report names arch {arch[:40]!r}, which this release does not build")

    step = f"build-{arch}"
    say_resumed: list[int] = []

    def mutate(r: Release) -> tuple[bool, list[str]]:
        res = r.result(arch)
        changed: list[str] = []
        say_resumed.clear()
        said = {e.get("attempt") for e in r.events if e["what"] == "resume-said" and e.get("step") == step}
        if report.resumed > 1 and report.resumed not in said:
            r.event("resume-said", step=step, attempt=report.resumed)
            say_resumed.append(report.resumed)
        if report.seq > res.report_seq:
            res.report_seq = report.seq
            for name in STAGES:
                status, note = (report.steps.get(name) or ["", ""])[:2]
                state = r.arch_step(name, arch)
                if status and (state.status != status or (note and state.note != note)):
                    state.mark(StageStatus(status), note or None)
                    changed.append(name)
            res.image_id = res.image_id or report.image_id
            res.smoke = res.smoke or report.smoke
            if report.digest and not res.digest:
                res.digest = report.digest
                res.pinned_image = pinned_reference(res.image_tag.rpartition(":")[0], report.digest)
            r.notes.extend(n for n in report.notes if n not in r.notes)
            build = r.arch_step("build", arch)
            if build.status == RUNNING and (report.steps.get("build") or [""])[0] == RUNNING:
                # never over an ended build's note; a resumed build (its count restarted) drops the dead one's step
                note = messages.build_progress_note(*report.progress) if report.progress else ""
                if build.note != note and (note or messages.is_build_progress_note(build.note or "")):
                    build.note = note
                    changed.append("build")
        return fan_in(r), changed

    def then(r: Release, decided: tuple[bool, list[str]] | None, pipe: Any) -> None:
        if decided is not None and decided[0]:
            enqueue_step(ctx.redis, ctx.config.settings, Step.SIGN, release_id, pipe=pipe)

    completed, changed = ctx.store.update(release_id, mutate, fence=ctx.lease, active=True, then=then).decided
    for attempt in say_resumed:
        progress.say_resumed(ctx, release_id, step, attempt)
    for name in dict.fromkeys(changed):
        ctx.reporter.stage(release_id, name)
    if (report.steps.get("build") or [""])[0] == DONE:
        build_log.attach(ctx, release_id, arch, failed=False)
    if completed:
        ctx.reporter.stage(release_id, "build")
        ctx.reporter.stage(release_id, "push")


def watch(ctx: WorkerContext, release_id: str, arch: str) -> build_log.Watch:
    """The watch of the build of ``release_id``/``arch`` about to run on this build worker: progress goes out as
    build reports (throttled by ``settings.build_progress_interval``), the log is kept for the report that ends it."""
    settings = ctx.config.settings
    return build_log.begin(release_id, arch, build_log.Watch(
        lambda step, total: progress_report(ctx, release_id, arch, step, total),
        interval=settings.build_progress_interval, max_bytes=settings.build_log_max_bytes))
