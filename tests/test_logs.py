"""Structured logs: JSON lines with the release id, never a secret; checked on records and on a real worker's output."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import threading
from pathlib import Path

import pytest
import redis
from rq import Queue

from edgebot import logs
from edgebot.errors import ConfigError
from edgebot.jobs import PUBLISH_QUEUE, SERIALIZER, EdgebotJob, Step
from edgebot.release import Release
from edgebot.secrets import Secret, SecretRef
from edgebot.settings import Settings
from edgebot.store import ReleaseStore
from sandbox.proc_base import free_port, spawn, stop_process
from sandbox.processes import RedisServer
from tests.minimal_config import minimal_config

SECRET_VALUE = "s3cr3t-value-that-must-not-leak"


def _logger(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(fmt))
    handler.addFilter(logs.ReleaseIdFilter())
    logger = logging.getLogger(f"edgebot.test.{fmt}.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, stream


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_level_logger_message_and_the_release_id_in_scope() -> None:
    logger, stream = _logger("json")
    logger.info("before")
    with logs.release_context("r-7f3a9c"):
        logger.warning("building %s", "amd64")
    logger.info("after")
    before, during, after = _lines(stream)
    assert "release_id" not in before and "release_id" not in after
    assert during["release_id"] == "r-7f3a9c"
    assert during["level"] == "warning" and during["message"] == "building amd64"
    assert during["logger"] == logger.name and str(during["ts"]).endswith("Z")


def test_a_secret_in_arguments_extras_or_exceptions_renders_masked() -> None:
    secret = Secret(SECRET_VALUE, SecretRef("env", "EXCHANGE_PASSWORD"))
    for fmt in logs.FORMATS:
        logger, stream = _logger(fmt)
        logger.info("logging in with %s and %r", secret, {"password": secret})
        logger.info("extra fields", extra={"credential": secret, "nested": {"items": [secret]}})
        try:
            raise RuntimeError(f"refused {secret}")
        except RuntimeError:
            logger.exception("call failed")
        logger.info("token xoxb-1234-5678-abcdefgh and Authorization: Bearer abc.def.ghi in a message")
        logger.warning("Invalid request signature detected (body: token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T1)")
        text = stream.getvalue()
        assert SECRET_VALUE not in text
        assert "Secret(env:EXCHANGE_PASSWORD)" in text
        assert "xoxb-1234" not in text and "abc.def.ghi" not in text
        assert "xoxb-***" in text and "Bearer ***" in text
        assert "gIkuvaNzQIHg97ATvDxqgjtO" not in text and "token=***&team_id=T1" in text
    records = _lines(_logger_with_extra())
    assert records[0]["credential"] == "Secret(env:EXCHANGE_PASSWORD)"


def _logger_with_extra() -> io.StringIO:
    logger, stream = _logger("json")
    logger.info("x", extra={"credential": Secret(SECRET_VALUE, "env:EXCHANGE_PASSWORD")})
    return stream


def test_release_ids_do_not_leak_between_threads() -> None:
    logger, stream = _logger("json")
    barrier = threading.Barrier(2)

    def work(release_id: str) -> None:
        logs.set_release(release_id)
        barrier.wait()
        logger.info("step of %s", release_id)

    threads = [threading.Thread(target=work, args=(f"r-{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((line["message"], line["release_id"]) for line in _lines(stream)) == [
        ("step of r-0", "r-0"), ("step of r-1", "r-1")]


def test_text_format_names_the_release_and_bad_settings_are_config_errors() -> None:
    logger, stream = _logger("text")
    with logs.release_context("r-abc"):
        logger.info("hello")
    assert " [r-abc] hello" in stream.getvalue()
    with pytest.raises(ConfigError, match="log_format must be one of text, json"):
        logs.configure_from(Settings(log_format="xml"))
    with pytest.raises(ConfigError, match="log_level"):
        logs.configure_from(Settings(log_level="LOUD"))


def test_worker_logs_json_with_the_release_id_on_every_line_of_a_job(tmp_path: Path) -> None:
    """A real `edgebot worker --log-format json` runs a job that fails (its source does not exist) and reports to a
    Slack API nobody answers: every line it writes is JSON, the job's lines name the release, no secret appears."""
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-9-" + SECRET_VALUE, "SLACK_SIGNING_SECRET": SECRET_VALUE,
           "EXCHANGE_PASSWORD": SECRET_VALUE, "SIGNING_KEY": SECRET_VALUE, "PUSH_PASSWORD": SECRET_VALUE}
    with RedisServer(tmp_path / "redis") as server:
        config = tmp_path / "edgebot.toml"
        config.write_text(minimal_config(server.url, source=str(tmp_path / "no-such-repo.git"), settings=f"""\
source_cache_dir = "{tmp_path / 'cache'}"
work_dir = "{tmp_path / 'work'}"
step_retries = 0
"""))
        connection = redis.Redis.from_url(server.url)
        store = ReleaseStore(connection)
        release = Release(release_id="r-logs1", team_id="T1", channel_id="C1", user_id="U1", service="hello",
                          version="1.0.0", org="acme", registry="local", arches=["amd64"])
        queue = Queue(PUBLISH_QUEUE, connection=connection, job_class=EdgebotJob, serializer=SERIALIZER)
        store.create(release, then=lambda pipe: queue.enqueue_call(
            "workers.jobs.prepare_release", args=("r-logs1",), job_id=Step.PREPARE.job_id("r-logs1"), pipeline=pipe))
        log_path = tmp_path / "worker.log"
        proc = spawn([sys.executable, "-m", "edgebot.cli", "--config", str(config), "worker", "--publish", "--burst",
                      "--log-format", "json"], log_path, env=env)
        try:
            assert proc.wait(timeout=180) == 0, log_path.read_text()
        finally:
            stop_process(proc)
        assert store.require("r-logs1").state == "failed"
    text = log_path.read_text()
    assert SECRET_VALUE not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    job_lines = [line for line in lines if str(line["logger"]).startswith(("workers.", "edgebot.", "slack_sdk."))
                 and line["logger"] != "workers.worker"]  # the worker's own start-up lines belong to no release
    assert all(line.get("release_id") == "r-logs1" for line in job_lines), text
    assert any(line["logger"] == "workers.jobs" and "release r-logs1: prepare" in str(line["message"])
               for line in job_lines), text
    assert any(line["logger"].startswith("slack_sdk.") for line in job_lines), "library lines carry the id too"


def test_bot_under_gunicorn_writes_only_json_lines(tmp_path: Path) -> None:
    """`edgebot serve --log-format json`: gunicorn's own lines (start, worker boots) and the app's are all JSON, and
    a request with a bad Slack signature (which Bolt logs with the request body) shows no token."""
    import urllib.error
    import urllib.request

    from sandbox.proc_base import wait_until

    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-9-" + SECRET_VALUE, "SLACK_SIGNING_SECRET": SECRET_VALUE}
    with RedisServer(tmp_path / "redis") as server:
        config = tmp_path / "edgebot.toml"
        config.write_text(minimal_config(server.url, source="/nowhere.git"))
        port = free_port()
        log_path = tmp_path / "bot.log"
        proc = spawn([sys.executable, "-m", "edgebot.cli", "--config", str(config), "serve", "--bind",
                      f"127.0.0.1:{port}", "--workers", "2", "--log-format", "json"], log_path, env=env)
        try:
            def answers() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
                except OSError:
                    return False

            wait_until(answers, timeout=60, what="the bot")
            forged = urllib.request.Request(
                f"http://127.0.0.1:{port}/slack/events", method="POST",
                data=b"token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T1&command=%2Fedge&text=help",
                headers={"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=00",
                         "Content-Type": "application/x-www-form-urlencoded"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(forged, timeout=10)
            assert refused.value.code == 401
            wait_until(lambda: "signature" in log_path.read_text(), timeout=30, what="Bolt's log line")
        finally:
            stop_process(proc)
    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    loggers = {line["logger"] for line in lines}
    assert "gunicorn.error" in loggers, text
    assert any("Booting worker" in str(line["message"]) for line in lines), text
    assert SECRET_VALUE not in text and "gIkuvaNzQIHg97ATvDxqgjtO" not in text
