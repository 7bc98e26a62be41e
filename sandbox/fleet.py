"""Simulated edge agents for the Exchange stand-in: nodes that follow their pattern or deployment policies.

Each node has an arch, properties, a pattern (or none: policy nodes match deployment policies through their
``constraints``) and a heartbeat. When what the node should run changes (the ``serviceVersions`` of its pattern or of
a matching policy, for its arch), the node acts after ``apply_delay`` seconds, as an agent does once the agbot has
made an agreement:

1. fetch the service (``{url}_{version}_{arch}``) and its keys from the Exchange state;
2. verify ``deploymentSignature`` over the exact ``deployment`` string with RSA-PSS / SHA-256, salt length
   auto-detected, against every key of the service (any key verifying is enough: ``InputVerifiedByAnyKey``);
3. "pull" every image: the registry (the image's ``host[:port]``) must be trusted by the node (its CA installed,
   a per-node setting) and the node needs a credential for it: a dockauth of the service whose ``registry`` equals
   the host exactly, or a local one;
4. start the containers, unless the node is set to fail that version.

The first version (priority 1) that works is reported as running in ``services`` / ``runningServices`` /
``registeredServices`` of ``node-details``; each version that failed adds the error an agent surfaces
(``errors``: ``{record_id, message, event_code, hidden, workload, timestamp}``) and the node falls back to the next
priority. Knobs: :meth:`Fleet.set_failing`, :meth:`Fleet.set_online` (an offline node's heartbeat stops and it acts on
nothing), :meth:`Fleet.set_trusts_ca`, :meth:`Fleet.set_credentials`.

One timer thread serves the whole fleet (a heap of due nodes, heartbeats stamped in one sweep), so 10,000 nodes cost
one thread. It notices Exchange writes through ``ExchangeState.generation`` (bumped by every successful write).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import heapq
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.agbot_match import fitting_versions
from sandbox.exchange_routes import ExchangeState, now
from sandbox.exchange_rules import agbot_priority_problem, form_id

_PSS_AUTO = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
_CLAUSE_RE = re.compile(r'^\s*([A-Za-z0-9_.\-/]+)\s*(==|=|!=)\s*"?([^"]*?)"?\s*$')

Desired = tuple[tuple[str, str, tuple[str, ...]], ...]

EC_IMAGE_LOAD, EC_DEPLOYMENT_CONFIG, EC_START_CONTAINER = (
    "error_image_load", "error_in_deployment_config", "error_start_container")
SURFACED = (EC_IMAGE_LOAD, EC_DEPLOYMENT_CONFIG, EC_START_CONTAINER)
"""anax ``persistence/surface_errors.go`` ``getErrorTypeList``: the only event types an agent reports as node errors."""


@dataclass(frozen=True)
class Problem:
    kind: str  # a SURFACED event code, "silent" (logged and declined only) or "" (none)
    message: str
"""What a node should run: ``((service org, service url, versions by priority), …)``."""


@dataclass
class SimNode:
    org: str
    node_id: str  # "org/name", as node-details spells it
    arch: str
    trusts_ca: bool = True
    credentials: set[str] = field(default_factory=set)
    """Registries (host[:port]) the node has a local pull credential for, besides the services' dockauths."""
    fail_versions: set[str] | None = None
    """Versions whose containers exit at start (an empty set: every version); None: the node does not fail."""
    online: bool = True
    pull_time: float | None = None
    """Seconds a newly started version stays ``"not started"`` (pulling) here; None: the fleet's ``pull_time``."""
    owner: str = ""
    restarts: int = 0
    """Times a pattern change cancelled and restarted this node's agreements."""
    pattern_seen: str = ""
    """Digest of the pattern's ``services`` the node's agreements were made under."""
    applied: Desired | None = ()
    """What the node's agent last acted on; None: act again even when nothing is wanted (a knob changed)."""
    scheduled: Desired | None = None


def constraints_match(constraints: Iterable[str], properties: list[dict[str, Any]]) -> bool:
    """The agbot's policy match, for the subset the sandbox needs: ``name == value`` clauses (``=``, ``!=``)
    joined with ``AND``/``&&`` inside ``OR``/``||`` alternatives; every constraint string must hold."""
    props = {str(p.get("name")): _text(p.get("value")) for p in properties}
    for constraint in constraints:
        alternatives = re.split(r"\s+OR\s+|\s*\|\|\s*", constraint)
        if not any(all(_clause(c, props) for c in re.split(r"\s+AND\s+|\s*&&\s*", alt)) for alt in alternatives):
            return False
    return True


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _clause(text: str, props: dict[str, str]) -> bool:
    found = _CLAUSE_RE.match(text)
    if found is None:
        return False
    name, op, value = found.groups()
    have = props.get(name)
    return (have == value) if op in ("=", "==") else (have is not None and have != value)


def registry_host(image: str) -> str:
    """The registry part of an image reference, as Docker reads it (no domain: ``docker.io``)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _ordered_versions(entries: list[dict[str, Any]]) -> tuple[str, ...]:
    def rank(indexed: tuple[int, dict[str, Any]]) -> tuple[float, int]:
        index, entry = indexed
        priority = entry.get("priority") or {}
        value = priority.get("priority_value") if isinstance(priority, dict) else None
        return (float(value) if isinstance(value, int | float) else math.inf, index)

    return tuple(str(e.get("version")) for _, e in sorted(enumerate(entries), key=rank))


def _load_key(text: str) -> rsa.RSAPublicKey | None:
    data = text.encode()
    try:
        if b"CERTIFICATE" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, rsa.RSAPublicKey) else None


def verified_by_any_key(keys: Iterable[str], deployment: str, signature_b64: str) -> bool:
    """``rsapss-tool verify.InputVerifiedByAnyKey``: SHA-256, PSS with salt auto-detection, any key will do."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    for text in keys:
        key = _load_key(text)
        if key is None:
            continue
        try:
            key.verify(signature, deployment.encode("utf-8"), _PSS_AUTO, hashes.SHA256())
            return True
        except InvalidSignature:
            continue
    return False


class Fleet:
    """The simulated nodes of one Exchange stand-in, driven by one timer thread."""

    def __init__(self, state: ExchangeState, *, apply_delay: float = 0.5, heartbeat_interval: float = 1.0,
                 tick: float = 0.05, pull_time: float = 0.0) -> None:
        self.state = state
        self.apply_delay = apply_delay
        self.pull_time = pull_time
        """Seconds a newly started version's containers report ``"not started"`` (the image pull) before running."""
        self._pulls: list[tuple[float, int, str, str]] = []  # (due, seq, node id, agreement id)
        self.heartbeat_interval = heartbeat_interval
        self.tick = tick
        self.nodes: dict[str, SimNode] = {}  # "org/name" -> node
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._seen_generation = -1
        self._verified: dict[str, bool] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> Fleet:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="exchange-fleet", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # -- set-up and knobs ---------------------------------------------------------------------------------------
    def add_node(self, org: str, name: str, arch: str, *, pattern: str = "",
                 properties: list[dict[str, Any]] | None = None, trusts_ca: bool = True,
                 credentials: Iterable[str] = (), online: bool = True, owner: str = "") -> str:
        """A registered node; ``pattern`` is ``org/name`` (empty: a policy node); ``owner`` the user that registered
        it (default ``{org}/nodeowner``: a standard user other than the node's owner does not see it in
        node-details). Returns its id ``org/name``."""
        node_id = f"{org}/{name}"
        owner = owner or f"{org}/nodeowner"
        with self.state.lock:
            self.state.orgs.add(org)
            details = _node_details(org, node_id, arch, pattern, properties)
            details["owner"] = owner
            self.state.nodes.setdefault(org, {})[node_id] = details
            self.nodes[node_id] = SimNode(org, node_id, arch, trusts_ca=trusts_ca, credentials=set(credentials),
                                          online=online, owner=owner)
            self._seen_generation = -1  # re-plan: the new node may have something to run already
        self._wake.set()
        return node_id

    def add_nodes(self, org: str, prefix: str, count: int, arch: str, **options: Any) -> list[str]:
        """``count`` nodes named ``{prefix}-1`` … ``{prefix}-{count}`` with the same settings."""
        return [self.add_node(org, f"{prefix}-{i}", arch, **options) for i in range(1, count + 1)]

    def set_failing(self, node_id: str, versions: Iterable[str] | None = (), *, failing: bool = True) -> None:
        """The node's containers exit at start for ``versions`` (empty: every version); ``failing=False`` heals it."""
        self._knob(node_id, fail_versions=(set(versions or ()) if failing else None))

    def set_online(self, node_id: str, online: bool) -> None:
        self._knob(node_id, online=online)

    def set_trusts_ca(self, node_id: str, trusts: bool) -> None:
        self._knob(node_id, trusts_ca=trusts)

    def set_credentials(self, node_id: str, registries: Iterable[str]) -> None:
        self._knob(node_id, credentials=set(registries))

    def set_pull_time(self, node_id: str, seconds: float | None) -> None:
        """How long this node's new containers stay ``"not started"`` (None: the fleet's ``pull_time``). Takes effect
        at the node's next agreement; it does not restart anything."""
        with self.state.lock:
            self.nodes[node_id].pull_time = seconds

    def restarts(self, node_id: str) -> int:
        """How many times a pattern change restarted this node's agreements."""
        with self.state.lock:
            return self.nodes[node_id].restarts

    def container_states(self, node_id: str) -> dict[str, list[str]]:
        """Service url -> the states of its containers as the node reports them now."""
        with self.state.lock:
            org = node_id.split("/", 1)[0]
            details = self.state.nodes[org][node_id]
            return {s["serviceUrl"]: [c.get("state") for c in s.get("containerStatus") or []]
                    for s in details["services"]}

    def _knob(self, node_id: str, **values: Any) -> None:
        with self.state.lock:
            node = self.nodes[node_id]
            for name, value in values.items():
                setattr(node, name, value)
            node.applied = None  # the agent acts again on what it should run, with its new setting
            node.scheduled = None
            self._seen_generation = -1
        self._wake.set()

    # -- inspection ---------------------------------------------------------------------------------------------
    def running(self, node_id: str) -> dict[str, str]:
        """Service url -> version the node runs now."""
        with self.state.lock:
            org = node_id.split("/", 1)[0]
            details = self.state.nodes[org][node_id]
            return {s["serviceUrl"]: s["version"] for s in details["services"]}

    def errors(self, node_id: str) -> list[str]:
        with self.state.lock:
            org = node_id.split("/", 1)[0]
            return [e["message"] for e in self.state.nodes[org][node_id]["errors"]]

    # -- the timer thread ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            clock = time.monotonic()
            with self.state.lock:
                if self.state.generation != self._seen_generation:
                    self._seen_generation = self.state.generation
                    self._plan(clock)
                while self._due and self._due[0][0] <= clock:
                    _, _, node_id = heapq.heappop(self._due)
                    node = self.nodes.get(node_id)
                    if node is not None and node.online and node.scheduled is not None:
                        self._apply(node)
                while self._pulls and self._pulls[0][0] <= clock:
                    _, _, node_id, agreement = heapq.heappop(self._pulls)
                    self._pulled(node_id, agreement)
                if clock >= next_beat:
                    self._heartbeat()
                    next_beat = clock + self.heartbeat_interval
            due = min([d[0] for d in self._due[:1]] + [p[0] for p in self._pulls[:1]], default=None)
            wait = min(self.tick, max(0.0, (due - time.monotonic()) if due is not None else self.tick))
            self._wake.wait(wait)
            self._wake.clear()

    def _plan(self, clock: float) -> None:
        for node in self.nodes.values():
            if not node.online:
                continue
            desired = self._desired(node)
            restart = bool(node.applied) and self._pattern_digest(node) != node.pattern_seen
            if node.scheduled is not None and node.scheduled == desired:
                continue  # already due
            if desired != node.applied or restart:
                node.scheduled = desired
                heapq.heappush(self._due, (clock + self.apply_delay, next(self._seq), node.node_id))

    def _pattern_digest(self, node: SimNode) -> str:
        """A pattern node's agreements are made under its pattern as it is now (empty for a policy node)."""
        pattern_id = self.state.nodes[node.org][node.node_id]["pattern"]
        if not pattern_id:
            return ""
        pattern_org, _, name = pattern_id.partition("/")
        pattern = self.state.patterns.get(pattern_org, {}).get(name) or {}
        return hashlib.sha256(json.dumps(pattern.get("services") or [], sort_keys=True).encode()).hexdigest()

    def _pulled(self, node_id: str, agreement: str) -> None:
        """The pull of a version's images ended: its containers exist now and run (anax ``GetContainerStatus``)."""
        node = self.nodes.get(node_id)
        if node is None or not node.online:
            return
        details = self.state.nodes[node.org][node_id]
        for entry in details["services"]:
            if entry.get("agreementId") == agreement:
                for container in entry.get("containerStatus") or []:
                    if container.get("state") == "not started":
                        container["state"], container["created"] = "running", int(time.time())
                details["lastUpdated"] = now()

    def _heartbeat(self) -> None:
        stamp = now()
        for node in self.nodes.values():
            if node.online:
                self.state.nodes[node.org][node.node_id]["lastHeartbeat"] = stamp

    def _desired(self, node: SimNode) -> Desired:
        details = self.state.nodes[node.org][node.node_id]
        wanted: list[tuple[str, str, tuple[str, ...]]] = []
        if details["pattern"]:
            pattern_org, _, name = details["pattern"].partition("/")
            pattern = self.state.patterns.get(pattern_org, {}).get(name)
            for entry in (pattern or {}).get("services", []):
                if entry.get("serviceArch") in (node.arch, "*", ""):
                    wanted.append((entry["serviceOrgid"], entry["serviceUrl"],
                                   _ordered_versions(entry.get("serviceVersions") or [])))
        else:
            kept = {(o, u): v for o, u, v in node.applied or ()}
            for _, policy in sorted(self.state.policies.get(node.org, {}).items()):
                service = policy.get("service") or {}
                # the deployment policy merged with each version's service policy (sandbox/agbot_match.py)
                fits = fitting_versions(self.state, policy, node.arch, details,
                                        _ordered_versions(service.get("serviceVersions") or []))
                if service.get("arch") in (node.arch, "*", "") and fits:
                    key = (service["org"], service["name"])
                    if agbot_priority_problem(service.get("serviceVersions") or []):
                        # the agbot refuses the policy (anax ServiceRef.Validate): no new agreement, the node keeps
                        # what it was running under the policy before
                        if key in kept:
                            wanted.append((*key, kept[key]))
                        continue
                    wanted.append((*key, fits))
        return tuple(sorted(wanted))

    # -- what the agent does --------------------------------------------------------------------------------------
    def _apply(self, node: SimNode) -> None:
        desired = self._desired(node)  # the Exchange as it is now, not as it was when this was scheduled
        details = self.state.nodes[node.org][node.node_id]
        digest = self._pattern_digest(node)
        restart = bool(details["services"]) and digest != node.pattern_seen
        if restart:
            # a pattern change cancels every agreement made under the pattern (anax
            # agreementbot/consumer_protocol_handler.go, pattern change): every service restarts, even unchanged ones
            node.restarts += 1
        before = {(s["orgid"], s["serviceUrl"]): s for s in details["services"]}
        services: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        registered: list[dict[str, Any]] = []
        for svc_org, url, versions in desired:
            running: dict[str, Any] | None = None
            old = before.get((svc_org, url))
            exited: dict[str, Any] | None = None
            for version in versions:
                if old is not None and old["version"] == version and not restart and not _exited(old):
                    running = old  # the agreement stands: nothing restarts
                    break
                attempt, problem = self._attempt(node, svc_org, url, version)
                if attempt is not None:
                    running = attempt
                    break
                if problem.kind == "silent":
                    continue  # the agent logs it and declines the agreement; nothing reaches the Exchange
                errors.append(_surface_error(problem.kind, problem.message, svc_org, url, version, node.arch))
                if problem.kind == EC_START_CONTAINER and exited is None:
                    exited = self._entry(node, svc_org, url, version, state="exited")
            if running is None and exited is None and old is not None and not any(
                    e["workload"]["url"] == url for e in errors):
                running = old  # declined silently: the node stays on what it ran
            if running is None:
                running = exited
            if running is not None:
                renewed = restart or running is not old
                if renewed:
                    running = {**running, "agreementId": _agreement(node, url, str(running["version"]))}
                    self._start_pull(node, running)
                services.append(running)
            registered.append({"url": f"{svc_org}/{url}", "numAgreements": 1 if running else 0,
                               "configState": "active", "policy": "", "properties": []})
        stamp = now()
        details["services"] = services
        details["runningServices"] = (
            "|" + "|".join(f"{s['orgid']}/{s['serviceUrl']}_{s['version']}_{s['arch']}" for s in services) + "|"
            if services else "")
        details["registeredServices"] = registered
        details["errors"] = errors
        details["lastUpdated"] = details["lastHeartbeat"] = stamp
        node.applied, node.scheduled, node.pattern_seen = desired, None, digest

    def _start_pull(self, node: SimNode, entry: dict[str, Any]) -> None:
        """A new agreement's containers are ``"not started"`` until their images are pulled (anax
        ``governance/status.go`` ``GetContainerStatus``); then they run."""
        pull = self.pull_time if node.pull_time is None else node.pull_time
        containers = [dict(c) for c in entry.get("containerStatus") or []]
        entry["containerStatus"] = containers
        if pull <= 0 or not any(c.get("state") == "running" for c in containers):
            return
        for container in containers:
            if container.get("state") == "running":
                container["state"], container["created"] = "not started", 0
        heapq.heappush(self._pulls, (time.monotonic() + pull, next(self._seq), node.node_id, entry["agreementId"]))

    def _entry(self, node: SimNode, svc_org: str, url: str, version: str, *, state: str) -> dict[str, Any]:
        record = self.state.services.get(svc_org, {}).get(form_id(url, version, node.arch)) or {}
        try:
            deployment = json.loads(record.get("deployment") or "{}")
        except ValueError:
            deployment = {}
        containers = [{"name": name, "image": str(c.get("image", "")), "created": int(time.time()), "state": state}
                      for name, c in sorted((deployment.get("services") or {}).items())] or [
            {"name": url, "image": "", "created": int(time.time()), "state": state}]
        return {"agreementId": "", "orgid": svc_org, "serviceUrl": url, "version": version, "arch": node.arch,
                "containerStatus": containers, "operatorStatus": None, "configState": "active"}

    def _attempt(self, node: SimNode, svc_org: str, url: str, version: str) -> tuple[dict[str, Any] | None, Problem]:
        """What the agent does for one proposed version. Signature, key and missing-service problems are declined
        without a surfaced error (not an event type of anax ``persistence/surface_errors.go``
        ``getErrorTypeList``); pull and container failures are surfaced with their workload."""
        sid = form_id(url, version, node.arch)
        record = self.state.services.get(svc_org, {}).get(sid)
        if record is None:
            return None, Problem("silent", f"Unable to find service {svc_org}/{url} {version} {node.arch}")
        keys = self.state.keys.get((svc_org, sid), {})
        if not self._verify(sid, record, keys):
            return None, Problem("silent", f"Deployment signature of {svc_org}/{url} {version} not verified")
        try:
            deployment = json.loads(record["deployment"] or "{}")
        except ValueError:
            return None, Problem(EC_DEPLOYMENT_CONFIG,
                                 f"Unable to parse the deployment of service {svc_org}/{url} {version}")
        auths = {a["registry"] for a in self.state.dockauths.get((svc_org, sid), [])}
        for container in (deployment.get("services") or {}).values():
            image = str(container.get("image", ""))
            host = registry_host(image)
            repo, _, reference = image[len(host) + 1:].partition("@")
            if host != "docker.io" and not node.trusts_ca:
                return None, Problem(EC_IMAGE_LOAD, (
                    f"Error pulling image {image} for service {svc_org}/{url} {version}: Error response from "
                    f"daemon: Get \"https://{host}/v2/\": tls: failed to verify certificate: x509: certificate "
                    "signed by unknown authority"))
            if host != "docker.io" and host not in auths and host not in node.credentials:
                # anax container/imagepull.go: a dockauth is used only when its registry equals host[:port]
                return None, Problem(EC_IMAGE_LOAD, (
                    f"Error pulling image {image} for service {svc_org}/{url} {version}: Error response from "
                    f"daemon: Head \"https://{host}/v2/{repo}/manifests/{reference or 'latest'}\": no basic auth "
                    "credentials"))
        if node.fail_versions is not None and (not node.fail_versions or version in node.fail_versions):
            first = next(iter(sorted(deployment.get("services") or {})), url)
            return None, Problem(EC_START_CONTAINER, (
                f"Execution of service {svc_org}/{url} {version} failed: container {first} exited with status 1 "
                "(restart count exceeded)"))
        return self._entry(node, svc_org, url, version, state="running"), Problem("", "")

    def _verify(self, sid: str, record: dict[str, Any], keys: dict[str, str]) -> bool:
        """Cached per service and key set, as the agent caches a service's keys."""
        digest = hashlib.sha256(json.dumps([sid, record.get("deployment"), record.get("deploymentSignature"),
                                            sorted(keys.values())]).encode()).hexdigest()
        known = self._verified.get(digest)
        if known is None:
            known = self._verified[digest] = bool(record.get("deploymentSignature")) and verified_by_any_key(
                keys.values(), record.get("deployment") or "", record.get("deploymentSignature") or "")
        return known


def _node_details(org: str, node_id: str, arch: str, pattern: str,
                  properties: list[dict[str, Any]] | None) -> dict[str, Any]:
    stamp = now()
    return {
        "id": node_id, "orgid": org, "arch": arch, "name": node_id.split("/", 1)[1], "nodeType": "device",
        "owner": f"{org}/nodeowner", "pattern": pattern, "lastHeartbeat": stamp, "lastUpdated": stamp,
        "registeredServices": [], "runningServices": "", "services": [], "connectivity": {}, "errors": [],
        "properties": copy.deepcopy(properties or []), "constraints": [],
        "softwareVersions": {"horizon": "2.31.0"}, "msgEndPoint": "",
        "heartbeatIntervals": {"minInterval": 10, "maxInterval": 120, "intervalAdjustment": 10},
        "clusterNamespace": None, "isNamespaceScoped": False, "publicKey": "", "token": "********",
        "userInput": [], "ha_group": None,
    }


def _exited(entry: dict[str, Any]) -> bool:
    return any(c.get("state") == "exited" for c in entry.get("containerStatus") or [])


def _agreement(node: SimNode, url: str, version: str) -> str:
    return hashlib.sha256(f"{node.node_id}|{url}|{version}|{time.time()}".encode()).hexdigest()


def _surface_error(code: str, message: str, svc_org: str, url: str, version: str, arch: str) -> dict[str, Any]:
    """An ``eventlog.SurfaceError`` as the agent PUTs it to ``orgs/{org}/nodes/{node}/errors`` (anax
    ``persistence/surface_errors.go``): only the surfaced event types, each with its ``workload``."""
    assert code in SURFACED, code
    return {"record_id": hashlib.sha1(f"{url}{version}{message}".encode()).hexdigest()[:12], "message": message,
            "event_code": code, "hidden": False,
            "workload": {"url": url, "org": svc_org, "version": version, "arch": arch}, "timestamp": now()}
