"""A build you can watch (workers.build_log): the step parser for both builders' output, the progress throttle, the
bounded and scrubbed log, and the thread reporter attaching a file through the stand-in's external upload flow."""

from __future__ import annotations

import redis

from edgebot import messages
from edgebot.config import parse_config
from edgebot.release import BUILDING, DONE, RUNNING, Release
from edgebot.secrets import SecretResolver
from edgebot.store import ReleaseStore
from edgebot.thread import ThreadReporter, slack_client
from sandbox.slack import SlackStandIn
from tests.redis_url import url_of
from workers import build_log, build_report
from workers.build_log import BoundedLog, Throttle, Watch, parse_step
from workers.build_report import BuildReport, _bound
from workers.context import WorkerContext


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the step parser -------------------------------------------------------------------------------------------------

def test_the_engines_step_lines_are_read() -> None:
    """docker-py's legacy build stream: ``Step 3/7 : RUN …``."""
    assert parse_step("Step 1/7 : FROM busybox") == (1, 7)
    assert parse_step("Step 3/7 : RUN sleep 2 && echo 'Step 9/9 : no'") == (3, 7)
    assert parse_step(" ---> Running in 4f2a") is None
    assert parse_step("Successfully built 4f2a") is None


def test_buildahs_step_lines_are_read_also_in_a_multi_stage_build() -> None:
    """``buildah bud`` 1.28: ``STEP 3/7: RUN …``; a multi-stage Dockerfile prefixes the stage: ``[1/2] STEP 2/4: …``."""
    assert parse_step("STEP 3/7: RUN make") == (3, 7)
    assert parse_step("[1/2] STEP 2/4: COPY . /src") == (2, 4)
    assert parse_step("COMMIT registry:5000/hello:1.0.0-amd64") is None
    assert parse_step("Getting image source signatures") is None


def test_a_step_counter_a_hostile_build_prints_is_not_believed() -> None:
    """A ``RUN`` step may print anything: only a line that starts like a builder's step line and holds a plausible
    counter counts (it only ever becomes "step N/M" on the stage line)."""
    assert parse_step("echo Step 3/7 : RUN") is None
    assert parse_step("Step 9/3 : RUN x") is None
    assert parse_step("Step 0/3 : RUN x") is None
    assert parse_step("Step 1/99999999 : RUN x") is None
    assert parse_step("STEP 3/7 RUN x") is None


# -- the throttle and the watch ----------------------------------------------------------------------------------

def test_the_throttle_lets_one_event_through_per_interval() -> None:
    clock = Clock()
    throttle = Throttle(5.0, clock)
    assert throttle.ready()
    assert not throttle.ready()
    clock.now += 4.9
    assert not throttle.ready()
    clock.now += 0.2
    assert throttle.ready()
    assert not throttle.ready()


def test_the_watch_reports_new_steps_throttled_and_a_failed_report_never_stops_the_build() -> None:
    clock = Clock()
    reported: list[tuple[int, int]] = []

    def report(step: int, total: int) -> None:
        reported.append((step, total))
        if step == 2:
            raise redis.ConnectionError("Redis went away")

    watch = Watch(report, interval=5.0, max_bytes=1 << 20, clock=clock)
    watch.line("Step 1/3 : FROM busybox")
    watch.line(" ---> 1a2b")
    watch.line("Step 2/3 : RUN sleep 1")  # within the interval: not yet
    assert reported == [(1, 3)]
    clock.now += 5
    watch.line("output of step 2")  # the interval passed: the step it is at now goes out
    assert reported == [(1, 3), (2, 3)]
    clock.now += 5
    watch.line("more output of step 2")  # the same step again: nothing new to say
    watch.line("Step 3/3 : CMD x")
    assert reported == [(1, 3), (2, 3), (3, 3)]
    assert watch.lines == 6


def test_a_finished_build_hands_its_log_over_once() -> None:
    watch = build_log.begin("r-1", "arm64", Watch(lambda s, t: None, interval=5, max_bytes=1 << 20))
    watch.line("Step 1/1 : FROM busybox")
    assert build_log.take("r-1", "arm64") == b"Step 1/1 : FROM busybox\n"
    assert build_log.take("r-1", "arm64") is None


# -- the log: bounded and scrubbed -------------------------------------------------------------------------------

def test_a_long_log_keeps_its_head_and_tail_with_a_marker_and_stays_within_the_bound() -> None:
    bound = 64 * 1024
    log = BoundedLog(bound)
    for i in range(20_000):
        log.add(f"line {i:05d} " + "x" * 40)
    data = log.render()
    assert len(data) <= bound
    text = data.decode()
    assert text.startswith("line 00000 ")
    assert text.rstrip("\n").endswith("line 19999 " + "x" * 40)
    assert log.cut and "build_log_max_bytes" in text
    marker = next(line for line in text.splitlines() if line.startswith("[edgebot]"))
    assert f"{log.dropped_lines} line(s)" in marker
    kept = [line for line in text.splitlines() if line.startswith("line ")]
    assert len(kept) + log.dropped_lines == 20_000  # every line is either kept or counted


def test_a_short_log_is_kept_whole_and_one_huge_line_is_cut() -> None:
    log = BoundedLog(4096)
    log.add("Step 1/2 : FROM busybox")
    log.add("y" * 100_000)
    data = log.render()
    assert data.startswith(b"Step 1/2 : FROM busybox\n")
    assert len(data) <= 4096


def test_secret_values_credentials_in_urls_and_known_token_patterns_are_scrubbed() -> None:
    secret = "s3cr3t-build-value"
    multi = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    log = BoundedLog(1 << 20, hide=[secret])
    log.hide([multi])
    log.add(f"RUN echo {secret}")
    log.add("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC")  # one line of a multi-line secret, printed alone
    log.add("fetching https://deploy:hunter2pass@git.example.com/acme/hello.git")
    data = log.render().decode()
    assert secret not in data and "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in data
    assert "hunter2pass" not in data
    assert data.count("***") >= 3


# -- the report a build worker writes is bounded when applied ---------------------------------------------------

def test_a_hostile_progress_in_a_report_is_dropped_when_applied() -> None:
    for hostile in ([9, 3], [0, 3], [1, 10**9], ["1", "3"], [1, 2, 3], [True, 3], "step 1/3", [1.5, 3]):
        report = BuildReport(progress=hostile)  # type: ignore[arg-type]
        _bound(report, 25)
        assert report.progress == [], hostile
    report = BuildReport(progress=[3, 7])
    _bound(report, 25)
    assert report.progress == [3, 7]
    assert messages.build_progress_note(3, 7) == "step 3/7"


# -- the thread: the file lands through the external upload flow --------------------------------------------------

def _release() -> Release:
    return Release(release_id="r-f11e5", team_id="T0EDGE", channel_id="C0RELEASES", user_id="U0REQUESTER",
                   service="hello", version="1.2.3", org="acme", registry="local", arches=["arm64"])


def test_the_log_file_lands_in_the_thread_and_a_refused_upload_is_a_note_not_a_failure(
        redis_conn: redis.Redis) -> None:
    store = ReleaseStore(redis_conn)
    store.create(_release())
    content = b"Step 1/1 : FROM busybox\n\xe2\x80\xa6 done\n"
    with SlackStandIn(bot_token="xoxb-t") as slack:
        slack.add_channel("C0RELEASES", "releases")
        reporter = ThreadReporter(slack_client("xoxb-t", slack.api_url), store)
        root = reporter.ensure_root("r-f11e5")
        filename = messages.build_log_filename("hello", "1.2.3", "arm64")
        assert filename == "hello-1.2.3-arm64-build.log"
        reporter.attach_file("r-f11e5", filename=filename, title="log", content=content, comment="the log",
                             on_failure=lambda why: messages.build_log_not_attached("arm64", why))
        shared = [m for m in slack.thread("C0RELEASES", root) if m.get("files")]
        assert len(shared) == 1 and shared[0]["text"] == "the log"
        (file,) = slack.files()
        assert file["data"] == content and file["name"] == filename and file["completed"]

        slack.workspace.scopes = slack.workspace.scopes - {"files:write"}  # an app installed before the scope
        reporter.attach_file("r-f11e5", filename=filename, title="log", content=content, comment="again",
                             on_failure=lambda why: messages.build_log_not_attached("arm64", why))
        notes = [m["text"] for m in slack.thread("C0RELEASES", root) if "could not be attached" in m["text"]]
        assert len(notes) == 1 and "missing_scope" in notes[0] and "files:write" in notes[0]
        assert len([m for m in slack.thread("C0RELEASES", root) if m.get("files")]) == 1


# -- applied on a publish worker: progress repaints, never over an ended build; the log is attached once ----------

def _ctx(redis_conn: redis.Redis, slack: SlackStandIn) -> WorkerContext:
    config = parse_config({
        "slack": {"bot_token": "env:BOT", "signing_secret": "env:SIGNING", "api_url": slack.api_url},
        "redis": {"url": url_of(redis_conn)},
        "exchange": {"url": "http://127.0.0.1:9/edge-exchange/v1", "username": "acme/edgebot", "password": "env:X"},
        "signing": {"private_key": "file:/nonexistent"},
        "registries": {"local": {"host": "r.example", "push_username": "u", "push_password": "env:PUSH"}},
        "services": {"hello": {"source": "/x", "org": "acme", "arches": ["arm64"]}},
        "settings": {"key_prefix": "watch"},
    }, environ={})
    ctx = WorkerContext(config, SecretResolver(environ={"BOT": "xoxb-t"}))
    ctx.reporter.background = False  # repaint on the calling thread: the test reads the stand-in right after
    return ctx


def _stage_line(slack: SlackStandIn, ctx: WorkerContext, release_id: str) -> str:
    ts = ctx.store.require(release_id).progress_ts["build"]
    message = slack.find_message("C0RELEASES", ts)
    assert message is not None
    return str(message["text"]).splitlines()[1]


def test_progress_is_painted_while_the_build_runs_and_never_over_the_ended_build(redis_conn: redis.Redis) -> None:
    with SlackStandIn(bot_token="xoxb-t") as slack:
        slack.add_channel("C0RELEASES", "releases")
        ctx = _ctx(redis_conn, slack)
        release = _release()
        release.state = BUILDING
        release.result("arm64").image_tag = "r.example/edge/hello_arm64:1.2.3"
        ctx.store.create(release)
        ctx.store.update(release.release_id, lambda r: r.stage("build").mark(RUNNING))
        ctx.reporter.ensure_root(release.release_id)
        rid = release.release_id

        build_report.stage(ctx, rid, "arm64", ("build", RUNNING, ""))
        build_report.apply(ctx, rid, "arm64")
        build_report.progress_report(ctx, rid, "arm64", 2, 5)
        build_report.apply(ctx, rid, "arm64")
        assert _stage_line(slack, ctx, rid).endswith("· step 2/5")

        build_log.begin(rid, "arm64", Watch(lambda s, t: None, interval=5, max_bytes=1 << 20)).line("Step 5/5 : CMD")
        build_report.stage(ctx, rid, "arm64", ("build", DONE, "4f2a9c0d12e4"), ("push", RUNNING, ""),
                           image_id="sha256:" + "4f" * 32)
        build_report.progress_report(ctx, rid, "arm64", 4, 5)  # late: the build has ended
        build_report.apply(ctx, rid, "arm64")
        line = _stage_line(slack, ctx, rid)
        assert "step" not in line and line.endswith("4f2a9c0d12e4")
        # a progress a (hostile or confused) build worker wrote into an ended build's report is not painted either
        key = build_report.report_key("watch", rid, "arm64")
        report = BuildReport.from_json(redis_conn.get(key))  # type: ignore[arg-type]
        report.progress, report.seq = [4, 5], report.seq + 1
        redis_conn.set(key, report.to_json())
        build_report.apply(ctx, rid, "arm64")
        assert "step" not in _stage_line(slack, ctx, rid)
        # the log went with the report that ended the build, and is attached once whatever applies it again
        files = [m for m in slack.thread("C0RELEASES", ctx.store.require(rid).message_ts) if m.get("files")]
        assert [f["name"] for m in files for f in m["files"]] == ["hello-1.2.3-arm64-build.log"]
        assert slack.files()[0]["data"] == b"Step 5/5 : CMD\n"
        assert redis_conn.get(build_log.log_key("watch", rid, "arm64")) is None


def test_a_resumed_build_starts_its_count_again(redis_conn: redis.Redis) -> None:
    report = BuildReport(steps={"build": ["running", ""]}, progress=[4, 5])
    report.mark("build", RUNNING, "")
    assert report.progress == [4, 5]  # a mark alone keeps it; the stage write of a (resumed) build clears it:
    with SlackStandIn(bot_token="xoxb-t") as slack:
        slack.add_channel("C0RELEASES", "releases")
        ctx = _ctx(redis_conn, slack)
        release = _release()
        release.release_id = "r-resum3"
        ctx.store.create(release)
        build_report.stage(ctx, release.release_id, "arm64", ("build", RUNNING, ""))
        build_report.progress_report(ctx, release.release_id, "arm64", 4, 5)
        assert build_report.read(ctx, release.release_id, "arm64").progress == [4, 5]  # type: ignore[union-attr]
        build_report.apply(ctx, release.release_id, "arm64")
        assert ctx.store.require(release.release_id).arch_step("build", "arm64").note == "step 4/5"
        build_report.stage(ctx, release.release_id, "arm64", ("build", RUNNING, ""))  # attempt 2 starts
        assert build_report.read(ctx, release.release_id, "arm64").progress == []  # type: ignore[union-attr]
        build_report.apply(ctx, release.release_id, "arm64")
        assert ctx.store.require(release.release_id).arch_step("build", "arm64").note == ""
