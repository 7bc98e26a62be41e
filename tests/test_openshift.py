"""deploy/openshift: the Kubernetes base as the OpenShift overlay renders it, checked against what the restricted-v2
SCC admits (no fixed UID/GID/fsGroup, non-root, no privilege escalation, every capability dropped, RuntimeDefault
seccomp, nothing privileged or on the host) and what the router needs (a Route to the bot's Service port, only
Slack's path, edge TLS). Offline: the overlay is rendered here by the kustomize features it uses (resources,
JSON 6902 patches and ``$patch: delete`` with kind/name regex targets), so the test needs no kubectl."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from bot.wsgi import SLACK_EVENTS_PATH

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "deploy" / "openshift"
WORKLOADS = ("Deployment", "StatefulSet")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "patches", "namespace", "labels", "images"}
    lacking = set(kustomization) - known
    assert not lacking, f"the overlay uses kustomize features this renderer lacks: {lacking}"
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        docs.extend(_render(path) if path.is_dir() else copy.deepcopy(_documents(path)))
    for entry in kustomization.get("patches", []):
        target = entry["target"]

        def hit(doc: dict[str, Any], target: dict[str, str] = target) -> bool:
            return bool(re.fullmatch(target["kind"], doc["kind"])
                        and re.fullmatch(target.get("name", ".*"), doc["metadata"]["name"]))

        patch = yaml.safe_load(entry["patch"])
        matched = [doc for doc in docs if hit(doc)]
        assert matched, f"patch target {target} matches nothing in the base"
        if isinstance(patch, dict) and patch.get("$patch") == "delete":
            docs = [doc for doc in docs if not hit(doc)]
            continue
        for doc in matched:
            for op in patch:
                *parents, leaf = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
                holder = doc
                for part in parents:
                    holder = holder[part]
                assert leaf in holder, f"{op['op']} {op['path']}: not in {doc['kind']} {doc['metadata']['name']}"
                if op["op"] == "remove":
                    del holder[leaf]
                elif op["op"] == "replace":
                    holder[leaf] = op["value"]
                else:
                    raise AssertionError(f"unsupported op {op['op']}")
    return docs


RENDERED = _render(OVERLAY)


def _pods() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in RENDERED if d["kind"] in WORKLOADS}


def test_every_pod_passes_the_restricted_v2_scc() -> None:
    pods = _pods()
    assert set(pods) == {"edgebot-bot", "edgebot-publish", "edgebot-redis"}, "no build worker (privileged DinD)"
    for name, pod in pods.items():
        pod_context = pod.get("securityContext", {})
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(pod_context), f"{name}: OpenShift assigns the IDs"
        assert pod_context.get("runAsNonRoot") is True, name
        assert pod_context.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert not (pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC")), name
        assert not any("hostPath" in v for v in pod.get("volumes", [])), name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert not {"runAsUser", "runAsGroup"} & set(context), where
            assert context.get("privileged", False) is False, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities") == {"drop": ["ALL"]}, where


def test_the_namespace_enforces_restricted() -> None:
    (namespace,) = [d for d in RENDERED if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_slack_reaches_the_bot_through_a_route_and_only_on_its_path() -> None:
    assert not [d for d in RENDERED if d["kind"] == "Ingress"], "a Route instead of the Ingress"
    (route,) = [d for d in RENDERED if d["kind"] == "Route"]
    spec = route["spec"]
    assert spec["path"] == SLACK_EVENTS_PATH
    assert spec["tls"]["termination"] == "edge" and spec["tls"]["insecureEdgeTerminationPolicy"] == "Redirect"
    (service,) = [d for d in RENDERED if d["kind"] == "Service" and d["metadata"]["name"] == spec["to"]["name"]]
    assert spec["port"]["targetPort"] in {p["name"] for p in service["spec"]["ports"]}


def test_the_rendered_workloads_are_valid_kubernetes() -> None:
    for doc in RENDERED:
        if doc["kind"] in WORKLOADS + ("Namespace",):
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_image_runs_under_an_arbitrary_uid_in_group_0() -> None:
    """restricted-v2 runs the container as a UID from the namespace's range with group 0: edgebot's writable
    directories must belong to group 0 and be group-writable."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"chgrp -R 0 /var/cache/edgebot /var/lib/edgebot", text)
    assert re.search(r"chmod -R g=u /var/cache/edgebot /var/lib/edgebot", text)
