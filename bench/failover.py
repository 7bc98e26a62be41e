"""Sentinel failover: what a Redis master crash costs edgebot.

    python -m bench.failover            3 rounds of a 4-release burst; writes docs/BENCHMARKS.md's section
    python -m bench.failover --smoke    1 round of 2 releases; writes bench/out/failover.json only

Real parts as in tests/test_sentinel_e2e.py: Debian's redis-server (a master, two replicas, AOF, ACL users) and three
redis-sentinel on loopback, the real bot (gunicorn) and worker processes on a ``redis+sentinel://`` URL with
``redis_wait_replicas = 1``, dockerd, a TLS registry, the Slack and Exchange stand-ins. Each round sends a burst of
publishes (one per catalog service, each its own version) and SIGKILLs the master right after the first command
was answered; the killed node is started again after the round (the sentinels make it a replica).

Reported per round, then min/median/max over rounds:

lost            releases the bot acknowledged as queued that did not succeed (goal: 0)
published twice Exchange service writes beyond one per release that succeeded (goal: 0)
recovery        seconds from the kill to the first RQ job that started after it (a worker took work again from the
                new master), read from the jobs' own ``started_at``
refused         commands answered "not queued" or not at all (honest refusals, never counted as lost)
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from bench.report import save_results, write_measured

QUEUED = re.compile(r"Queued release `(r-[0-9a-f]+)`")
SERVICE_WRITE = re.compile(r"/orgs/acme/services(/[^/]+)?$")


def _first_start_after(stack: Any, since: float) -> float | None:
    """The earliest ``started_at`` (epoch seconds) of an edgebot RQ job that started after ``since``."""
    from rq.job import Job

    from edgebot.jobs import SERIALIZER

    conn = stack.redis()
    starts = []
    for key in conn.scan_iter(match=b"rq:job:*", count=500):
        job_id = key.decode()[len("rq:job:"):]
        try:
            job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
        except Exception:  # noqa: BLE001 - a job that expired or is half written is simply not counted
            continue
        if job.started_at is not None:
            at = job.started_at
            started = (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
            if started > since:
                starts.append(started)
    return min(starts) if starts else None


def one_round(stack: Any, cluster: Any, services: list[str], versions: list[str]) -> dict[str, Any]:
    from edgebot.release import SUCCEEDED
    from sandbox.stack import wait_until

    writes_before = _service_writes(stack)
    records_before = set(stack.release_ids())
    old = cluster.master_port()
    answers: dict[str, str] = {}
    killed_at = 0.0
    for i, (name, version) in enumerate(zip(services, versions, strict=True)):
        answers[name] = stack.answer(f"publish {name} {version} --registry local")
        if i == 0:
            killed_node = cluster.kill_master()
            killed_at = time.time()
    cluster.wait_failover(old)
    acknowledged = {n: m.group(1) for n, t in answers.items() if (m := QUEUED.search(t))}
    lost = 0
    for release_id in acknowledged.values():
        try:
            release = stack.wait_final(release_id, timeout=600)
        except TimeoutError:
            lost += 1
            continue
        lost += release.state != SUCCEEDED
    first = wait_until(lambda: _first_start_after(stack, killed_at), timeout=120, what="a job started after the kill")
    # a command whose answer was lost may still have been recorded and run: count what succeeded, not what was acked
    new = [stack.wait_final(rid, timeout=600) for rid in set(stack.release_ids()) - records_before]
    twice = max(0, _service_writes(stack) - writes_before - sum(r.state == SUCCEEDED for r in new))
    killed_node.start()  # back as a replica of the new master
    cluster.wait_replicas_online(len(cluster.nodes) - 1)
    return {"sent": len(services), "acknowledged": len(acknowledged), "refused": len(services) - len(acknowledged),
            "lost": lost, "published_twice": twice, "recovery_s": round(first - killed_at, 2)}


def _service_writes(stack: Any) -> int:
    return sum(1 for r in stack.exchange.requests() if r["method"] in ("POST", "PUT")
               and SERVICE_WRITE.search(r["path"]) and 200 <= r["status"] < 300)


def run(rounds: int, burst: int) -> dict[str, Any]:
    from sandbox.sentinel import RedisSentinelCluster
    from sandbox.stack import FAST_RECOVERY, Stack

    services = [f"svc{i}" for i in range(burst)]
    versions = [f"1.0.{i}" for i in range(rounds * burst)]
    settings = {**FAST_RECOVERY, "redis_wait_replicas": 1, "redis_wait_timeout_ms": 2000, "bot_redis_timeout": 10.0}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgebot-failover-") as tmp, \
            RedisSentinelCluster(Path(tmp) / "redis", replicas=2) as cluster:
        stack = Stack(Path(tmp) / "stack", sentinel=cluster, settings=settings, versions=tuple(versions),
                      extra_services={name: ["amd64"] for name in services})
        try:
            stack.start()
            stack.wait_workers(2)
            for r in range(rounds):
                results.append(one_round(stack, cluster, services, versions[r * burst:(r + 1) * burst]))
        finally:
            stack.stop()
    recovery = [r["recovery_s"] for r in results]
    return {"rounds": results, "lost_total": sum(r["lost"] for r in results),
            "published_twice_total": sum(r["published_twice"] for r in results),
            "acknowledged_total": sum(r["acknowledged"] for r in results),
            "sent_total": sum(r["sent"] for r in results),
            "recovery_s": {"min": min(recovery), "median": statistics.median(recovery), "max": max(recovery)}}


def report_section(results: dict[str, Any]) -> str:
    rows = "\n".join(f"| {i + 1} | {r['sent']} | {r['acknowledged']} | {r['refused']} | {r['lost']} | "
                     f"{r['published_twice']} | {r['recovery_s']} s |" for i, r in enumerate(results["rounds"]))
    rec = results["recovery_s"]
    return f"""## Sentinel failover

A burst of publishes (one per catalog service) with the Redis master SIGKILLed right after the first command was
answered: a master, two replicas and three sentinels on loopback (`down-after-milliseconds` 3000), the bot and
workers on `redis+sentinel://` with `redis_wait_replicas = 1` (`bench/failover.py`). Lost: acknowledged as queued
but never succeeded. Recovery: from the kill to the first RQ job that started after it.

| round | sent | acknowledged | refused ("not queued" / no answer) | lost | published twice | recovery |
|---|---|---|---|---|---|---|
{rows}

Acknowledged releases lost: **{results['lost_total']}** of {results['acknowledged_total']} (goal 0). Published
twice: {results['published_twice_total']}. Recovery min/median/max: {rec['min']} / {rec['median']} / {rec['max']} s,
most of it Sentinel's own detection (`down-after-milliseconds`) and election. A refused command was answered
"not queued" (no replica confirmed in time) or not at all while Redis was failing over: never a false "queued".
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=4)
    args = parser.parse_args(argv)
    results = run(1, 2) if args.smoke else run(args.rounds, args.burst)
    results["machine"] = f"{platform.machine()} {platform.system()}"
    save_results("failover", results)
    if not args.smoke:
        write_measured(report_section(results), "python -m bench.failover", results["machine"])
    return 1 if results["lost_total"] or results["published_twice_total"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
