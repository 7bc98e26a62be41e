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

from sandbox.exchange_routes import ExchangeState, now
from sandbox.exchange_rules import form_id

_PSS_AUTO = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
_CLAUSE_RE = re.compile(r'^\s*([A-Za-z0-9_.\-/]+)\s*(==|=|!=)\s*"?([^"]*?)"?\s*$')

Desired = tuple[tuple[str, str, tuple[str, ...]], ...]
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
                 tick: float = 0.05) -> None:
        self.state = state
        self.apply_delay = apply_delay
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
                 credentials: Iterable[str] = (), online: bool = True) -> str:
        """A registered node; ``pattern`` is ``org/name`` (empty: a policy node). Returns its id ``org/name``."""
        node_id = f"{org}/{name}"
        with self.state.lock:
            self.state.orgs.add(org)
            self.state.nodes.setdefault(org, {})[node_id] = _node_details(org, node_id, arch, pattern, properties)
            self.nodes[node_id] = SimNode(org, node_id, arch, trusts_ca=trusts_ca, credentials=set(credentials),
                                          online=online)
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
                if clock >= next_beat:
                    self._heartbeat()
                    next_beat = clock + self.heartbeat_interval
            wait = min(self.tick, max(0.0, (self._due[0][0] - time.monotonic()) if self._due else self.tick))
            self._wake.wait(wait)
            self._wake.clear()

    def _plan(self, clock: float) -> None:
        for node in self.nodes.values():
            if not node.online:
                continue
            desired = self._desired(node)
            if desired != node.applied and desired != node.scheduled:
                node.scheduled = desired
                heapq.heappush(self._due, (clock + self.apply_delay, next(self._seq), node.node_id))

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
            for _, policy in sorted(self.state.policies.get(node.org, {}).items()):
                service = policy.get("service") or {}
                if service.get("arch") in (node.arch, "*", "") and constraints_match(
                        policy.get("constraints") or [], details["properties"]):
                    wanted.append((service["org"], service["name"],
                                   _ordered_versions(service.get("serviceVersions") or [])))
        return tuple(sorted(wanted))

    # -- what the agent does --------------------------------------------------------------------------------------
    def _apply(self, node: SimNode) -> None:
        desired = self._desired(node)  # the Exchange as it is now, not as it was when this was scheduled
        details = self.state.nodes[node.org][node.node_id]
        services: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        registered: list[dict[str, Any]] = []
        for svc_org, url, versions in desired:
            running = None
            for version in versions:
                entry, problem = self._attempt(node, svc_org, url, version)
                if entry is not None:
                    running = entry
                    break
                errors.append(_surface_error(problem, svc_org, url, version, node.arch))
            if running is not None:
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
        node.applied, node.scheduled = desired, None

    def _attempt(self, node: SimNode, svc_org: str, url: str, version: str) -> tuple[dict[str, Any] | None, str]:
        sid = form_id(url, version, node.arch)
        record = self.state.services.get(svc_org, {}).get(sid)
        if record is None:
            return None, f"Unable to find service {svc_org}/{url} version {version} arch {node.arch} in the exchange"
        keys = self.state.keys.get((svc_org, sid), {})
        if not self._verify(sid, record, keys):
            return None, (f"Deployment signature of service {svc_org}/{url} {version} could not be verified with any "
                          f"of the {len(keys)} public key(s) of the service: There is no public key available to "
                          "verify the deployment signature")
        try:
            deployment = json.loads(record["deployment"] or "{}")
        except ValueError:
            return None, f"Unable to parse the deployment of service {svc_org}/{url} {version}"
        auths = {a["registry"] for a in self.state.dockauths.get((svc_org, sid), [])}
        containers = []
        for name, container in sorted((deployment.get("services") or {}).items()):
            image = str(container.get("image", ""))
            host = registry_host(image)
            repo, _, reference = image[len(host) + 1:].partition("@")
            if host != "docker.io" and not node.trusts_ca:
                return None, (f"Error pulling image {image} for service {svc_org}/{url} {version}: Error response "
                              f"from daemon: Get \"https://{host}/v2/\": tls: failed to verify certificate: "
                              "x509: certificate signed by unknown authority")
            if host != "docker.io" and host not in auths and host not in node.credentials:
                return None, (f"Error pulling image {image} for service {svc_org}/{url} {version}: Error response "
                              f"from daemon: Head \"https://{host}/v2/{repo}/manifests/{reference or 'latest'}\": "
                              "no basic auth credentials")
            containers.append({"name": name, "image": image, "created": int(time.time()), "state": "running"})
        if node.fail_versions is not None and (not node.fail_versions or version in node.fail_versions):
            first = containers[0]["name"] if containers else url
            return None, (f"Execution of service {svc_org}/{url} {version} failed: container {first} exited with "
                          "status 1 (restart count exceeded)")
        agreement = hashlib.sha256(f"{node.node_id}|{sid}|{time.time()}".encode()).hexdigest()
        return {"agreementId": agreement, "orgid": svc_org, "serviceUrl": url, "version": version,
                "arch": node.arch, "containerStatus": containers, "operatorStatus": None,
                "configState": "active"}, ""

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


def _surface_error(message: str, svc_org: str, url: str, version: str, arch: str) -> dict[str, Any]:
    """An ``eventlog.SurfaceError`` as the agent PUTs it to ``orgs/{org}/nodes/{node}/errors``."""
    code = "error_image_load" if "pulling image" in message else (
        "error_start_container" if "Execution" in message else "error_in_agreement")
    return {"record_id": hashlib.sha1(f"{url}{version}{message}".encode()).hexdigest()[:12], "message": message,
            "event_code": code, "hidden": False,
            "workload": {"url": url, "org": svc_org, "version": version, "arch": arch}, "timestamp": now()}
