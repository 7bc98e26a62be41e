"""Rollout watch at fleet scale: polls of 1,000 and 10,000 simulated nodes.

    python -m bench.rollout_scale            1,000 and 10,000 nodes; replaces the rollout section of docs/BENCHMARKS.md
    python -m bench.rollout_scale --smoke    300 nodes; prints only (bench.run --smoke runs it too)

Set-up: the Exchange stand-in with simulated agents (signed service 1.0.0 and 1.1.0, a policy pinning 1.1.0 with 1.0.0
as fallback; 2 % of the nodes fail 1.1.0 and fall back, 1 % are offline), real Redis, and the production poll code
(``workers.rollout_watch.shared_node_details`` + ``edgebot.fleet_summary.summarize``).

Nodes carry typed properties, 10 % of them a node policy (constraints; 1 % refuse the policy), and the policy has
constraints and properties, so each poll decides membership in both directions as the agbot does.

Measured:

* Exchange requests per poll interval with several rollouts of the org scheduled independently (each its own thread,
  polling every interval from a random phase, as separate releases do), over several intervals of wall time.
* CPU of one poll (this thread's ``time.thread_time``: the stand-in's threads do not count) in two kinds: the poll
  that fetches (the shared answer has expired: GET, cache write, decode, membership, summary) and the poll that reads
  the cached answer; baseline on the same payload in the same run: ``json.loads`` of it alone. The three arms are
  interleaved, their order rotating each round; min / median / max kept; ratio = median arm / median baseline.

The offline cut-off cannot be hit by the bench's own slowness: the offline nodes' last heartbeat is an hour old and
the cut-off is five minutes, and the bench checks every poll's counts against the fleet it built (a poll that counted
an online node offline, or the reverse, makes the run fail).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.report import write_measured

ROOT = Path(__file__).resolve().parent.parent
ORG, PW = "acme", "bench-pw"
SECTION = "## Rollout watch at scale"
OFFLINE_AFTER = 300.0
"""rollout_offline_after here: far above anything the bench's own slowness can add to a heartbeat's age (a 12 MB
answer took over 2 s to fetch on a loaded machine, and a 2 s cut-off counted every node offline), far below the
offline nodes' hour-old heartbeat."""


def _publish(client: httpx.Client, signer: Any, version: str) -> None:
    from workers.signing import sign_deployment

    deployment = json.dumps({"services": {"hello": {"image": f"reg.example:5000/edge/hello_amd64@sha256:{'b' * 64}",
                                                    "env": [f"V={version}"]}}}, sort_keys=True, separators=(",", ":"))
    body = {"label": "hello", "public": False, "url": "hello", "version": version, "arch": "amd64",
            "sharable": "multiple", "deployment": deployment,
            "deploymentSignature": sign_deployment(signer, deployment)}
    sid = f"hello_{version}_amd64"
    client.post(f"orgs/{ORG}/services", json=body).raise_for_status()
    client.put(f"orgs/{ORG}/services/{sid}/keys/k.pem", content=signer.public_key_pem(),
               headers={"Content-Type": "text/plain"}).raise_for_status()
    client.post(f"orgs/{ORG}/services/{sid}/dockauths",
                json={"registry": "reg.example:5000", "username": "u", "token": "t"}).raise_for_status()


POLICY_CONSTRAINTS = ("group == fleet && memory >= 1024",)
POLICY_PROPERTIES = ({"name": "tier", "value": "prod"},)


def _node_policy(i: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Typed node properties for every node; a node policy's constraints on 11 % of them (1 % refuse the policy)."""
    properties: list[dict[str, Any]] = [{"name": "group", "value": "fleet"},
                                        {"name": "memory", "value": 2048, "type": "int"}]
    if i % 100 == 50:
        return properties, ["tier == test"]  # refuses the policy: the agbot makes no agreement, the stage leaves it out
    if i % 10 == 3:
        return properties, ["tier == prod || tier == canary"]
    return properties, []


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values) * 1000, 1), "median": round(statistics.median(values) * 1000, 1),
            "max": round(max(values) * 1000, 1)}


def _expected(nodes: int) -> dict[str, int]:
    """The counts every poll of the bench's fleet must give (offline: every 100th node; failing ones fall back)."""
    refusing = len([i for i in range(1, nodes + 1) if i % 100 == 50])
    offline = len([i for i in range(100, nodes + 1, 100)])
    return {"total": nodes - refusing, "offline": offline}


def run(*, nodes: int, rollouts: int = 3, rounds: int = 5, intervals: int = 6) -> dict[str, Any]:
    from edgebot.config import parse_config
    from edgebot.fleet_summary import Target, summarize
    from edgebot.secrets import SecretResolver
    from sandbox.exchange import ExchangeStandIn
    from sandbox.proc_base import wait_until
    from sandbox.processes import RedisServer
    from workers.context import WorkerContext
    from workers.rollout_watch import shared_node_details
    from workers.signing import PemSigner, generate_private_key_pem

    poll_interval = 3.0
    with tempfile.TemporaryDirectory(prefix="edgebot-rollout-bench-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis")
        redis_server.start()
        standin = ExchangeStandIn()
        standin.fleet.apply_delay, standin.fleet.heartbeat_interval = 0.0, 0.25
        standin.start()
        try:
            standin.add_user(ORG, "edgebot", PW, admin=True)  # sees every node of the org
            signer = PemSigner(generate_private_key_pem(2048), "k.pem")
            refusing = set()
            with httpx.Client(base_url=standin.url + "/", auth=(f"{ORG}/edgebot", PW), timeout=60) as client:
                for version in ("1.0.0", "1.1.0"):
                    _publish(client, signer, version)
                for i in range(1, nodes + 1):
                    properties, constraints = _node_policy(i)
                    node_id = standin.fleet.add_node(ORG, f"node-{i}", "amd64", properties=properties,
                                                     constraints=constraints)
                    if i % 50 == 25:
                        standin.fleet.set_failing(node_id, ["1.1.0"])
                    if constraints == ["tier == test"]:
                        refusing.add(node_id)
                policy = {"label": "fleet", "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
                    {"version": "1.1.0", "priority": {"priority_value": 1, "retries": 1, "retry_durations": 60}},
                    {"version": "1.0.0", "priority": {"priority_value": 2, "retries": 1, "retry_durations": 60}}]},
                    "properties": list(POLICY_PROPERTIES), "constraints": list(POLICY_CONSTRAINTS)}
                client.post(f"orgs/{ORG}/business/policies/fleet", json=policy).raise_for_status()
            wait_until(lambda: all(standin.fleet.running(n) for n in list(standin.fleet.nodes) if n not in refusing),
                       timeout=900, interval=1.0, what="every compatible simulated node to run the service")
            an_hour_ago = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3600)) + ".000000Z[UTC]"
            for i in range(100, nodes + 1, 100):
                standin.fleet.set_online(f"{ORG}/node-{i}", False)
            time.sleep(1.0)  # a heartbeat round already under way ends before the stamps are set back
            with standin.state.lock:
                for i in range(100, nodes + 1, 100):
                    standin.state.nodes[ORG][f"{ORG}/node-{i}"]["lastHeartbeat"] = an_hour_ago
            config = parse_config({
                "slack": {"bot_token": "env:B", "signing_secret": "env:S"}, "redis": {"url": redis_server.url},
                "exchange": {"url": standin.url, "username": f"{ORG}/edgebot", "password": "env:EXCHANGE_PW"},
                "signing": {"private_key": "file:/nonexistent"},
                "registries": {"r": {"host": "reg.example:5000", "push_username": "u", "push_password": "env:P"}},
                "services": {"hello": {"source": "/x", "org": ORG, "arches": ["amd64"]}},
                "settings": {"rollout_poll_interval": poll_interval, "rollout_offline_after": OFFLINE_AFTER},
            }, environ={})
            ctx = WorkerContext(config, SecretResolver(environ={"EXCHANGE_PW": PW}))
            target = [Target("policy", "fleet", "*", POLICY_CONSTRAINTS, POLICY_PROPERTIES)]
            key = f"{config.settings.key_prefix}:rollout:node-details:{ORG}"
            expected = _expected(nodes)
            wrong: list[dict[str, int]] = []
            counts: dict[str, int] = {}
            left_out = 0

            def poll() -> float:
                cpu = time.thread_time()  # this thread only: the stand-in's threads share the process
                found = shared_node_details(ctx, ORG)
                summary = summarize(found, org=ORG, url="hello", version="1.1.0", targets=target,
                                    offline_after=OFFLINE_AFTER, now=time.time())
                spent = time.thread_time() - cpu
                nonlocal counts, left_out
                counts, left_out = summary.as_dict(), sum(len(v) for v in summary.refused.values())
                if {name: counts[name] for name in expected} != expected:
                    wrong.append(counts)
                return spent

            def node_details_gets() -> int:
                return len([r for r in standin.requests() if r["path"].endswith("/node-details")])

            # 1. requests per interval: independently scheduled rollouts of the org
            ctx.redis.delete(key)
            stop_at = time.monotonic() + intervals * poll_interval
            before = node_details_gets()

            def rollout(seed: int) -> None:
                rng = random.Random(seed)
                time.sleep(rng.uniform(0, poll_interval))
                while time.monotonic() < stop_at:
                    poll()
                    time.sleep(poll_interval)

            threads = [threading.Thread(target=rollout, args=(n,)) for n in range(rollouts)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            requests_per_interval = (node_details_gets() - before) / intervals

            # 2. CPU: fetching poll, cached poll, decode baseline; interleaved, order rotating
            fetching: list[float] = []
            cached: list[float] = []
            decode_cpu: list[float] = []
            payload = b""

            def fetch_poll() -> float:
                ctx.redis.delete(key)  # the shared answer has expired: this poll fetches
                spent = poll()
                nonlocal payload
                payload = ctx.redis.get(key) or payload
                return spent

            def decode() -> float:
                cpu = time.thread_time()
                json.loads(payload)
                return time.thread_time() - cpu

            fetch_poll()  # warm: the payload exists for the first decode
            arms = [(fetch_poll, fetching), (poll, cached), (decode, decode_cpu)]
            for round_ in range(rounds):
                for arm, samples in arms[round_ % 3:] + arms[:round_ % 3]:
                    if arm is poll and ctx.redis.get(key) is None:
                        fetch_poll()  # re-filled outside the timed arm: a cached poll must read a cached answer
                    samples.append(arm())
        finally:
            standin.stop()
            redis_server.stop()
    base = statistics.median(decode_cpu)
    return {"nodes": nodes, "rollouts": rollouts, "rounds": rounds, "intervals": intervals,
            "poll_interval_s": poll_interval, "payload_mb": round(len(payload) / 1e6, 1),
            "exchange_requests_per_interval": round(requests_per_interval, 2),
            "fetching_poll_cpu_ms": _spread(fetching), "cached_poll_cpu_ms": _spread(cached),
            "baseline_decode_cpu_ms": _spread(decode_cpu), "samples_per_arm": rounds,
            "fetching_ratio": round(statistics.median(fetching) / base, 2) if base else None,
            "cached_ratio": round(statistics.median(cached) / base, 2) if base else None,
            "counts": counts, "expected": expected, "wrong_counts": len(wrong),
            "left_out_by_node_policy": left_out, "machine": f"{platform.machine()} {platform.system()}",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def run_sizes(*, smoke: bool) -> dict[str, Any]:
    """Every fleet size of a run: {"sizes": [result, …]} (smoke: one small fleet, few rounds)."""
    if smoke:
        return {"sizes": [run(nodes=300, rounds=3, intervals=2)]}
    return {"sizes": [run(nodes=n, rounds=9, intervals=6) for n in (1_000, 10_000)]}


def failed(results: dict[str, Any]) -> bool:
    """More than one Exchange request per interval (plus the one a boundary can add), or a wrong count."""
    return any(r["exchange_requests_per_interval"] > 1 + 1 / r["intervals"] or r["wrong_counts"]
               for r in results["sizes"])


def report_section(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    first = sizes[0]
    rows = "\n".join(
        f"| {r['nodes']:,} ({r['payload_mb']} MB) | {r['exchange_requests_per_interval']} "
        f"| {_arm(r['fetching_poll_cpu_ms'])} | {_arm(r['cached_poll_cpu_ms'])} | {_arm(r['baseline_decode_cpu_ms'])} "
        f"| {r['fetching_ratio']}× / {r['cached_ratio']}× | {r['wrong_counts']} |" for r in sizes)
    return f"""{SECTION}

`python -m bench.rollout_scale`: one org of simulated nodes (2 % fail the new version and fall back, 1 % offline),
through the production poll code. Each poll reads the org's `node-details` through the shared Redis cache (one
Exchange GET per org per poll interval), decodes it with msgspec into the fields a rollout reads
(`edgebot/node_details.py`), and summarizes the stage, which includes deciding which nodes it reaches in both
directions: the policy's constraints (`{' '.join(POLICY_CONSTRAINTS)}`) against each node's typed properties, and,
for the nodes with a node policy (11 %), the node's constraints against the policy's properties and the service's
built-in ones (1 % of the nodes refuse the policy and are left out).

Requests: {first['rollouts']} rollouts of the org, each polling every {first['poll_interval_s']} s from its own
random phase, for {first['intervals']} intervals of wall time. CPU: the poll that fetches (the shared answer expired:
GET, cache write, decode, membership, summary), the poll that reads the cached answer, and the baseline on the same
payload in the same run, `json.loads` of it alone; the three arms interleaved, their order rotating each round
({first['samples_per_arm']} samples each); CPU is the polling thread's own (`time.thread_time`), so the stand-in's
threads do not count. The offline nodes' last heartbeat is an hour old and the cut-off five minutes: the bench's own
slowness cannot move a node across it, and every poll's counts are checked against the fleet built.

| nodes (answer) | Exchange requests per interval | fetching poll CPU min / median / max | cached poll CPU \
| baseline `json.loads` | ratio fetching / cached | polls with wrong counts |
|---|---|---|---|---|---|---|
{rows}

Counts of the last poll at {sizes[-1]['nodes']:,} nodes: {_counts(sizes[-1])}. The number of Exchange requests does
not grow with the fleet or with the number of rollouts: one per org per interval.
"""


def _arm(spread: dict[str, float]) -> str:
    return f"{spread['min']} / {spread['median']} / {spread['max']} ms"


def _counts(r: dict[str, Any]) -> str:
    c = r["counts"]
    return (f"new {c.get('new')}, old {c.get('old')}, failing {c.get('failing')}, offline {c.get('offline')}, "
            f"waiting {c.get('waiting')} of {c.get('total')}; {r['left_out_by_node_policy']} node(s) left out because "
            "their node policy refuses the policy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_scale")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    results = run_sizes(smoke=args.smoke)
    print(json.dumps(results, indent=2))
    if not args.smoke:
        write_measured(report_section(results), "python -m bench.rollout_scale",
                       str(results["sizes"][0].get("machine", "this machine")))
    return 1 if failed(results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
