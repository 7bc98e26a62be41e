"""Soak: many releases over two workers while a killer SIGKILLs workers and work horses at random.

    python -m bench.soak                  50 releases; writes docs/BENCHMARKS.md's soak section (make soak)
    python -m bench.soak --releases 12    a shorter run, same report
    python -m bench.soak --smoke          3 releases, 1 kill; writes bench/out/soak.json only

Real parts as in the end-to-end tests (Redis with AOF, dockerd, TLS registry, git, `edgebot worker` processes);
stand-ins for Slack and the Exchange. Each release publishes its own service (the one-publish-per-service lock would
otherwise refuse all but one) at its own version; every build sleeps two seconds (after the COPY of a file that
differs per version, so the layer cache cannot skip it) so kills land mid-step.

Checked at the end (exit status 1 if any fails): every release is final and succeeded; no service was created twice
or overwritten, and each key and dockauth was written once (the Exchange stand-in's request log); no lease, publish
lock or in-flight ledger entry is left behind.

Measured: for every SIGKILL of a work horse with its worker that interrupted a step, the time until the reaper
re-enqueued the step ("resumed") and until a worker claimed the new attempt ("running again"). Baseline, in the same
run: the same number of releases submitted at once on the same workers with nothing killed; the ratio compares the
wall times of the two batches.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.report import save_results
from bench.run import ROOT, percentile
from sandbox.stack import FAST_RECOVERY

SETTINGS = {**FAST_RECOVERY, "duplicate_window": 1}
DOCKERFILE = """FROM amd64/busybox:1.36
COPY index.html /www/index.html
RUN ["/bin/busybox", "sleep", "2"]
CMD ["/bin/busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]
"""
WORKERS = ("soak-a", "soak-b")


def _services(count: int) -> dict[str, list[str]]:
    return {f"soak{i}": ["amd64"] for i in range(count)}


def _commit_versions(stack: Any, versions: list[str]) -> None:
    from sandbox.processes import add_commit

    definition = (ROOT / "examples/hello/horizon/service.definition.json").read_text()
    for version in versions:
        add_commit(stack.source_path, {"Dockerfile.amd64": DOCKERFILE, "horizon/service.definition.json": definition,
                                       "index.html": f"soak {version}\n"}, tag=f"v{version}")


def _submit(stack: Any, service: str, version: str) -> str:
    from sandbox.stack import wait_until

    before = set(stack.release_ids())
    answer = stack.command(f"publish {service} {version} --registry local", user_id=f"U0SOAK{service.upper()}")
    if "Queued" not in answer.json()["text"]:
        raise RuntimeError(f"{service} {version} was not queued: {answer.json()['text']}")
    (release_id,) = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the release record")
    return str(release_id)


def _start_workers(stack: Any) -> None:
    for name in WORKERS:
        if f"worker-{name}" not in stack.processes:
            stack.start_worker(name, "--publish", "--arch", "amd64")


def _all_final(stack: Any, release_ids: list[str]) -> bool:
    store = stack.store()
    return all((r := store.get(i)) is not None and r.is_final for i in release_ids)


def _wait_final(stack: Any, release_ids: list[str], timeout: float) -> None:
    from sandbox.stack import wait_until

    wait_until(lambda: _all_final(stack, release_ids), timeout=timeout, interval=0.5,
               what=f"{len(release_ids)} releases to end")


def run_batch(stack: Any, services: list[str], versions: list[str], timeout: float,
              killer: Killer | None = None) -> tuple[list[str], float, list[float]]:
    """Submit every release at once, wait until all ended; (release ids, wall seconds, per-release durations)."""
    started = time.time()
    release_ids = [_submit(stack, s, v) for s, v in zip(services, versions, strict=True)]
    if killer is not None:
        killer.start()
    try:
        _wait_final(stack, release_ids, timeout=timeout)
    finally:
        if killer is not None:
            killer.stop.set()
            killer.join(timeout=30)
            with killer.lock:
                _start_workers(stack)
    wall = time.time() - started
    store = stack.store()
    durations = [(r.ended_at or time.time()) - r.created_at for r in (store.require(i) for i in release_ids)]
    return release_ids, wall, durations


class Killer(threading.Thread):
    """SIGKILLs a random worker every few seconds — alone, or with its work horse — and restarts it shortly after."""

    def __init__(self, stack: Any, *, every: tuple[float, float], seed: int, max_kills: int | None) -> None:
        super().__init__(daemon=True, name="soak-killer")
        self.stack = stack
        self.every = every
        self.random = random.Random(seed)
        self.max_kills = max_kills
        self.kills: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop.wait(self.random.uniform(*self.every)):
            if self.max_kills is not None and len(self.kills) >= self.max_kills:
                return
            name = self.random.choice(WORKERS)
            with_horse = self.random.random() < 0.6
            with self.lock:
                if f"worker-{name}" not in self.stack.processes:
                    continue
                horses = self.stack.horse_pids(f"worker-{name}")
                at = time.time()
                self.stack.kill_worker(f"worker-{name}", horse=with_horse)
                self.kills.append({"at": at, "worker": name, "horse": with_horse, "busy": bool(horses)})
            if self.stop.wait(self.random.uniform(0.5, 2.0)):
                return
            with self.lock:
                _start_workers(self.stack)


def recovery_times(stack: Any, release_ids: list[str], kills: list[dict[str, Any]]) -> dict[str, list[float]]:
    """For each resumed step: seconds from the SIGKILL that interrupted it to the reaper's re-enqueue, and to the
    new attempt being claimed by a worker."""
    from edgebot.steps import StepLedger

    store = stack.store()
    ledger = StepLedger(stack.redis(), store.settings)
    horse_kills = sorted(k["at"] for k in kills if k["horse"] and k["busy"])
    to_resumed: list[float] = []
    to_running: list[float] = []
    for release_id in release_ids:
        release = store.require(release_id)
        entries = ledger.entries(release_id)
        for event in release.events:
            if event["what"] != "resumed":
                continue
            killed = [at for at in horse_kills if at <= event["at"]]
            if not killed:
                continue
            to_resumed.append(event["at"] - killed[-1])
            entry = entries.get(event["step"])
            if entry is not None and entry.attempt == event["attempt"] and entry.claimed_at >= event["at"]:
                to_running.append(entry.claimed_at - killed[-1])
    return {"to_resumed": to_resumed, "to_running": to_running}


def invariants(stack: Any, release_ids: list[str], mark: int) -> dict[str, Any]:
    from sandbox.stack import ORG

    store = stack.store()
    releases = [store.require(i) for i in release_ids]
    states: dict[str, int] = {}
    for release in releases:
        states[release.state] = states.get(release.state, 0) + 1
    ok_writes = [(r["method"], r["path"]) for r in stack.exchange.requests()[mark:] if r["status"] == 201]
    created = ok_writes.count(("POST", f"/edge-exchange/v1/orgs/{ORG}/services"))
    published = {release.results["amd64"].service_id for release in releases if release.state == "succeeded"}
    keys = [p for m, p in ok_writes if m == "PUT" and "/keys/" in p]
    dockauths = [p for m, p in ok_writes if m == "POST" and p.endswith("/dockauths")]
    overwrites = [p for m, p in ok_writes if m == "PUT" and p.rsplit("/", 2)[-2] == "services"]
    connection = stack.redis()
    from workers.reaper import reap

    reap(connection, store.settings)  # one pass forgets releases that ended since the workers' last pass
    leftovers = {
        "leases": sorted(k.decode() for k in connection.scan_iter(match="edgebot:lease:*")),
        "publish_locks": sorted(k.decode() for k in connection.scan_iter(match="edgebot:publish-lock:*")),
        "inflight": sorted(m.decode() for m in connection.zrange("edgebot:inflight", 0, -1)),  # type: ignore[union-attr]
    }
    return {
        "states": states,
        "services_created": created,
        "services_published": len(published),
        "published_twice": created != len(published) or len(keys) != len(set(keys))
        or len(dockauths) != len(set(dockauths)) or bool(overwrites),
        "leftovers": leftovers,
        "ok": states == {"succeeded": len(releases)} and created == len(published) == len(releases)
        and len(keys) == len(set(keys)) == len(releases) and len(dockauths) == len(set(dockauths)) == len(releases)
        and not overwrites and not any(leftovers.values()),
    }


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_s": round(percentile(values, 50), 2), "max_s": round(max(values), 2),
            "mean_s": round(statistics.fmean(values), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--releases", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    from sandbox.processes import RedisServer
    from sandbox.stack import Stack

    count = 3 if args.smoke else args.releases
    versions = [f"3.{i}.0" for i in range(2 * count)]
    services = [f"soak{i}" for i in range(2 * count)]
    timeout = 300 + 30 * count
    with tempfile.TemporaryDirectory(prefix="edgebot-soak-", dir="/tmp") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis", appendonly=True)
        stack = Stack(Path(tmp) / "stack", settings=SETTINGS, redis_server=redis_server,
                      extra_services=_services(2 * count))
        try:
            redis_server.start()
            stack.start(workers=False)
            _commit_versions(stack, versions)
            _start_workers(stack)
            stack.wait_workers(len(WORKERS))
            # baseline: the same number of releases, at once, on the same workers, nothing killed
            _, base_wall, base = run_batch(stack, services[:count], versions[:count], timeout)
            mark = len(stack.exchange.requests())
            killer = Killer(stack, every=(2.0, 5.0) if args.smoke else (4.0, 9.0), seed=args.seed,
                            max_kills=1 if args.smoke else None)
            release_ids, soak_wall, durations = run_batch(stack, services[count:], versions[count:], timeout, killer)
            times = recovery_times(stack, release_ids, killer.kills)
            checks = invariants(stack, release_ids, mark)
        finally:
            stack.stop()
            redis_server.stop()
    results = {
        "mode": "smoke" if args.smoke else "full",
        "machine": f"{platform.machine()} {platform.system()}",
        "releases": count,
        "workers": len(WORKERS),
        "settings": SETTINGS,
        "kills": {"total": len(killer.kills), "worker_alone": sum(1 for k in killer.kills if not k["horse"]),
                  "worker_and_horse": sum(1 for k in killer.kills if k["horse"]),
                  "interrupting_a_step": sum(1 for k in killer.kills if k["horse"] and k["busy"])},
        "kill_to_resumed": _summary(times["to_resumed"]),
        "kill_to_running_again": _summary(times["to_running"]),
        "batch": {"baseline_wall_s": round(base_wall, 1), "soak_wall_s": round(soak_wall, 1),
                  "wall_ratio": round(soak_wall / max(base_wall, 0.01), 2),
                  "baseline_mean_release_s": round(statistics.fmean(base), 2),
                  "soak_mean_release_s": round(statistics.fmean(durations), 2)},
        "invariants": checks,
    }
    save_results("soak", results)
    if not args.smoke:
        write_report(results)
    return 0 if checks["ok"] else 1


def _row(summary: dict[str, Any]) -> str:
    cells = [f"{summary.get(k, '–')} s" for k in ("p50_s", "max_s", "mean_s")]
    return " | ".join([str(summary.get("count", 0)), *cells])


def write_report(results: dict[str, Any]) -> None:
    marker = "## Soak: random SIGKILLs of workers and work horses"
    k, inv, b = results["kills"], results["invariants"], results["batch"]
    res, run = results["kill_to_resumed"], results["kill_to_running_again"]
    st = results["settings"]
    text = f"""{marker}

`make soak` (`python -m bench.soak`), {results['machine']}: {results['releases']} releases (one service each) over
{results['workers']} workers that serve every queue, while a killer SIGKILLs a random worker every 4–9 s — the
`rq worker` process alone ({k['worker_alone']}×) or together with its work horse ({k['worker_and_horse']}×, of which
{k['interrupting_a_step']} interrupted a running step) — and restarts it 0.5–2 s later. Settings: lease
{st['lease_ttl']} s renewed every {st['lease_renew_interval']} s, reaper every {st['reaper_interval']} s.

| | count | p50 | max | mean |
|---|---|---|---|---|
| SIGKILL → step re-enqueued by the reaper | {_row(res)} |
| SIGKILL → new attempt running on a worker | {_row(run)} |

The bound is `lease_ttl` (from the last renewal) + `reaper_interval` + a free worker (resumed steps go to the front of
their queue); RQ alone would notice after its 90 s execution TTL at a 10-minute maintenance pass. A kill counts
as interrupting a step when the worker had a work horse at that moment; that horse may already have been past its
step (sending thread updates), or the worker may have seen its horse die first and let RQ retry the job itself, so
not every such kill leads to a resume.

| {results['releases']} releases at once | wall time | mean release duration |
|---|---|---|
| baseline: nothing killed | {b['baseline_wall_s']} s | {b['baseline_mean_release_s']} s |
| soak: under kills | {b['soak_wall_s']} s | {b['soak_mean_release_s']} s |
| ratio | {b['wall_ratio']}× | |

Invariants: final states {inv['states']}; services created {inv['services_created']} for
{inv['services_published']} published releases; published twice: {'yes' if inv['published_twice'] else 'none'};
left behind: {sum(len(v) for v in inv['leftovers'].values())} leases/locks/ledger entries. All held: {inv['ok']}.
"""
    from bench.report import write_section

    write_section(text)


if __name__ == "__main__":
    raise SystemExit(main())
