"""`make demo`: publish the sample service end to end on local stand-ins and print what the thread shows.

Real Redis, a private Docker Engine, a TLS registry with auth, git, the bot behind gunicorn and real RQ workers;
stand-ins for Slack and the Horizon Exchange. Everything it starts is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from sandbox import render
from sandbox.stack import CHANNEL_ID, REQUESTER, Stack, wait_until


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--command", default="publish hello 1.0.0 --registry local")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="edgebot-demo-"))
    stack = Stack(workdir, arches=("amd64", "arm64"), vault=True)
    users = {REQUESTER: "requester", "U0EDGEBOT": "edgebot"}
    try:
        say("starting Redis, OpenBao, Docker Engine, registry (TLS + auth), Exchange and Slack stand-ins, bot, "
            "workers…")
        stack.start()
        assert stack.vault is not None
        say(f"secrets in OpenBao at {stack.vault.url}: workers log in with the AppRoles of deploy/vault/ "
            f"(edgebot-build, edgebot-publish); config {stack.config_path} holds only references")
        stack.wait_workers(3)
        say(f"as @requester in #releases: /edge {args.command}")
        started = time.monotonic()
        response = stack.command(args.command)
        say(f"bot acked in {response.elapsed.total_seconds() * 1000:.0f} ms: {response.json().get('text', '')}")
        release_id = wait_until(stack.release_ids, timeout=10, what="the release record")[0]
        shown = ""
        store = stack.store()
        while True:
            release = store.get(release_id)
            msgs = stack.slack.messages(CHANNEL_ID)
            root = [m for m in msgs if not m.get("thread_ts") or m.get("thread_ts") == m.get("ts")]
            view = render.thread(stack.slack.thread(CHANNEL_ID, root[0]["ts"]), users) if root else ""
            if view != shown:
                print("\n" + "─" * 100 + f"\n#releases, {time.monotonic() - started:5.1f} s after the command\n")
                print(view, flush=True)
                shown = view
            if release is not None and release.is_final and release.summary_ts:
                break
            if time.monotonic() - started > args.timeout:
                names = ("worker-publish", "worker-build-amd64", "worker-build-arm64")
                logs = "\n".join(stack.log_tail(n) for n in names)
                say("timed out; worker logs:\n" + logs)
                return 1
            time.sleep(0.3)
        say(f"release {release_id} ended: {release.state}")
        return 0 if release.state == "succeeded" else 1
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        return 130
    finally:
        stack.stop()
        if not os.environ.get("EDGEBOT_DEMO_KEEP"):
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)


def say(text: str) -> None:
    print(f"» {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
