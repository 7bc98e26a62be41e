"""`make demo`: publish the sample service end to end on local stand-ins and print what the thread shows.

Real Redis, a private Docker Engine, a TLS registry with auth, git, the bot behind gunicorn and real RQ workers;
stand-ins for Slack and the Horizon Exchange. Everything it starts is stopped at the end, also on Ctrl-C.

Before the command, the demo seeds a fleet: version 1.0.0 published (through a catalog entry without rollout), two
deployment policies pinning it (``hello-canary``, ``hello-fleet``) and simulated agent nodes of both arches (one of
them offline). The command then publishes 1.1.0 and the thread shows the rollout, stage by stage.
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
from sandbox.stack import CHANNEL_ID, EXCHANGE_PASSWORD, EXCHANGE_USER, ORG, REQUESTER, Stack, wait_until

ROLLOUT = """
[[services.hello.rollout]]
stage = "canary"
policies = ["hello-canary"]

[[services.hello.rollout]]
stage = "fleet"
policies = ["hello-fleet"]
"""


def seed_fleet(stack: Stack, *, canaries: int = 3, nodes: int = 24) -> None:
    """1.0.0 live on every node of both arches, through two policies, before the demo's own command."""
    import httpx

    before = set(stack.release_ids())
    stack.command("publish hello-seed 1.0.0 --registry local")
    release_id = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the seed release").pop()
    seeded = stack.wait_final(release_id, timeout=300)
    if seeded.state != "succeeded":
        raise RuntimeError(f"seeding 1.0.0 failed: {seeded.error}")
    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        for name, group in (("hello-canary", "canary"), ("hello-fleet", "fleet")):
            body = {"label": name, "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
                {"version": "1.0.0", "priority": {"priority_value": 1}}]}, "constraints": [f"group == {group}"]}
            c.post(f"orgs/{ORG}/business/policies/{name}", json=body).raise_for_status()
    fleet = stack.exchange.fleet
    fleet.apply_delay, fleet.heartbeat_interval = 1.5, 1.0
    for i in range(1, canaries + nodes + 1):
        group = "canary" if i <= canaries else "fleet"
        node = fleet.add_node(ORG, f"{group}-{i}", "amd64" if i % 3 else "arm64",
                              properties=[{"name": "group", "value": group}])
        if i == canaries + nodes:
            fleet.set_online(node, False)
    wait_until(lambda: sum(1 for n in fleet.nodes if fleet.running(n)) >= canaries + nodes - 1, timeout=60,
               what="the seeded nodes to run 1.0.0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--command", default="publish hello 1.1.0 --registry local")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    workdir = Path(tempfile.mkdtemp(prefix="edgebot-demo-"))
    stack = Stack(workdir, arches=("amd64", "arm64"), versions=("1.0.0", "1.1.0"),
                  extra_services={"hello-seed": ["amd64", "arm64"]}, extra_toml=ROLLOUT,
                  settings={"rollout_poll_interval": 1.0, "rollout_offline_after": 10.0})
    users = {REQUESTER: "requester", "U0EDGEBOT": "edgebot"}
    try:
        say("starting Redis, Docker Engine, registry (TLS + auth), Exchange and Slack stand-ins, bot, workers…")
        stack.start()
        stack.wait_workers(3)
        say("seeding: hello 1.0.0 on 27 simulated nodes (amd64 and arm64) through policies hello-canary, hello-fleet…")
        seed_fleet(stack)
        before = set(stack.release_ids())
        say(f"as @requester in #releases: /edge {args.command}")
        started = time.monotonic()
        response = stack.command(args.command)
        say(f"bot acked in {response.elapsed.total_seconds() * 1000:.0f} ms: {response.json().get('text', '')}")
        release_id = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the release record").pop()
        shown = ""
        store = stack.store()
        while True:
            release = store.get(release_id)
            msgs = stack.slack.messages(CHANNEL_ID)
            root = [m for m in msgs if (not m.get("thread_ts") or m.get("thread_ts") == m.get("ts"))
                    and release is not None and m["ts"] == release.message_ts]
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
