"""edgebot benchmarks. Every figure is a ratio against a baseline measured in the same run, on the same machine.

    python -m bench.run            full run; writes docs/BENCHMARKS.md
    python -m bench.run --smoke    tiny run (make test): proves the benchmarks work, writes bench/out/ only

ack latency     a burst of signed `/edge publish` commands, then of button clicks, against `edgebot serve`
                (gunicorn), concurrently; p50/p99 and errors. Baseline: the same burst against /healthz.
pipeline        a one-arch publish through edgebot (slash command → summary in the thread) vs. a direct script
                that shares none of edgebot's build, push or Exchange code; arms alternated (bench/pipeline.py).
push speed      a fresh 20/200 MiB layer: edgebot's push vs. docker push, with the pigz -1 streamed upload limit
                beside them (bench/push_speed.py).
rollout scale   one rollout poll's summary for 10,000 simulated nodes: Exchange requests per poll round and CPU per
                poll vs. json-decoding the same payload (bench/rollout_scale.py).
trust checks    what the sign job's seal checks and registry read-back add, vs. signing the same deployments
                (bench/trust_cost.py).
slack burst     50 releases at once over three workers against a Slack workspace limit: 429s, lost updates and wall
                time with the shared Redis bucket vs. the same burst without it (bench/slack_burst.py).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.report import save_results, write_measured

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ack_latency(stack: Any, count: int, concurrency: int) -> dict[str, Any]:
    from sandbox.stack import REQUESTER

    platform_ = stack.platform()

    def publish(i: int) -> tuple[float, bool]:
        started = time.perf_counter()
        # --dry-run: a burst of real publishes of one service would be refused by the one-publish-per-service lock
        # after the first; dry runs are recorded and queued exactly like publishes, only without that lock
        response = platform_.slash_command(f"publish hello 1.0.{i} --registry local --dry-run",
                                           user_id=f"{REQUESTER}{i}",
                                           channel_id="C0RELEASES", channel_name="releases")
        ok = response.status_code == 200 and "Queued release" in response.text
        return (time.perf_counter() - started) * 1000, ok

    def click(i: int) -> tuple[float, bool]:  # the Status button of a queued release: ack, then respond()
        started = time.perf_counter()
        response = platform_.block_action(action_id="release_status", value=release_ids[i % len(release_ids)],
                                          user_id=f"{REQUESTER}{i}", channel_id="C0RELEASES",
                                          message_ts="1800000000.000100", message={"text": "", "blocks": []})
        return (time.perf_counter() - started) * 1000, response.status_code == 200

    def health(_: int) -> tuple[float, bool]:
        started = time.perf_counter()
        response = platform_.http.get(stack.bot_url + "/healthz", timeout=10)  # same pooled client as publish
        return (time.perf_counter() - started) * 1000, response.status_code == 200

    publish(10_000)  # warm-up: channel-membership cache, connections
    results: dict[str, Any] = {}
    release_ids: list[str] = []
    for name, fn in (("baseline_healthz", health), ("publish", publish), ("button", click)):
        if name == "button":
            release_ids = stack.release_ids()
        with ThreadPoolExecutor(concurrency) as pool:
            samples = list(pool.map(fn, range(count)))
        latencies = [ms for ms, _ in samples]
        results[name] = {
            "count": count,
            "errors": sum(1 for _, ok in samples if not ok),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "mean_ms": round(statistics.fmean(latencies), 1),
        }
    base = results["baseline_healthz"]
    results["ratio_p50"] = round(results["publish"]["p50_ms"] / max(base["p50_ms"], 0.1), 2)
    results["ratio_p99"] = round(results["publish"]["p99_ms"] / max(base["p99_ms"], 0.1), 2)
    results["button_ratio_p99"] = round(results["button"]["p99_ms"] / max(base["p99_ms"], 0.1), 2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    from sandbox.stack import Stack

    count, concurrency = (20, 4) if args.smoke else (300, 20)
    with tempfile.TemporaryDirectory(prefix="edgebot-bench-") as tmp:
        stack = Stack(Path(tmp), settings={"duplicate_window": 1})
        try:
            stack.start(workers=False, bot=False)
            stack.start_bot(workers=2)
            ack = ack_latency(stack, count, concurrency)
            stack.redis().flushdb()
            stack.start_worker("publish", "--publish")
            stack.start_worker("build-amd64", "--arch", "amd64")
            stack.wait_workers(2)
            from bench import pipeline, push_speed

            overhead = pipeline.run(stack, smoke=args.smoke)
            pushes = push_speed.run_on_stack(stack, smoke=args.smoke)
            from bench import trust_cost

            checks = trust_cost.run(stack, 3 if args.smoke else 30)
        finally:
            stack.stop()
    from bench import rollout_scale

    rollout = rollout_scale.run(nodes=500 if args.smoke else 10_000, rounds=2 if args.smoke else 5)
    from bench import slack_burst

    burst = slack_burst.run(4 if args.smoke else 50)
    results = {"mode": "smoke" if args.smoke else "full", "machine": f"{platform.machine()} {platform.system()}",
               "ack_latency": ack, "pipeline_overhead": overhead, "push_speed": pushes,
               "trust_checks": checks, "rollout_scale": rollout,
               "slack_burst": burst}
    save_results("results", results)
    if not args.smoke:
        write_report(results)
    errors = ack["publish"]["errors"] + ack["baseline_healthz"]["errors"] + ack["button"]["errors"]
    burst_failed = burst["with_bucket"]["lost_updates"] or burst["with_bucket"]["limited_429"] > slack_burst.ALLOWED_429
    return 1 if errors or rollout["exchange_requests_per_round"] > 1 or burst_failed else 0


def write_report(results: dict[str, Any]) -> None:
    ack = results["ack_latency"]
    pub, base, button = ack["publish"], ack["baseline_healthz"], ack["button"]
    ack_text = f"""## Slash-command ack latency

A burst of {pub['count']} signed `/edge publish` commands ({pub['count']} distinct releases) against `edgebot serve`
(gunicorn, 2 processes × 8 threads), through the real Bolt app: parse, catalog checks, channel check (cached),
Redis MULTI (record + first job), ack. Baseline: the same burst against the bot's `/healthz`.

| | p50 | p99 | mean | errors |
|---|---|---|---|---|
| `/edge publish` ack | {pub['p50_ms']} ms | {pub['p99_ms']} ms | {pub['mean_ms']} ms | {pub['errors']} |
| baseline `/healthz` | {base['p50_ms']} ms | {base['p99_ms']} ms | {base['mean_ms']} ms | {base['errors']} |
| ratio | {ack['ratio_p50']}× | {ack['ratio_p99']}× | | |
| button click ack (Status) | {button['p50_ms']} ms | {button['p99_ms']} ms | {button['mean_ms']} ms \
| {button['errors']} |

Slack allows 3 s; the target is p99 under 100 ms. Button clicks (a burst of {button['count']} signed `block_actions`
on the Status button of the queued releases) are acked first and answered through the response_url after; p99 ratio
to the baseline: {ack['button_ratio_p99']}×.
"""
    from bench import pipeline, push_speed, rollout_scale, slack_burst, trust_cost

    for section in (ack_text, pipeline.report_section(results["pipeline_overhead"]),
                    push_speed.report_section(results["push_speed"]),
                    trust_cost.report_section(results["trust_checks"]),
                    rollout_scale.report_section(results["rollout_scale"]),
                    slack_burst.report_section(results["slack_burst"])):
        write_measured(section, "make bench", results["machine"])


if __name__ == "__main__":
    raise SystemExit(main())
