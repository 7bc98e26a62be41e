"""Rollout watch at fleet scale: one poll's summary for 10,000 simulated nodes.

    python -m bench.rollout_scale            10,000 nodes; replaces the rollout section of docs/BENCHMARKS.md
    python -m bench.rollout_scale --smoke    500 nodes; prints only (bench.run --smoke runs it too)

Set-up: the Exchange stand-in with simulated agents (signed service 1.0.0 and 1.1.0, a policy pinning 1.1.0 with 1.0.0
as fallback; 2 % of the nodes fail 1.1.0 and fall back, 1 % are offline), real Redis, and several concurrent rollouts
of the same org polling through the production code (``workers.rollout_watch.shared_node_details`` +
``edgebot.fleet_summary.summarize``).

Nodes carry typed properties, 10 % of them a node policy (constraints; 1 % refuse the policy), and the policy has
constraints and properties, so each poll decides membership in both directions as the agbot does.

Measured per poll round: Exchange requests (all rollouts of the org together), and CPU time of one rollout's poll
(decode the shared node-details answer + membership + summary) against a baseline measured in the same run on the same
payload: ``json.loads`` of it alone, the two arms interleaved with alternating order; min / median / max of each.
Ratio = median poll / median baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.report import write_measured

ROOT = Path(__file__).resolve().parent.parent
ORG, PW = "acme", "bench-pw"
SECTION = "## Rollout watch at scale"
OFFLINE_AFTER = 6.0
"""rollout_offline_after here: a 12 MB node-details answer is a second old or more by the time it is summarized on a
loaded machine (the copy under the stand-in's lock delays heartbeats too); 2 s counted every node offline."""


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


def run(*, nodes: int, rollouts: int = 3, rounds: int = 5) -> dict[str, Any]:
    from edgebot.config import parse_config
    from edgebot.fleet_summary import Target, summarize
    from edgebot.secrets import SecretResolver
    from sandbox.exchange import ExchangeStandIn
    from sandbox.proc_base import wait_until
    from sandbox.processes import RedisServer
    from workers.context import WorkerContext
    from workers.rollout_watch import shared_node_details
    from workers.signing import PemSigner, generate_private_key_pem

    poll_interval = 5.0  # longer than a loaded machine takes for the three rollouts' polls of one round
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
                       timeout=600, interval=1.0, what="every compatible simulated node to run the service")
            for i in range(100, nodes + 1, 100):
                standin.fleet.set_online(f"{ORG}/node-{i}", False)
            config = parse_config({
                "slack": {"bot_token": "env:B", "signing_secret": "env:S"}, "redis": {"url": redis_server.url},
                "exchange": {"url": standin.url, "username": f"{ORG}/edgebot", "password": "env:EXCHANGE_PW"},
                "signing": {"private_key": "file:/nonexistent"},
                "registries": {"r": {"host": "reg.example:5000", "push_username": "u", "push_password": "env:P"}},
                "services": {"hello": {"source": "/x", "org": ORG, "arches": ["amd64"]}},
                "settings": {"rollout_poll_interval": poll_interval, "rollout_offline_after": OFFLINE_AFTER},
            }, environ={})
            ctx = WorkerContext(config, SecretResolver(environ={"EXCHANGE_PW": PW}))
            time.sleep(OFFLINE_AFTER + 0.5)  # let the offline nodes' heartbeats age past rollout_offline_after
            target = [Target("policy", "fleet", "*", POLICY_CONSTRAINTS, POLICY_PROPERTIES)]
            key = f"{config.settings.key_prefix}:rollout:node-details:{ORG}"
            before = len([r for r in standin.requests() if r["path"].endswith("/node-details")])
            poll_cpu: list[float] = []
            decode_cpu: list[float] = []
            fetch_wall: list[float] = []
            counts: dict[str, int] = {}
            left_out = 0
            payload = b""

            def poll() -> float:
                cpu = time.thread_time()  # this thread only: the stand-in's threads share the process
                found = shared_node_details(ctx, ORG)
                summary = summarize(found, org=ORG, url="hello", version="1.1.0", targets=target,
                                    offline_after=OFFLINE_AFTER, now=time.time())
                spent = time.thread_time() - cpu
                nonlocal counts, left_out
                counts, left_out = summary.as_dict(), sum(len(v) for v in summary.refused.values())
                return spent

            def decode() -> float:
                cpu = time.thread_time()
                json.loads(payload)
                return time.thread_time() - cpu

            for round_ in range(rounds):
                started = time.perf_counter()
                poll()  # the round's first poll fetches (one GET for every rollout of the org)
                fetch_wall.append(time.perf_counter() - started)
                payload = ctx.redis.get(key) or payload
                # the other rollouts' polls, each beside a decode of the same payload; which arm goes first alternates
                for turn in range(rollouts - 1):
                    arms = (poll, decode) if (round_ + turn) % 2 == 0 else (decode, poll)
                    for arm in arms:
                        (poll_cpu if arm is poll else decode_cpu).append(arm())
                time.sleep(poll_interval * 1.05)  # the next round: the shared answer has expired
            after = len([r for r in standin.requests() if r["path"].endswith("/node-details")])
        finally:
            standin.stop()
            redis_server.stop()
    poll_m, base_m = statistics.median(poll_cpu), statistics.median(decode_cpu)
    return {"nodes": nodes, "rollouts": rollouts, "rounds": rounds, "payload_mb": round(len(payload) / 1e6, 1),
            "exchange_requests_per_round": round((after - before) / rounds, 2),
            "poll_cpu_ms": _spread(poll_cpu), "baseline_decode_cpu_ms": _spread(decode_cpu),
            "samples_per_arm": len(poll_cpu), "ratio": round(poll_m / base_m, 2) if base_m else None,
            "first_poll_wall_ms": round(statistics.median(fetch_wall) * 1000, 1), "counts": counts,
            "left_out_by_node_policy": left_out, "machine": f"{platform.machine()} {platform.system()}",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def report_section(r: dict[str, Any]) -> str:
    c, p, b = r["counts"], r["poll_cpu_ms"], r["baseline_decode_cpu_ms"]
    return f"""{SECTION}

`python -m bench.rollout_scale`: {r['nodes']:,} simulated nodes in one org (2 % fail the new version and fall back,
1 % offline), {r['rollouts']} rollouts of that org polling at the same time, {r['rounds']} poll rounds. Each poll reads
the org's `node-details` through the shared Redis cache (one Exchange GET per org per poll interval) and summarizes
the stage, which includes deciding which nodes it reaches in both directions: the policy's constraints
(`{' '.join(POLICY_CONSTRAINTS)}`) against each node's typed properties, and, for the nodes with a node policy
(11 %), the node's constraints against the policy's properties and the service's built-in ones (1 % of the nodes
refuse the policy and are left out). Baseline, same run and same payload ({r['payload_mb']} MB): `json.loads` of the
answer alone. The two arms alternate within each round and which one goes first alternates too ({r['samples_per_arm']}
samples each); CPU is the polling thread's own (`time.thread_time`), so the stand-in's threads do not count.

Exchange requests per poll round ({r['rollouts']} rollouts together): {r['exchange_requests_per_round']}.

| | min / median / max |
|---|---|
| CPU of one poll (decode + membership both ways + summarize) | {p['min']} / {p['median']} / {p['max']} ms |
| baseline: decode only | {b['min']} / {b['median']} / {b['max']} ms |
| ratio of the medians | {r['ratio']}× |
| wall time of the poll that fetches (GET + cache write + summary) | {r['first_poll_wall_ms']} ms |

Counts of the last poll: new {c.get('new')}, old {c.get('old')}, failing {c.get('failing')}, offline
{c.get('offline')}, waiting {c.get('waiting')} of {c.get('total')}; {r['left_out_by_node_policy']} node(s) left out
because their node policy refuses the policy. The number of Exchange requests does not grow with the fleet or with the
number of rollouts: it is one per org per interval.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollout_scale")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--nodes", type=int, default=10_000)
    args = parser.parse_args(argv)
    results = run(nodes=500 if args.smoke else args.nodes, rounds=2 if args.smoke else 6)
    print(json.dumps(results, indent=2))
    if not args.smoke:
        write_measured(report_section(results), "python -m bench.rollout_scale",
                       str(results.get("machine", "this machine")))
    return 0 if results["exchange_requests_per_round"] <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
