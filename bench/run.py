"""edgebot benchmarks. Every figure is a ratio against a baseline measured in the same run, on the same machine.

    python -m bench.run            full run; writes docs/BENCHMARKS.md
    python -m bench.run --smoke    tiny run (make test): proves the benchmarks work, writes bench/out/ only

ack latency     a burst of signed `/edge publish` commands, then of button clicks, against `edgebot serve`
                (gunicorn), concurrently; p50/p99 and errors. Baseline: the same burst against /healthz.
pipeline        a one-arch publish through edgebot (slash command → summary in the thread) vs. the same docker
                build + push + Exchange calls made directly with the same clients. Ratio = edgebot / direct.
rollout scale   polls of 1,000 and 10,000 simulated nodes: Exchange requests per interval with independently
                scheduled rollouts, CPU of the fetching and the cached poll vs. json-decoding the same payload
                (bench/rollout_scale.py).
trust checks    what the sign job's seal checks and registry read-back add, vs. signing the same deployments
                (bench/trust_cost.py).
cross-arch      a two-arch release (amd64 native, arm64 under QEMU) on two build workers: wall ÷ sum of the builds;
                a buildah rebuild through the registry cache ÷ a cold build (bench/cross_arch.py).
slack burst     50 releases at once over three workers against a Slack workspace limit: 429s, lost updates and wall
                time with the shared Redis bucket vs. the same burst without it (bench/slack_burst.py).
failover        the Redis master SIGKILLed during a burst of publishes on Sentinel: acknowledged releases lost (goal
                0), published twice, time from the kill to the first job running again (bench/failover.py).
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


def _burst(send: Any, requests: list[Any], concurrency: int) -> dict[str, Any]:
    """Send prepared requests ``concurrency`` at a time; latency of each (ms) and the errors."""
    def one(request: Any) -> tuple[float, bool]:
        started = time.perf_counter()
        ok = send(request)
        return (time.perf_counter() - started) * 1000, ok

    with ThreadPoolExecutor(concurrency) as pool:
        samples = list(pool.map(one, requests))
    latencies = [ms for ms, _ in samples]
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "mean": statistics.fmean(latencies),
            "errors": sum(1 for _, ok in samples if not ok)}


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def ack_latency(stack: Any, count: int, concurrencies: tuple[int, ...] = (4, 20), rounds: int = 3) -> dict[str, Any]:
    """Per concurrency: ``rounds`` bursts of ``count`` signed ``/edge publish`` commands and of ``count`` ``/healthz``
    requests, interleaved with the order alternated. Every request is built and signed before its burst starts (the
    HMAC is the sender's cost, not the bot's); p50/p99 of each burst, min/median/max over the rounds."""
    from sandbox.stack import REQUESTER

    platform_ = stack.platform()
    http = platform_.http
    serial = iter(range(10_000, 1_000_000))

    def publishes() -> list[Any]:
        # --dry-run: a burst of real publishes of one service would be refused by the one-publish-per-service lock
        # after the first; dry runs are recorded and queued exactly like publishes, only without that lock
        made = []
        for _ in range(count):
            i = next(serial)
            made.append(platform_.signed_slash_command(f"publish hello 1.0.{i} --registry local --dry-run",
                                                       user_id=f"{REQUESTER}{i}", channel_id="C0RELEASES",
                                                       channel_name="releases"))
        return made

    def sent_publish(request: Any) -> bool:
        response = http.send(request)
        return response.status_code == 200 and "Queued release" in response.text

    def sent_health(request: Any) -> bool:
        return http.send(request).status_code == 200

    _burst(sent_publish, publishes()[:4], 4)  # warm-up: channel-membership cache, connections
    results: dict[str, Any] = {"count": count, "rounds": rounds, "by_concurrency": {}}
    for concurrency in concurrencies:
        arms: dict[str, list[dict[str, Any]]] = {"publish": [], "baseline_healthz": []}
        for round_ in range(rounds):
            order = ("publish", "baseline_healthz") if round_ % 2 == 0 else ("baseline_healthz", "publish")
            for name in order:
                if name == "publish":
                    arms[name].append(_burst(sent_publish, publishes(), concurrency))
                else:
                    health = [http.build_request("GET", stack.bot_url + "/healthz") for _ in range(count)]
                    arms[name].append(_burst(sent_health, health, concurrency))
        summary = {name: {"p50_ms": _spread([b["p50"] for b in bursts]), "p99_ms": _spread([b["p99"] for b in bursts]),
                          "errors": sum(b["errors"] for b in bursts)} for name, bursts in arms.items()}
        pub, base = summary["publish"], summary["baseline_healthz"]
        summary["ratio_p50"] = round(pub["p50_ms"]["median"] / max(base["p50_ms"]["median"], 0.1), 2)
        summary["ratio_p99"] = round(pub["p99_ms"]["median"] / max(base["p99_ms"]["median"], 0.1), 2)
        results["by_concurrency"][str(concurrency)] = summary
    release_ids = stack.release_ids()
    clicks = [platform_.signed_block_action(platform_.block_action_payload(
        action_id="release_status", value=release_ids[i % len(release_ids)], user_id=f"{REQUESTER}{i}",
        channel_id="C0RELEASES", message_ts="1800000000.000100", message={"text": "", "blocks": []}))
        for i in range(count)]
    button = _burst(sent_health, clicks, 4)  # a click is acked with an empty 200, then answered on response_url
    results["button"] = {"p50_ms": round(button["p50"], 1), "p99_ms": round(button["p99"], 1),
                         "errors": button["errors"]}
    return results


def ack_errors(ack: dict[str, Any]) -> int:
    return ack["button"]["errors"] + sum(arm["errors"] for by in ack["by_concurrency"].values()
                                         for name, arm in by.items() if name in ("publish", "baseline_healthz"))


def direct_publish(stack: Any, version: str) -> float:
    """What edgebot automates, done by hand with the same libraries: build, push, sign, Exchange calls."""
    from sandbox.stack import EXCHANGE_PASSWORD, EXCHANGE_USER, ORG, PULL_PASSWORD, PULL_USER, PUSH_PASSWORD, PUSH_USER
    from workers.definition import deployment_string, pin_images, read_definition
    from workers.exchange import ExchangeClient, publish_service
    from workers.images import build_image, push_image
    from workers.signing import PemSigner, sign_deployment
    from workers.source import checkout, read_file_at, resolve_ref

    started = time.perf_counter()
    source = stack.source_path
    cache = stack.workdir / "bench-cache"
    sha = resolve_ref(str(source), f"v{version}", cache)
    tree = checkout(str(source), sha, stack.workdir / f"bench-tree-{version}", cache)
    host = stack.registry.address
    definition = read_definition(
        read_file_at(str(source), sha, "horizon/service.definition.json", cache) or "",
        read_file_at(str(source), sha, "horizon/hzn.json", cache),
        org=ORG, version=version, arch="amd64", image_base=f"{host}/direct/hello",
    )
    repository = f"{host}/direct/hello_amd64"
    client = stack.docker.client()
    build_image(client, context_dir=tree, dockerfile="Dockerfile.amd64", tag=f"{repository}:{version}", arch="amd64")
    digest = push_image(client, repository=repository, tag=version, username=PUSH_USER, password=PUSH_PASSWORD)
    pinned = pin_images(definition.deployment, {name: f"{repository}@{digest}" for name in definition.built})
    text = deployment_string(pinned)
    signer = PemSigner(Path(stack.key_file).read_bytes(), "direct.public.pem")
    body = definition.exchange_body(text, sign_deployment(signer, text))
    body["url"] = "direct-hello"
    with ExchangeClient(stack.exchange.url, ORG, EXCHANGE_USER, EXCHANGE_PASSWORD) as exchange:
        publish_service(exchange, ORG, body, key_name="direct.public.pem", public_key_pem=signer.public_key_pem(),
                        dockauths=[(host, PULL_USER, PULL_PASSWORD)])
    return time.perf_counter() - started


def step_times(stack: Any, release_id: str) -> dict[str, float]:
    """Seconds each RQ job of a release ran (started → ended), and in total how long they waited in queues."""
    from rq.job import Job

    from edgebot.jobs import SERIALIZER, Step

    steps = {"prepare": Step.PREPARE.job_id(release_id), "build + push": Step.BUILD.job_id(release_id, "amd64"),
             "sign": Step.SIGN.job_id(release_id), "publish": Step.PUBLISH.job_id(release_id)}
    times: dict[str, float] = {}
    waited = 0.0
    for name, jid in steps.items():
        job = Job.fetch(jid, connection=stack.redis(), serializer=SERIALIZER)
        if job.started_at and job.ended_at:
            times[name] = (job.ended_at - job.started_at).total_seconds()
        if job.started_at and job.enqueued_at:
            waited += max(0.0, (job.started_at - job.enqueued_at).total_seconds())
    times["queue waits"] = waited
    return times


def edgebot_publish(stack: Any, version: str, steps: list[dict[str, float]] | None = None) -> float:
    """Slash command → summary posted in the thread, polled every 5 ms (coarser polling would bill edgebot for it)."""
    from sandbox.stack import wait_until

    store = stack.store()
    before = set(stack.release_ids())
    started = time.perf_counter()
    response = stack.command(f"publish hello {version} --registry local")
    assert response.status_code == 200, response.text
    new = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, interval=0.005, what="release record")
    release_id = next(iter(new))
    release = wait_until(lambda: (r := store.get(release_id)) is not None and r.summary_ts and r, timeout=300,
                         interval=0.005, what="summary in the thread")
    elapsed = time.perf_counter() - started
    if release.state != "succeeded":
        raise RuntimeError(f"benchmark release {release_id} ended {release.state}: {release.error}")
    if steps is not None:
        steps.append(step_times(stack, release_id))
    return elapsed


HEAVY_DOCKERFILE = """FROM amd64/busybox:1.36
COPY index.html /www/index.html
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox dd if=/dev/urandom of=/payload bs=1M count=32 2>/dev/null"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]
"""


def pipeline_overhead(stack: Any, rounds: int, *, heavy: bool, offset: int) -> dict[str, Any]:
    """Alternate direct and edgebot publishes of fresh commits (no build cache shared between them).

    ``heavy``: each image gets a 32 MiB layer of random bytes, built and pushed for real — closer to a real edge
    service than the 2 MB sample, whose build and push take a fraction of a second.
    """
    from sandbox.processes import add_commit

    direct: list[float] = []
    through: list[float] = []
    steps: list[dict[str, float]] = []
    for i in range(rounds):  # alternate, so cache warmth and machine noise hit both sides alike
        n = offset + i
        for major in (2, 3):
            files: dict[str, bytes | str] = {"index.html": f"round {n} side {major}\n"}
            if heavy:
                files["Dockerfile.amd64"] = HEAVY_DOCKERFILE
            add_commit(stack.source_path, files, tag=f"v{major}.0.{n}")
        direct.append(direct_publish(stack, f"2.0.{n}"))
        through.append(edgebot_publish(stack, f"3.0.{n}", steps))
    d, e = statistics.median(direct), statistics.median(through)
    breakdown = {name: round(statistics.median(s[name] for s in steps if name in s) * 1000)
                 for name in steps[0]} if steps else {}
    return {"rounds": rounds, "heavy": heavy, "direct_median_s": round(d, 3), "edgebot_median_s": round(e, 3),
            "ratio": round(e / d, 2), "overhead_pct": round((e / d - 1) * 100, 1),
            "overhead_s": round(e - d, 3), "steps_ms": breakdown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    from sandbox.stack import Stack

    count, ack_rounds, rounds = (20, 1, 1) if args.smoke else (300, 5, 5)
    with tempfile.TemporaryDirectory(prefix="edgebot-bench-") as tmp:
        stack = Stack(Path(tmp), settings={"duplicate_window": 1})
        try:
            stack.start(workers=False, bot=False)
            stack.start_bot(workers=2)
            ack = ack_latency(stack, count, rounds=ack_rounds)
            stack.redis().flushdb()
            stack.start_worker("publish", "--publish")
            stack.start_worker("build-amd64", "--arch", "amd64")
            stack.wait_workers(2)
            overhead = {
                "sample": pipeline_overhead(stack, rounds, heavy=False, offset=0),
                "heavy": pipeline_overhead(stack, max(1, rounds - 2), heavy=True, offset=100),
            }
            from bench import trust_cost

            checks = trust_cost.run(stack, 3 if args.smoke else 30)
        finally:
            stack.stop()
    from bench import rollout_scale

    rollout = rollout_scale.run_sizes(smoke=args.smoke)
    from bench import cross_arch, slack_burst

    cross = cross_arch.run(smoke=args.smoke)
    burst = slack_burst.run(4 if args.smoke else 50)
    from bench import failover

    fo = failover.run(1, 2) if args.smoke else failover.run(3, 4)
    results = {"mode": "smoke" if args.smoke else "full", "machine": f"{platform.machine()} {platform.system()}",
               "ack_latency": ack, "pipeline_overhead": overhead, "trust_checks": checks, "rollout_scale": rollout,
               "slack_burst": burst, "cross_arch": cross, "failover": fo}
    save_results("results", results)
    if not args.smoke:
        write_report(results)
    errors = ack_errors(ack)
    burst_failed = burst["with_bucket"]["lost_updates"] or burst["with_bucket"]["limited_429"] > slack_burst.ALLOWED_429
    fo_failed = fo["lost_total"] or fo["published_twice_total"]
    return 1 if errors or rollout_scale.failed(rollout) or burst_failed or fo_failed else 0


def write_report(results: dict[str, Any]) -> None:
    ack, over, heavy = results["ack_latency"], results["pipeline_overhead"]["sample"], \
        results["pipeline_overhead"]["heavy"]
    button = ack["button"]
    steps = ", ".join(f"{name} {ms} ms" for name, ms in over.get("steps_ms", {}).items()) or "not measured"

    def row(label: str, arm: dict[str, Any]) -> str:
        p50, p99 = arm["p50_ms"], arm["p99_ms"]
        return (f"| {label} | {p50['min']} / {p50['median']} / {p50['max']} ms "
                f"| {p99['min']} / {p99['median']} / {p99['max']} ms | {arm['errors']} |")

    rows = "\n".join(
        f"{row(f'`/edge publish` ack, {c} at a time', by['publish'])}\n"
        f"{row(f'baseline `/healthz`, {c} at a time', by['baseline_healthz'])}\n"
        f"| ratio of the medians, {c} at a time | {by['ratio_p50']}× | {by['ratio_p99']}× | |"
        for c, by in ack["by_concurrency"].items())
    ack_text = f"""## Slash-command ack latency

Bursts of {ack['count']} signed `/edge publish` commands ({ack['count']} distinct releases each) against `edgebot
serve` (gunicorn, 2 processes × 8 threads), through the real Bolt app: parse, catalog checks, channel check (cached),
Redis MULTI (record + first job), ack. Baseline: bursts of the same size against the bot's `/healthz`. Every request
is built and signed before its burst starts (signing is Slack's cost, not the bot's). Per concurrency,
{ack['rounds']} rounds, the two arms interleaved with the order alternated; p50 and p99 of each burst, min / median /
max over the rounds.

| | p50 min / median / max | p99 min / median / max | errors |
|---|---|---|---|
{rows}
| button click ack (Status), 4 at a time | {button['p50_ms']} ms | {button['p99_ms']} ms | {button['errors']} |

Slack allows 3 s; the target is p99 under 100 ms. Button clicks (signed `block_actions` on the Status button of the
queued releases) are acked first and answered through the response_url after.
"""
    overhead_text = f"""## Pipeline overhead (one arch)

Slash command → summary in the thread through edgebot (real RQ workers, Redis, Docker Engine, TLS registry,
Exchange stand-in, every thread update) vs. the same source checkout, docker build, push, signing and Exchange calls
made directly with the same libraries. Each publish builds a fresh commit (no shared build cache); the two sides
alternate; medians.

| workload | rounds | direct | edgebot | ratio | overhead |
|---|---|---|---|---|---|
| sample service (2 MB image) | {over['rounds']} | {over['direct_median_s']} s | {over['edgebot_median_s']} s \
| {over['ratio']}× | +{over['overhead_s']} s ({over['overhead_pct']} %) |
| 32 MiB layer built and pushed | {heavy['rounds']} | {heavy['direct_median_s']} s \
| {heavy['edgebot_median_s']} s | {heavy['ratio']}× | +{heavy['overhead_s']} s ({heavy['overhead_pct']} %) |

edgebot adds a roughly fixed cost per release, not a share of the build: four RQ jobs and the build worker's reports
(applied by a publish worker, since a build worker may not write the record: Redis ACL roles), each dequeued by a
warm worker and run in a forked work horse (~10–15 ms per hop), the release record read and written around every
step, the Exchange reads that make a retry safe (the "already published" check, the key and dockauth
comparison), and about twenty Slack calls, which workers send in the background and flush as each job ends. Against
a sub-second publish of a tiny image that fixed cost is the ratio above; the design target (under 10 %) holds only
for builds and pushes of several seconds, which is what real edge images take. Each step claims its lease and
ledger entry and fences its writes (crash recovery), which is part of that cost. The signing key's RSA parameter
check runs once per worker, not per job (it cost sign and publish ~25 ms each with this 2048-bit key, ~190 ms with
a 4096-bit one). Where the time goes in a sample
release (medians of the RQ jobs' own timestamps, this run): {steps}.
"""
    from bench import cross_arch, failover, rollout_scale, slack_burst, trust_cost

    for section in (ack_text, overhead_text, trust_cost.report_section(results["trust_checks"]),
                    rollout_scale.report_section(results["rollout_scale"]),
                    slack_burst.report_section(results["slack_burst"]), failover.report_section(results["failover"]),
                    cross_arch.report_section(results["cross_arch"])):
        write_measured(section, "make bench", results["machine"])


if __name__ == "__main__":
    raise SystemExit(main())
