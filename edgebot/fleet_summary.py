"""Where a fleet stands for one service version: counts from one ``GET orgs/{org}/node-details`` answer.

Pure functions (no client, no Redis) shared by the rollout watch (workers) and ``/edge rollout`` (bot). Membership of
a node in a stage comes from Exchange data only: a pattern target takes the nodes registered with that pattern; a
policy target takes the pattern-less nodes of a matching arch that are compatible with it in both directions, as the
agreement bot decides it (anax ``compcheck/policy_check.go`` ``CheckPolicyCompatiblility`` → ``policy/policy_file.go``
``Are_Compatible``): the deployment policy's constraints (merged with the service policy's) hold on the node's
``properties``, **and** the node's own ``constraints`` (its node policy, in node-details) hold on the deployment
policy's ``properties`` merged with the service policy's and the service's built-in ``openhorizon.service.*``
properties. Properties are read typed, as the Exchange stores them (``{"name", "value", "type"}``).

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edgebot import constraints as constraints_language
from edgebot.node_details import Node
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
    properties: tuple[dict[str, Any], ...] = ()
    """The deployment policy's ``properties`` (what a node's own constraints are evaluated against)."""
    service_policies: tuple[tuple[str, tuple[str, ...], tuple[dict[str, Any], ...]], ...] = ()
    """Per arch, the service policy of the version rolled out: (arch, constraints, properties); the agbot merges it
    into the deployment policy (anax ``compcheck.MergeFullServicePolicyToBusinessPolicy``)."""

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Target:
        """A target as a stage records it (the dict :meth:`as_info` wrote, or an older one without properties)."""
        service = tuple((str(p.get("arch")), tuple(p.get("constraints") or ()), tuple(p.get("properties") or ()))
                        for p in info.get("service_policies") or ())
        return cls(str(info["kind"]), str(info["name"]), str(info.get("arch") or "*"),
                   tuple(info.get("constraints") or ()), tuple(info.get("properties") or ()), service)

    def as_info(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "arch": self.arch, "constraints": list(self.constraints),
                "properties": [dict(p) for p in self.properties],
                "service_policies": [{"arch": arch, "constraints": list(c), "properties": [dict(p) for p in props]}
                                     for arch, c, props in self.service_policies]}


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
    refused: dict[tuple[str, tuple[str, ...]], list[str]] = field(default_factory=dict)
    """Nodes left out because their own constraints refuse a policy they meet: (policy, node constraints) -> names."""

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
def compile_constraints(constraints: Iterable[str]) -> constraints_language.Constraints:
    """A policy's constraints in Open Horizon's constraint language, read once as the agbot reads them
    (:mod:`edgebot.constraints`: AND/OR, ``&&``/``||``, parentheses, quoted strings, ``in`` lists, version ranges,
    every comparison; there is no NOT in it); every constraint string must hold. An expression the agbot would refuse
    raises :class:`edgebot.constraints.ConstraintError` (expression, position, reason) instead of matching nothing."""
    return constraints_language.compile_constraints(constraints)


class NodeConstraintError(ValueError):
    """A node's own constraints (its node policy) cannot be read the way the agbot reads them: which node, which
    expression, why. Which nodes a stage reaches is then unknown, and a rollout must halt rather than guess."""

    def __init__(self, node: str, error: constraints_language.ConstraintError) -> None:
        self.node, self.error = node, error
        super().__init__(f"node {node}: its node policy's constraints cannot be read as the agreement bot reads them: "
                         f"{error}")


SERVICE_BUILTINS = ("openhorizon.service.url", "openhorizon.service.name", "openhorizon.service.org",
                    "openhorizon.service.version", "openhorizon.service.arch")
"""anax ``externalpolicy/builtin_properties.go`` ``CreateServiceBuiltInPolicy``: added to every service policy."""


def merged_properties(*lists: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Property lists merged as anax ``PropertyList.MergeWith(…, false)`` does: a name already present keeps its
    first value."""
    seen: set[str] = set()
    out = []
    for props in lists:
        for prop in props:
            if isinstance(prop, dict) and str(prop.get("name")) not in seen:
                seen.add(str(prop.get("name")))
                out.append(prop)
    return out


def merged_constraints(*lists: Iterable[str]) -> tuple[str, ...]:
    """``ConstraintExpression.MergeWith``: appended, an identical expression once."""
    out: list[str] = []
    for items in lists:
        out.extend(c for c in items if c not in out)
    return tuple(out)


MEMBER, REFUSED, OUTSIDE = "member", "refused", "outside"


class _PolicyMatch:
    """One policy target compiled once (per arch, with that arch's service policy); :meth:`place` decides one node in
    both directions."""

    def __init__(self, target: Target, org: str, url: str, version: str) -> None:
        self.target = target
        self.arch = target.arch
        self._org, self._url, self._version = org, url, version
        self._service = {arch: (c, props) for arch, c, props in target.service_policies}
        self._sides: dict[str, tuple[constraints_language.Constraints, list[dict[str, Any]]]] = {}
        self._accepted: dict[tuple[tuple[str, ...], str], bool] = {}
        for arch in [*self._service, ""]:
            self.sides(arch)  # every expression read up front: a policy the agbot cannot read fails here

    def sides(self, arch: str) -> tuple[constraints_language.Constraints, list[dict[str, Any]]]:
        """For a node of ``arch``: the merged consumer policy's constraints and its properties (deployment policy
        first, then the service policy, then the built-in service properties; anax ``PropertyList.MergeWith(…,
        false)`` keeps the first value of a name)."""
        found = self._sides.get(arch)
        if found is None:
            constraints, properties = self._service.get(arch, ((), ()))
            builtins = []
            if self._url:
                values = (self._url, self._url, self._org, self._version,
                          arch if self.arch in ("*", "") else self.arch)
                builtins = [{"name": n, "value": v} for n, v in zip(SERVICE_BUILTINS, values, strict=True) if v]
            found = self._sides[arch] = (
                compile_constraints(merged_constraints(self.target.constraints, constraints)),
                merged_properties(self.target.properties, properties, builtins))
        return found

    def place(self, node: Node, node_constraints: Callable[[Node], tuple[tuple[str, ...], Any]]) -> str:
        arch = node.arch or ""
        if self.arch not in ("*", "", arch):
            return OUTSIDE
        forward, offered = self.sides(arch)
        if not forward(node.properties or []):
            return OUTSIDE
        key, own = node_constraints(node)
        verdict = self._accepted.get((key, arch))
        if verdict is None:  # the same for every node with these constraints: the consumer side is fixed per arch
            verdict = self._accepted[(key, arch)] = bool(own(offered))
        return MEMBER if verdict else REFUSED


def _node_constraints() -> Callable[[Node], tuple[tuple[str, ...], Any]]:
    """A node's own constraints, each distinct list compiled once; NodeConstraintError for one the agbot cannot read."""
    cache: dict[tuple[str, ...], Any] = {}

    def of(node: Node) -> tuple[tuple[str, ...], Any]:
        raw = node.constraints or ()
        key = (raw,) if isinstance(raw, str) else tuple(raw)
        found = cache.get(key)
        if found is None:
            try:
                found = constraints_language.compile_constraints(raw)
            except constraints_language.ConstraintError as exc:
                found = exc
            cache[key] = found
        if isinstance(found, constraints_language.ConstraintError):
            raise NodeConstraintError(node.id or node.name or "", found)
        return key, found

    return of


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


def classify(node: Node, *, org: str, url: str, version: str, offline_after: float, now: float,
             pull_grace: float = math.inf, elapsed: float = 0.0) -> tuple[str, str]:
    """(bucket, the agent's error text or "") of one node for ``org/url`` at ``version``. ``elapsed``: seconds since
    the stage began; a node still starting after ``pull_grace`` of them counts as failing."""
    if heartbeat_age(node.last_heartbeat or "", now) > offline_after:
        return OFFLINE, ""
    entry = next((s for s in node.services or () if s.url == url and s.orgid == org), None)
    current = entry is not None and entry.version == version
    containers = (entry.containers if entry is not None else None) or []
    if current and containers and all(c.state == "running" for c in containers):
        return NEW, ""
    for error in node.errors or ():
        workload = error.workload
        if (workload is not None and workload.url == url and (org if workload.org is None else workload.org) == org
                and workload.version == version and not error.hidden):
            return FAILING, str(error.message or error.event_code or "unknown agent error")
    if current:
        stopped = [c for c in containers if c.state in EXITED]
        if stopped:
            return FAILING, f"container {stopped[0].name} is {stopped[0].state}"
        if elapsed > pull_grace:
            state = next((c.state for c in containers if c.state != "running"), None) or "not reported"
            return FAILING, (f"container still {state} {int(elapsed)} s after the stage began (pull grace "
                             f"{int(pull_grace)} s): is the image pull stuck or the image very large?")
        return STARTING, ""
    return (OLD, "") if entry is not None else (WAITING, "")


# -- a stage ----------------------------------------------------------------------------------------------------------
def placements(nodes: Iterable[Node], org: str, targets: Iterable[Target], *, url: str = "",
               version: str = "") -> Iterator[tuple[Node, str, Target | None]]:
    """(node, MEMBER | REFUSED | OUTSIDE, the policy that decided it) for every node. REFUSED: a policy's constraints
    hold on the node but the node's own constraints refuse that policy (the agbot makes no agreement there). Raises
    :class:`NodeConstraintError` when the node's constraints cannot be read, and
    :class:`edgebot.constraints.ConstraintError` when a policy's cannot."""
    targets = list(targets)
    patterns = {f"{org}/{t.name}" for t in targets if t.kind == "pattern"}
    policies = [_PolicyMatch(t, org, url, version) for t in targets if t.kind == "policy"]
    own = _node_constraints()
    for node in nodes:
        pattern = node.pattern or ""
        if pattern:
            yield node, (MEMBER if pattern in patterns else OUTSIDE), None
            continue
        outcome: tuple[str, Target | None] = (OUTSIDE, None)
        for policy in policies:
            placed = policy.place(node, own)
            if placed == MEMBER:
                outcome = (MEMBER, policy.target)
                break
            if placed == REFUSED and outcome[0] == OUTSIDE:
                outcome = (REFUSED, policy.target)
        yield node, *outcome


def members(nodes: Iterable[Node], org: str, targets: Iterable[Target], *, url: str = "",
            version: str = "") -> list[Node]:
    """The nodes a stage's targets deploy to, from Exchange data only (each node counted once); ``url``/``version``
    give the service's built-in properties a node's constraints may name."""
    return [node for node, placed, _ in placements(nodes, org, targets, url=url, version=version) if placed == MEMBER]


def _refusal_key(node: Node, target: Target) -> tuple[str, tuple[str, ...]]:
    raw = node.constraints or ()
    return target.name, ((raw,) if isinstance(raw, str) else tuple(raw))


def summarize(nodes: Iterable[Node], *, org: str, url: str, version: str, targets: Iterable[Target],
              offline_after: float, now: float, pull_grace: float = math.inf, elapsed: float = 0.0) -> StageCounts:
    """Counts of one stage from one node-details answer (10,000 nodes: one pass, constraints compiled once)."""
    counts = StageCounts()
    for node, placed, target in placements(nodes, org, list(targets), url=url, version=version):
        if placed != MEMBER:
            if placed == REFUSED and target is not None:
                counts.refused.setdefault(_refusal_key(node, target), []).append(node.label)
            continue
        bucket, error = classify(node, org=org, url=url, version=version, offline_after=offline_after, now=now,
                                 pull_grace=pull_grace, elapsed=elapsed)
        counts.total += 1
        setattr(counts, bucket, getattr(counts, bucket) + 1)
        if bucket == FAILING:
            counts.problems.append(explain(node.label, error, version))
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
