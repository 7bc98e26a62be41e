"""Where a fleet stands for one service version: counts from one ``GET orgs/{org}/node-details`` answer.

Pure functions (no client, no Redis) shared by the rollout watch (workers) and ``/edge rollout`` (bot). Membership of
a node in a stage comes from Exchange data only: a pattern target takes the nodes registered with that pattern; a
policy target takes the pattern-less nodes of a matching arch whose properties satisfy the policy's constraints.

Per member node, in this order: **offline** (last heartbeat older than the threshold: counted, never waited for),
**new** (runs the target version, every container running), **failing** (an error the agent surfaced for this
service's target version, or a container of it that exited), **starting** (the target version's containers are
``"not started"`` — the agent says so until the container exists, minutes on a slow pull — or not reported yet;
anax ``governance/status.go``; failing only once the stage has run longer than the pull grace), **old** (runs another
version, e.g. the priority-2 fallback, or a version the agent declined silently: a signature or key it cannot verify
is never surfaced as an error), **waiting** (nothing running yet).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgebot import constraints as constraints_language
from edgebot.release import RolloutStatus

OFFLINE, NEW, FAILING, OLD, WAITING, STARTING = "offline", "new", "failing", "old", "waiting", "starting"
BUCKETS = (NEW, STARTING, OLD, FAILING, OFFLINE, WAITING)
EXITED = frozenset({"exited", "dead"})
"""Docker container states that mean the service stopped (anything else but ``running`` is still starting)."""

_HOST_RE = re.compile(r'https://([^/"\s]+)/')


@dataclass(frozen=True)
class Target:
    """A policy or pattern of a stage, reduced to what membership needs."""

    kind: str  # "policy" | "pattern"
    name: str
    arch: str = "*"  # a policy's service.arch
    constraints: tuple[str, ...] = ()


@dataclass
class StageCounts:
    total: int = 0
    new: int = 0
    old: int = 0
    failing: int = 0
    offline: int = 0
    waiting: int = 0
    starting: int = 0
    problems: list[str] = field(default_factory=list)
    """One line per failing node, in the user's words (all of them; the caller keeps the first N)."""

    @property
    def online(self) -> int:
        return self.total - self.offline

    @classmethod
    def from_dict(cls, counts: dict[str, int]) -> StageCounts:
        """Counts as :meth:`as_dict` stored them (the problems are not part of them)."""
        def get(name: str) -> int:
            return int(counts.get(name, 0))

        return cls(total=get("total"), new=get(NEW), old=get(OLD), failing=get(FAILING), offline=get(OFFLINE),
                   waiting=get(WAITING), starting=get(STARTING))

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, NEW: self.new, STARTING: self.starting, OLD: self.old, FAILING: self.failing,
                OFFLINE: self.offline, WAITING: self.waiting}


# -- constraints ----------------------------------------------------------------------------------------------------
Predicate = Callable[[dict[str, str]], bool]


def compile_constraints(constraints: Iterable[str]) -> Predicate:
    """A policy's constraints in Open Horizon's constraint language, read once as the agbot reads them
    (:mod:`edgebot.constraints`: AND/OR, ``&&``/``||``, parentheses, quoted strings, ``in`` lists, version ranges,
    every comparison; there is no NOT in it); every constraint string must hold. An expression the agbot would refuse
    raises :class:`edgebot.constraints.ConstraintError` (expression, position, reason) instead of matching nothing."""
    return constraints_language.compile_constraints(constraints)


def _properties(node: dict[str, Any]) -> dict[str, str]:
    props = {}
    for prop in node.get("properties") or []:
        value = prop.get("value")
        props[str(prop.get("name"))] = str(value).lower() if isinstance(value, bool) else str(value)
    return props


# -- one node ---------------------------------------------------------------------------------------------------------
def heartbeat_age(stamp: str, now: float) -> float:
    """Seconds since an Exchange timestamp (``2026-01-02T03:04:05.123456Z[UTC]``); infinite when unreadable."""
    try:
        return now - datetime.fromisoformat(stamp.split("[", 1)[0]).timestamp()
    except (AttributeError, ValueError):
        return math.inf


def explain(node: str, message: str, version: str) -> str:
    """An agent's error in the user's words: which node, which registry, what to do."""
    found = _HOST_RE.search(message)
    host = found.group(1) if found else "the registry"
    lower = message.lower()
    if "x509" in lower or "unknown authority" in lower or "certificate" in lower:
        return (f"{node} cannot pull from {host}: certificate signed by unknown authority — install the registry "
                f"CA on the node (/etc/docker/certs.d/{host}/ca.crt)")
    if "no basic auth credentials" in lower or "unauthorized" in lower or "authentication required" in lower:
        return (f"{node} has no credentials for registry {host} — publish with a registry that has a pull "
                "credential (the service's dockauth), or give the node one")
    if "signature" in lower:
        return (f"{node}: signature not verified — no public key on the node verifies the deployment of "
                f"{version} (was the key changed or the deployment altered?)")
    if "exited" in lower or "execution" in lower:
        return f"{node}: the service's container does not stay up on {version}: {message}"
    return f"{node}: {message}"


def classify(node: dict[str, Any], *, org: str, url: str, version: str, offline_after: float, now: float,
             pull_grace: float = math.inf, elapsed: float = 0.0) -> tuple[str, str]:
    """(bucket, the agent's error text or "") of one node for ``org/url`` at ``version``. ``elapsed``: seconds since
    the stage began; a node still starting after ``pull_grace`` of them counts as failing."""
    if heartbeat_age(node.get("lastHeartbeat") or "", now) > offline_after:
        return OFFLINE, ""
    entry = next((s for s in node.get("services") or [] if s.get("serviceUrl") == url and s.get("orgid") == org),
                 None)
    current = entry is not None and entry.get("version") == version
    containers = (entry or {}).get("containerStatus") or []
    if current and containers and all(c.get("state") == "running" for c in containers):
        return NEW, ""
    for error in node.get("errors") or []:
        workload = error.get("workload") or {}
        if (workload.get("url") == url and workload.get("org", org) == org and workload.get("version") == version
                and not error.get("hidden")):
            return FAILING, str(error.get("message") or error.get("event_code") or "unknown agent error")
    if current:
        stopped = [c for c in containers if c.get("state") in EXITED]
        if stopped:
            return FAILING, f"container {stopped[0].get('name')} is {stopped[0].get('state')}"
        if elapsed > pull_grace:
            state = next((c.get("state") for c in containers if c.get("state") != "running"), "not reported")
            return FAILING, (f"container still {state} {int(elapsed)} s after the stage began (pull grace "
                             f"{int(pull_grace)} s): is the image pull stuck or the image very large?")
        return STARTING, ""
    return (OLD, "") if entry is not None else (WAITING, "")


# -- a stage ----------------------------------------------------------------------------------------------------------
def members(nodes: Iterable[dict[str, Any]], org: str, targets: Iterable[Target]) -> list[dict[str, Any]]:
    """The nodes a stage's targets deploy to, from Exchange data only (each node counted once)."""
    patterns = {f"{org}/{t.name}" for t in targets if t.kind == "pattern"}
    policies = [(t.arch, compile_constraints(t.constraints)) for t in targets if t.kind == "policy"]
    found = []
    for node in nodes:
        pattern = node.get("pattern") or ""
        if pattern:
            if pattern in patterns:
                found.append(node)
        elif policies:
            props = _properties(node)
            if any(arch in ("*", "", node.get("arch")) and match(props) for arch, match in policies):
                found.append(node)
    return found


def summarize(nodes: Iterable[dict[str, Any]], *, org: str, url: str, version: str, targets: Iterable[Target],
              offline_after: float, now: float, pull_grace: float = math.inf, elapsed: float = 0.0) -> StageCounts:
    """Counts of one stage from one node-details answer (10,000 nodes: one pass, constraints compiled once)."""
    counts = StageCounts()
    for node in members(nodes, org, list(targets)):
        bucket, error = classify(node, org=org, url=url, version=version, offline_after=offline_after, now=now,
                                 pull_grace=pull_grace, elapsed=elapsed)
        counts.total += 1
        setattr(counts, bucket, getattr(counts, bucket) + 1)
        if bucket == FAILING:
            counts.problems.append(explain(str(node.get("name") or node.get("id")), error, version))
    return counts


def verdict(counts: StageCounts, *, healthy_share: float, failure_threshold: int, elapsed: float,
            timeout: float) -> RolloutStatus:
    """healthy | failed | timed_out | running. Offline nodes, and failing ones within the threshold, are left out of
    the share (counted, not waited for); starting nodes are waited for. A stage whose nodes are all offline cannot be
    checked, so it waits (until the timeout). A stage without any node fails at once: nothing was observed, so
    nothing says the new version works (:func:`no_node_reason` says why)."""
    if counts.total == 0 or counts.failing > failure_threshold:
        return RolloutStatus.FAILED
    judged = counts.online - counts.failing  # failures within the threshold are tolerated, not waited for
    if judged > 0 and counts.new >= math.ceil(healthy_share * judged - 1e-9):
        return RolloutStatus.HEALTHY
    return RolloutStatus.TIMED_OUT if elapsed > timeout else RolloutStatus.RUNNING


def no_node_reason(targets: Iterable[Target], org: str, seen: int) -> str:
    """Why a stage matched no node, in the user's words (``seen``: nodes node-details showed in the org)."""
    parts = []
    for t in targets:
        if t.kind == "pattern":
            parts.append(f"no node of org {org} is registered with pattern `{t.name}`")
        else:
            arch = "" if t.arch in ("*", "") else f" on {t.arch}"
            parts.append(f"the constraints of policy `{t.name}` ({' AND '.join(t.constraints) or 'none'}) match no "
                         f"node{arch}")
    where = (f"among the {seen} node(s) the Exchange showed" if seen else
             "the Exchange showed no node of the org at all")
    return f"{'; '.join(parts) or 'the stage has no policy or pattern'} ({where}); the stage halted: no node was seen"


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """``[██████░░░░░░] 50%`` (an empty stage is complete)."""
    share = 1.0 if total <= 0 else min(1.0, done / total)
    filled = int(round(share * width))
    return f"[{'█' * filled}{'░' * (width - filled)}] {int(share * 100)}%"
