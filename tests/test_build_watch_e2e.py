"""End to end, a build you can watch: a signed slash command to the real bot, real publish and build worker
processes (the Docker Engine builder and the buildah builder), Redis with the roles' ACL users, the TLS registry,
OpenBao for the build secret; stand-ins only for Slack and the Exchange.

While a build runs, the build stage message is repainted with "step N/M" (read from the stand-in's edit history of
that message); when the build ends, built or failed, its whole log lands in the thread as a file through Slack's
external upload flow, and the build secret (printed by a ``RUN`` step) and the registry's password are not in the
uploaded bytes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot.release import Release
from sandbox.processes import add_commit, busybox_path
from sandbox.stack import CHANNEL_ID, ORG, PUSH_PASSWORD, Stack, wait_until

pytestmark = pytest.mark.slow

TOKEN = "watch-token-" + secrets.token_hex(12)
MARK = secrets.token_hex(6)
"""In every RUN step: the Engine's cache must not skip the steps of this run's builds."""
INTERVAL = 1.0
"""settings.build_progress_interval here; each RUN step sleeps several times longer, so a step is reported and
repainted while the build is still at it."""
STEPS = """\
FROM amd64/busybox:1.36
RUN ["/bin/busybox", "sh", "-c", "echo {mark} one; sleep 4"]
RUN ["/bin/busybox", "sh", "-c", "echo {mark} two; sleep 4"]
RUN ["/bin/busybox", "sh", "-c", "echo {mark} three; sleep 4"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8000"]
"""
FAILING_BUD = """\
FROM scratch
COPY busybox /bin/busybox
RUN --mount=type=secret,id=token ["/bin/busybox", "sh", "-c", \
"/bin/busybox echo {mark} reading the token; /bin/busybox cat /run/secrets/token; /bin/busybox echo; exit 3"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    source = workdir / "sources" / "origin.git"  # where Stack puts the sample service's repository
    catalog = f"""\
[services.hello-bud]
source = "{source}"
org = "{ORG}"
arches = ["amd64"]
image_base = "hello"
dockerfile = "Dockerfile.bud"

[services.hello-bud.build]
builder = "buildah"
secrets = {{ token = "vault:secret/data/edgebot/build/hello-bud#token" }}
"""
    with Stack(workdir, docker=docker_daemon, registry=registry, versions=("1.0.0",), extra_toml=catalog,
               vault=True, settings={"build_progress_interval": INTERVAL}) as running:
        assert running.vault is not None
        running.vault.server.put_secret("edgebot/build/hello-bud", {"token": TOKEN})
        definition = (Path(__file__).parent.parent / "examples/hello/horizon/service.definition.json").read_text()
        add_commit(source, {"Dockerfile.amd64": STEPS.format(mark=MARK), "horizon/service.definition.json":
                            definition}, tag="v1.1.0")
        add_commit(source, {"Dockerfile.bud": FAILING_BUD.format(mark=MARK),
                            "busybox": Path(busybox_path()).read_bytes()})
        (source.parent / "tree" / "busybox").chmod(0o755)  # committed as an executable
        add_commit(source, {}, tag="v2.0.1")
        running.wait_workers(2)
        yield running


def _log_file(stack: Stack, release: Release, filename: str) -> bytes:
    """The bytes of the file ``filename`` shared in the release's thread (waited for: it is attached after the
    report that ended the build was applied, beside the summary)."""

    def shared() -> list[dict[str, Any]]:
        return [f for m in stack.slack.thread(CHANNEL_ID, release.message_ts) for f in m.get("files", [])
                if f["name"] == filename]

    (file,) = wait_until(shared, timeout=60, what=f"{filename} in the thread")
    data = stack.slack.workspace.file(file["id"])
    assert data is not None and data["completed"]
    return bytes(data["data"])


def test_a_build_shows_its_steps_while_it_runs_and_its_log_lands_in_the_thread(stack: Stack) -> None:
    release = stack.finished(stack.start_release("publish hello 1.1.0 --registry local"))
    assert release.state == "succeeded", (release.error, release.error_detail, stack.log_tail("worker-build-amd64"))
    build_ts = release.progress_ts["build"]
    message = stack.slack.find_message(CHANNEL_ID, build_ts)
    assert message is not None
    shown = [e["text"] for e in message["edits"]] + [message["text"]]
    assert any(re.search(r"`?amd64`? · [\d.]+ s · step \d+/\d+", text) for text in shown), shown
    assert "step" not in message["text"], "the final state of the build was overwritten by a progress report"
    data = _log_file(stack, release, "hello-1.1.0-amd64-build.log")
    text = data.decode()
    assert re.search(r"^Step 1/\d+ : FROM amd64/busybox:1.36$", text, re.M)
    assert re.search(r"^Step 5/\d+ : CMD", text, re.M)
    assert f"{MARK} one" in text and f"{MARK} three" in text
    assert PUSH_PASSWORD not in text
    assert len(data) <= 5 * 1024**2


def test_a_failed_build_attaches_its_log_with_the_build_secret_scrubbed(stack: Stack) -> None:
    release = stack.finished(stack.start_release("publish hello-bud 2.0.1 --registry local"))
    assert release.state == "failed" and "build of amd64 failed" in release.error, release.error
    data = _log_file(stack, release, "hello-bud-2.0.1-amd64-build.log")
    text = data.decode()
    assert "STEP " in text and f"{MARK} reading the token" in text
    assert TOKEN not in text and "***" in text, "the build secret printed by the RUN step is in the log file"
    assert PUSH_PASSWORD not in text
    comments = [m["text"] for m in stack.slack.thread(CHANNEL_ID, release.message_ts) if m.get("files")]
    assert comments and "failed" in comments[0]
    everything = repr(stack.slack.exchanges()) + repr(stack.slack.messages(CHANNEL_ID))
    assert TOKEN not in everything
    redis_values = "".join(repr(stack.redis().dump(k)) for k in stack.redis().scan_iter())
    assert TOKEN not in redis_values
