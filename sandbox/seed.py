"""A fleet to roll out to: what ``make demo`` and ``edgebot sandbox`` set up before anyone types a command.

``hello 1.0.0`` is published (through the catalog entry ``hello-seed``, which has no rollout and needs no approval),
two deployment policies pin it (``hello-canary``, ``hello-fleet``, the stages of ``hello``'s rollout) and simulated
agent nodes of the stack's arches run it, one of them offline. Publishing ``hello 1.1.0`` then moves the fleet.
"""

from __future__ import annotations

import httpx

from sandbox.stack import EXCHANGE_PASSWORD, EXCHANGE_USER, ORG, Stack, wait_until

VERSIONS = ("1.0.0", "1.1.0")
SEED_SERVICE = "hello-seed"
ROLLOUT_TOML = f"""
[[services.hello.rollout]]
stage = "canary"
policies = ["hello-canary"]

[[services.hello.rollout]]
stage = "fleet"
policies = ["hello-fleet"]

[approvals.services.{SEED_SERVICE}]
required = 0
"""
"""``hello`` rolls out canary → fleet; the seed service publishes without approval (set-up, not a release)."""
PRIORITY = {"priority_value": 1, "retries": 2, "retry_durations": 3600}
"""A priority the agbot accepts (anax ServiceRef.Validate: a priority_value needs retries and retry_durations)."""
SETTINGS = {"rollout_poll_interval": 1.0, "rollout_offline_after": 10.0}


def seed_fleet(stack: Stack, *, canaries: int = 3, nodes: int = 24) -> None:
    """1.0.0 live on every node of both arches, through two policies, before the demo's own command."""
    # edgebot's Exchange identity must see every node of the org (node-details shows a standard user only the nodes
    # it owns), so a rollout refuses anything less than an org admin: the demo's user is one
    stack.exchange.add_user(ORG, EXCHANGE_USER, EXCHANGE_PASSWORD, admin=True)
    before = set(stack.release_ids())
    stack.command(f"publish {SEED_SERVICE} 1.0.0 --registry local")
    release_id = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the seed release").pop()
    seeded = stack.wait_final(release_id, timeout=300)
    if seeded.state != "succeeded":
        raise RuntimeError(f"seeding 1.0.0 failed: {seeded.error}")
    with httpx.Client(base_url=stack.exchange.url + "/", auth=(f"{ORG}/{EXCHANGE_USER}", EXCHANGE_PASSWORD)) as c:
        for name, group in (("hello-canary", "canary"), ("hello-fleet", "fleet")):
            body = {"label": name, "service": {"name": "hello", "org": ORG, "arch": "*", "serviceVersions": [
                {"version": "1.0.0", "priority": PRIORITY}]}, "constraints": [f"group == {group}"]}
            c.post(f"orgs/{ORG}/business/policies/{name}", json=body).raise_for_status()
    fleet = stack.exchange.fleet
    fleet.apply_delay, fleet.heartbeat_interval = 1.5, 1.0
    for i in range(1, canaries + nodes + 1):
        group = "canary" if i <= canaries else "fleet"
        node = fleet.add_node(ORG, f"{group}-{i}", stack.arches[i % len(stack.arches)],
                              properties=[{"name": "group", "value": group}])
        if i == canaries + nodes:
            fleet.set_online(node, False)
    wait_until(lambda: sum(1 for n in fleet.nodes if fleet.running(n)) >= canaries + nodes - 1, timeout=60,
               what="the seeded nodes to run 1.0.0")
