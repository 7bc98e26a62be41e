"""Slack burst: many releases at once, their thread updates sharing one rate limit per workspace and method.

    python -m bench.slack_burst                 50 releases per batch; writes docs/BENCHMARKS.md's section
    python -m bench.slack_burst --releases 12   a shorter run, same report
    python -m bench.slack_burst --smoke         4 releases per batch; writes bench/out/slack_burst.json only

Real parts as in the end-to-end tests (Redis, dockerd, TLS registry, git, `edgebot serve`, three `edgebot worker`
processes: a build worker and two publish workers; the publish workers send the thread updates, the build worker
reports through Redis), with Redis ACLs on (each process logs in as its role's user, edgebot.redis_acl), so the acks
measured are with ACLs; the Slack stand-in enforces a workspace limit on `chat.update` and `chat.postMessage` and
answers 429 with Retry-After above it, like Slack.

Two batches of the same burst (N signed `/edge publish … --dry-run` commands sent at once by N users) on the same
stack, one after the other:

with bucket   the workers as configured: every Slack call first takes a token from the shared Redis bucket of its
              workspace and method, set below the workspace's limit.
control       the same workers restarted with the bucket set far above the limit, so each process only honours the
              429s it gets (what every worker would do on its own).

Reported: Slack calls, how many got 429, the wall time until every thread shows its final state (releases ended,
summaries posted, roots and progress messages repainted), and lost updates (a root or progress message still
showing a non-final state two minutes after its release ended). Exit status 1 when the bucketed batch
lost an update or had more than ``ALLOWED_429`` refusals.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.report import save_results, write_measured

PER_MINUTE = 180.0  # what edgebot allows itself per method: 3 calls a second …
STANDIN_LIMIT = 5  # … against a workspace that allows 5 a second (scaled up from Slack's tiers to keep runs short)
CONTROL = {"EDGEBOT_SLACK_UPDATE_PER_MINUTE": "6000", "EDGEBOT_SLACK_POST_PER_MINUTE": "6000",
           "EDGEBOT_SLACK_BURST": "50"}
ALLOWED_429 = 3  # the bucket starts full in each process's view of the first second; a couple may still hit
METHODS = ("chat.update", "chat.postMessage")
WORKERS = (("publish", ("--publish",)), ("publish-2", ("--publish",)), ("build-amd64", ("--arch", "amd64")))


def _start_workers(stack: Any, env: dict[str, str] | None) -> None:
    for name, _ in WORKERS:
        stack.stop_process(f"worker-{name}")
    for name, args in WORKERS:
        stack.start_worker(name, *args, env=env)
    stack.wait_workers(len(WORKERS))


def burst(stack: Any, releases: int, tag: str, timeout: float) -> dict[str, Any]:
    """Send ``releases`` dry-run publishes at once; wait for every summary; count the Slack calls they made."""
    from sandbox.stack import CHANNEL_ID, wait_until

    before_ids = set(stack.release_ids())
    before_calls = len(stack.slack.calls())
    barrier = threading.Barrier(releases)
    answers: list[int] = []

    def request(n: int) -> None:
        barrier.wait(timeout=60)
        response = stack.command("publish hello 1.0.0 --registry local --dry-run", user_id=f"U0{tag}{n:03d}")
        answers.append(response.status_code)

    started = time.perf_counter()
    threads = [threading.Thread(target=request, args=(n,)) for n in range(releases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    if answers.count(200) != releases:
        raise RuntimeError(f"the bot answered {answers}")
    ids = wait_until(lambda: len(new := set(stack.release_ids()) - before_ids) >= releases and new, timeout=60,
                     what="every release record")
    store = stack.store()

    def done() -> bool:
        return all((r := store.get(i)) is not None and r.is_final and bool(r.summary_ts) for i in ids)

    wait_until(done, timeout=timeout, interval=0.5, what=f"{releases} releases to end with their summary")

    def unsettled() -> list[str]:  # repaints still queued behind a Retry-After arrive after the summary
        stale = []
        for release_id in sorted(ids):
            release = store.require(release_id)
            thread = stack.slack.thread(CHANNEL_ID, release.message_ts)
            if not thread or "dry run passed" not in thread[0]["text"]:
                stale.append(f"{release_id}: root")
            for stage, ts in release.progress_ts.items():
                message = next((m for m in thread if m["ts"] == ts), None)
                if message is None or ":hourglass_flowing_sand:" in json.dumps(message.get("blocks", [])):
                    stale.append(f"{release_id}: {stage}")
        return stale

    lost = unsettled()
    settle_until = time.monotonic() + 120
    while lost and time.monotonic() < settle_until:
        time.sleep(0.5)
        lost = unsettled()
    wall = time.perf_counter() - started
    calls = [c for c in stack.slack.calls()[before_calls:] if c["method"] in METHODS]
    limited = [c for c in calls if c["status"] == 429]
    outcomes: dict[str, int] = {}
    for release_id in ids:
        state = store.require(release_id).state
        outcomes[state] = outcomes.get(state, 0) + 1
    return {"releases": releases, "calls": len(calls), "limited_429": len(limited),
            "limited_pct": round(100 * len(limited) / max(1, len(calls)), 1), "wall_s": round(wall, 1),
            "outcomes": outcomes, "lost_updates": lost}


def run(releases: int) -> dict[str, Any]:
    from sandbox.stack import Stack

    settings = {"slack_update_per_minute": PER_MINUTE, "slack_post_per_minute": PER_MINUTE, "slack_burst": 2,
                "duplicate_window": 1}
    timeout = 120 + releases * 12.0
    with tempfile.TemporaryDirectory(prefix="edgebot-burst-") as tmp:
        stack = Stack(Path(tmp), settings=settings)
        try:
            stack.start(workers=False)
            for method in METHODS:
                stack.slack.set_rate_limit(method, STANDIN_LIMIT, 1.0)
            _start_workers(stack, None)
            bucket = burst(stack, releases, "B", timeout)
            _start_workers(stack, {**stack.env(), **CONTROL})
            control = burst(stack, releases, "C", timeout)
        finally:
            stack.stop()
    return {"releases": releases, "standin_limit_per_s": STANDIN_LIMIT, "bucket_per_minute": PER_MINUTE,
            "with_bucket": bucket, "control": control,
            "wall_ratio": round(bucket["wall_s"] / control["wall_s"], 2) if control["wall_s"] else None}


def report_section(results: dict[str, Any]) -> str:
    b, c = results["with_bucket"], results["control"]

    def row(name: str, r: dict[str, Any]) -> str:
        ended = ", ".join(f"{n} {state}" for state, n in sorted(r["outcomes"].items()))
        return (f"| {name} | {r['calls']} | {r['limited_429']} ({r['limited_pct']} %) | {r['wall_s']} s | {ended} "
                f"| {len(r['lost_updates'])} |")

    n, limit = results["releases"], results["standin_limit_per_s"]
    return f"""## Slack burst ({n} concurrent releases)

{n} signed `/edge publish … --dry-run` commands sent at once by {n} users; a build worker and two publish workers
send every thread update (root, progress messages edited in place, summary). The Slack stand-in allows {limit}
`chat.update` and {limit} `chat.postMessage` calls a second per workspace and answers 429 with Retry-After above that.
With the bucket, every process first takes a token from the shared Redis bucket of the workspace and method
({results['bucket_per_minute']:g} a minute). Control: the same burst on the same stack, the workers restarted with the
bucket set far above the limit, so each process only honours the 429s it gets.

| batch | Slack calls | 429s | until every thread is final | releases | lost updates |
|---|---|---|---|---|---|
{row('with bucket', b)}
{row('control (no effective bucket)', c)}

Wall time with the bucket / control: {results['wall_ratio']}×. Fewer calls with the bucket: no retried 429s, and
repaints queued while a token is due are coalesced. A lost update is a root or progress message still showing a
non-final state two minutes after its release ended.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--releases", type=int, default=50)
    args = parser.parse_args(argv)
    results = run(4 if args.smoke else args.releases)
    results["machine"] = f"{platform.machine()} {platform.system()}"
    save_results("slack_burst", results)
    if not args.smoke:
        write_measured(report_section(results), "python -m bench.slack_burst", results["machine"])
    bucket = results["with_bucket"]
    return 1 if bucket["lost_updates"] or bucket["limited_429"] > ALLOWED_429 else 0


if __name__ == "__main__":
    raise SystemExit(main())
