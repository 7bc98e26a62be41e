"""`make demo`: the scripted version of `edgebot sandbox`, non-interactive, ending with the thread's final summary.

It starts the sandbox stack (Redis, OpenBao holding every worker secret, a private Docker Engine, a TLS registry with
auth, the Exchange and Slack stand-ins, the bot behind gunicorn, real RQ workers), then, as a Slack client would:

0. seeds a fleet (``sandbox/seed.py``): hello 1.0.0 published, two deployment policies pinning it (the canary and
   fleet stages of hello's rollout) and 27 simulated agent nodes of both arches, one offline;
1. ``/edge publish hello 1.1.0 --registry local`` from @requester, a signed slash command;
2. when the release waits for approval (a message in its thread carries a button whose action_id starts with
   ``approve``), @approver1 presses it: a signed ``block_actions`` interaction, as Slack sends it. Without an approval
   gate the release simply goes on;
3. every message of #releases is printed when it is posted or edited in place (progress, approval card, the rollout
   canary → fleet with live node counts), and at the end the whole thread, final summary included.

Everything it started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from edgebot import messages
from edgebot.release import Release
from sandbox.identities import Person, add_people, display_names, find_person, sandbox_stack
from sandbox.proc_base import StartFailed
from sandbox.seed import seed_fleet
from sandbox.stack import CHANNEL_ID, CHANNEL_NAME, Stack, wait_until
from sandbox.watch import ChannelView, format_change


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", default="publish hello 1.1.0 --registry local")
    parser.add_argument("--approver", default="approver1", help="who approves (a sandbox user, see `users`)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    approver = find_person(args.approver)
    if approver is None:
        parser.error(f"--approver: no sandbox user {args.approver!r}")

    # Ctrl-C (and SIGTERM) stops everything, even when started from something that ignores SIGINT (a background job
    # of a script: Python then leaves SIGINT ignored, and the children inherit that). The signal is also remembered:
    # a KeyboardInterrupt raised while a finalizer runs (a redis ConnectionPool.__del__, say) is swallowed by Python
    # ("Exception ignored in …"), so the follow loop checks the flag too.
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="edgebot-demo-"))
    stack = sandbox_stack(workdir, ("amd64", "arm64"))
    keep = bool(os.environ.get("EDGEBOT_DEMO_KEEP"))
    try:
        say("starting Redis, OpenBao, Docker Engine, registry (TLS + auth), Exchange and Slack stand-ins, bot, "
            "workers…")
        stack.start()
        add_people(stack.slack)
        stack.wait_workers(3)
        _check_stop()
        assert stack.vault is not None
        say(f"secrets in OpenBao at {stack.vault.url}: workers log in with the AppRoles of deploy/vault/ "
            f"(edgebot-build, edgebot-publish); config {stack.config_path} holds only references")
        say("Redis runs with ACLs: bot, publish and build workers each log in as their role's user (edgebot-bot, "
            "edgebot-publish, edgebot-build); a build worker may read release records but not write them")
        say("seeding: hello 1.0.0 on 27 simulated nodes (amd64 and arm64) through policies hello-canary, hello-fleet…")
        seed_fleet(stack)
        _check_stop()
        view = ChannelView(stack.slack, CHANNEL_ID, CHANNEL_NAME, display_names())
        view.poll()  # the seed release's messages are set-up, not the demo
        seeded = set(stack.release_ids())
        say(f"as @requester in #{CHANNEL_NAME}: /edge {args.command}")
        response = stack.command(args.command)
        _check_stop()
        answer = response.json() if response.content else {}
        say(f"bot acked in {response.elapsed.total_seconds() * 1000:.0f} ms, only @requester sees: "
            f"{answer.get('text', '')}")
        release_id = wait_until(lambda: sorted(set(stack.release_ids()) - seeded), timeout=10,
                                what="the release record")[0]
        release = follow(stack, view, release_id, approver, args.timeout)
        if release is None:
            keep = True  # the log of every process, for what went wrong
            return 1
        print("\n" + "─" * 100 + "\n" + view.render_thread(release.message_ts), flush=True)
        say(f"release {release_id} ended: {release.state}")
        return 0 if release.state == "succeeded" else 1
    except KeyboardInterrupt:
        say("interrupted: stopping everything")
        return 130
    except (StartFailed, TimeoutError) as exc:  # a part did not come up, or never got there: keep the logs
        say(f"the demo stopped early: {exc}")
        keep = True
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half of it running
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        if keep:
            say(f"kept {workdir} (config and the log of every process)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


_STOP = threading.Event()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    _STOP.set()
    raise KeyboardInterrupt


def _check_stop() -> None:
    if _STOP.is_set():
        raise KeyboardInterrupt


def follow(stack: Stack, view: ChannelView, release_id: str, approver: Person, timeout: float) -> Release | None:
    """Print the channel as it changes until the release has ended and its summary is in the thread; press the
    Approve button as ``approver`` once it appears. None on timeout or when the bot refuses the click."""
    store = stack.store()
    started = time.monotonic()
    approved = False
    while True:
        _check_stop()
        for change in view.poll():
            print(format_change(change, CHANNEL_NAME), flush=True)
        release = store.get(release_id)
        button = None if approved else view.latest_button("approve", release_id)
        if button is not None:
            approved = True
            say(f"the approval card is in the thread: @{approver.name} presses [{button.label}]")
            response = stack.platform().block_action(action_id=button.action_id, value=button.value,
                                                     user_id=approver.user_id, channel_id=button.channel_id,
                                                     message_ts=button.message_ts, block_id=button.block_id or None)
            if response.status_code != 200:
                say(f"the bot refused the click: HTTP {response.status_code} {response.text[:300]}")
                return None
        if release is not None and release.is_final and release.summary_ts:
            root_ts, final_root = release.message_ts, messages.root_message(release).text
            # the root is repainted right after the summary is posted
            wait_until(lambda: stack.slack.thread(CHANNEL_ID, root_ts)[0]["text"] == final_root,  # noqa: B023
                       timeout=30, what="the root message to show the final state")
            for change in view.poll():
                print(format_change(change, CHANNEL_NAME), flush=True)
            return release
        if time.monotonic() - started > timeout:
            logs = "\n".join(stack.log_tail(name) for name in sorted(stack.processes) if name.startswith("worker"))
            say(f"timed out after {timeout:.0f} s; worker logs:\n{logs}")
            return None
        time.sleep(0.3)


def say(text: str) -> None:
    print(f"» {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
