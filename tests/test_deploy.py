"""deploy/ checked offline: Kubernetes manifests against the Kubernetes JSON schemas (strict: unknown fields are
errors), the kustomization, the config in the ConfigMap against edgebot's own config loader, the wiring between
them (env vars, Vault roles, probes, ServiceAccounts), the compose file, the Slack app manifests and the Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.wsgi import SLACK_EVENTS_PATH
from edgebot import redis_acl
from edgebot.config import parse_config
from edgebot.secrets import SecretRef
from workers.vault import vault_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
"""The oldest version the manifests support (native sidecars need 1.29) and the newest the package has schemas for."""


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _resources() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [(name, doc) for name in kustomization["resources"] for doc in _documents(K8S / name)]


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _resources() if doc["kind"] == kind}


def _pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    spec = _pod(deployment)
    return next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)


def _main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return _pod(deployment)["containers"][0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _config_text() -> str:
    return _by_kind("ConfigMap")["edgebot-config"]["data"]["edgebot.toml"]


def _config() -> Any:
    import tomllib

    return parse_config(tomllib.loads(_config_text()), path="configmap:edgebot-config", environ={})


# -- Kubernetes: schemas -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schema(version: str) -> None:
    resources = _resources()
    assert len(resources) >= 15
    for name, doc in resources:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version} at "
                        f"{path}: {exc.message}")


def test_the_schema_check_catches_a_misspelled_field() -> None:
    """The check above can fail: a typo that kubectl would silently drop is an error in strict mode."""
    bot = _by_kind("Deployment")["edgebot-bot"]
    _main_container(bot)["readinesProbe"] = _main_container(bot).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(bot, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest_and_only_existing_ones() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    names = [(doc["kind"], doc["metadata"]["name"]) for _, doc in _resources()]
    assert len(names) == len(set(names)), "two resources with the same kind and name"
    for _, doc in _resources():
        if doc["kind"] not in ("Namespace", "ClusterRoleBinding"):
            assert "namespace" not in doc["metadata"], "the kustomization sets the namespace"


def test_references_inside_the_manifests_resolve() -> None:
    """What the schema cannot see and the API server or kubelet would only refuse at apply or start time: selectors
    that match their pods, named probe ports, volume mounts, ConfigMaps, Secrets (the ones the kustomization's header
    tells operators to create, with those keys) and ServiceAccounts."""
    header = " ".join(line.lstrip("# ") for line in (K8S / "kustomization.yaml").read_text().splitlines()
                      if line.startswith("#")).replace(" \\ ", " ")
    documented = {(name, key) for name, keys in
                  re.findall(r"create secret generic (\S+)((?:\s+--from-literal=[\w-]+=\S+)+)", header)
                  for key in re.findall(r"--from-literal=([\w-]+)=", keys)}
    assert documented == {("edgebot-slack", "bot-token"), ("edgebot-slack", "signing-secret"),
                          ("edgebot-redis", "bot-password"), ("edgebot-redis", "build-password"),
                          ("edgebot-redis", "publish-password"), ("edgebot-trust", "seal-key")}
    config_maps = set(_by_kind("ConfigMap"))
    accounts = set(_by_kind("ServiceAccount"))
    workloads = {**_by_kind("Deployment"), **_by_kind("StatefulSet")}
    for name, workload in workloads.items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        pod = _pod(workload)
        assert pod.get("serviceAccountName", "default") in accounts | {"default"}, name
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps or volume["configMap"].get("optional"), name
        for container in pod["containers"] + pod.get("initContainers", []):
            ports = {p["name"] for p in container.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                assert port is None or port in ports, f"{name}/{container['name']}: {probe} port {port}"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, f"{name}: volume {mount['name']}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in documented, f"{name}: {ref} is not a documented Secret"
    for service in _by_kind("Service").values():
        assert any(service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
                   for w in workloads.values())


# -- Kubernetes: what the deployment promises --------------------------------------------------------------------

def test_bot_deployment_is_replicated_probed_and_protected() -> None:
    bot = _by_kind("Deployment")["edgebot-bot"]
    assert bot["spec"]["replicas"] >= 2
    container = _main_container(bot)
    assert container["args"][0] == "serve"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pdb = _by_kind("PodDisruptionBudget")["edgebot-bot"]
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"] == bot["spec"]["selector"]["matchLabels"]
    service = _by_kind("Service")["edgebot-bot"]
    assert service["spec"]["selector"] == bot["spec"]["selector"]["matchLabels"]
    ingress = _by_kind("Ingress")["edgebot-bot"]
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == [SLACK_EVENTS_PATH], "only Slack's endpoint is public"


def test_every_edgebot_container_is_non_root_read_only_and_bounded() -> None:
    for name, deployment in _by_kind("Deployment").items():
        pod = _pod(deployment)
        container = _main_container(deployment)
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0, name
        assert context.get("allowPrivilegeEscalation") is False, name
        assert context.get("readOnlyRootFilesystem") is True, name
        assert context.get("capabilities") == {"drop": ["ALL"]}, name
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
        assert container["image"] == "edgebot", f"{name}: the kustomization's images: entry pins the image"
        assert pod["automountServiceAccountToken"] is False, name


def test_worker_deployments_per_arch_use_node_selectors_and_their_own_vault_roles() -> None:
    deployments = _by_kind("Deployment")
    build = {name: d for name, d in deployments.items() if name.startswith("edgebot-build-")}
    assert set(build) >= {"edgebot-build-amd64", "edgebot-build-arm64"}
    for name, deployment in build.items():
        arch = name.removeprefix("edgebot-build-")
        container = _main_container(deployment)
        assert container["args"] == ["worker", "--arch", arch]
        assert _pod(deployment)["nodeSelector"] == {"kubernetes.io/arch": arch}
        assert _pod(deployment)["serviceAccountName"] == "edgebot-build"
        assert _env(container)["EDGEBOT_VAULT_ROLE"] == "edgebot-build"
        assert _env(container)["DOCKER_HOST"] == "unix:///var/run/dind/docker.sock"
        dind = _container(deployment, "dind")
        assert dind["restartPolicy"] == "Always", "dind runs as a native sidecar"
        assert any(m["mountPath"] == "/var/run/dind" for m in dind["volumeMounts"])
    publish = deployments["edgebot-publish"]
    assert publish["spec"]["replicas"] >= 2, "several publish workers, so a scheduler always runs"
    assert _main_container(publish)["args"] == ["worker", "--publish"]
    assert _pod(publish)["serviceAccountName"] == "edgebot-publish"
    assert _env(_main_container(publish))["EDGEBOT_VAULT_ROLE"] == "edgebot-publish"
    for deployment in (*build.values(), publish):
        probe = _main_container(deployment)["livenessProbe"]["httpGet"]
        assert probe["path"] == "/healthz" and probe["port"] == "metrics"
        ports = {p["name"]: p["containerPort"] for p in _main_container(deployment)["ports"]}
        assert ports["metrics"] == _config().settings.metrics_port
        assert _env(_main_container(deployment))["EDGEBOT_METRICS_FLEET"] == "false", "the bot serves them"
    assert "EDGEBOT_METRICS_FLEET" not in _env(_main_container(deployments["edgebot-bot"]))
    assert _config().settings.metrics_fleet is True


def test_only_the_bot_and_the_publish_workers_get_the_seal_key() -> None:
    holders = {name for name, workload in {**_by_kind("Deployment"), **_by_kind("StatefulSet")}.items()
               if "edgebot-trust" in json.dumps(workload)}
    assert holders == {"edgebot-bot", "edgebot-publish"}


def test_service_accounts_match_the_vault_policies() -> None:
    accounts = _by_kind("ServiceAccount")
    policies = {p.stem.removeprefix("edgebot-") for p in (DEPLOY / "vault").glob("edgebot-*.hcl")}
    assert policies == {"build", "publish"}
    assert set(accounts) == {"edgebot-bot"} | {f"edgebot-{p}" for p in policies}
    deployments = _by_kind("Deployment")
    assert _pod(deployments["edgebot-bot"])["serviceAccountName"] == "edgebot-bot"
    assert "EDGEBOT_VAULT_ROLE" not in _env(_main_container(deployments["edgebot-bot"])), "the bot has no Vault role"
    binding = _by_kind("ClusterRoleBinding")["edgebot-vault-tokenreview"]
    assert {s["name"] for s in binding["subjects"]} == {"edgebot-build", "edgebot-publish"}


def test_configmap_config_loads_and_each_role_can_resolve_what_it_needs() -> None:
    config = _config()
    assert config.settings.log_format == "json"
    settings = vault_settings(config, environ={"EDGEBOT_VAULT_ROLE": "edgebot-build"})
    assert settings is not None and settings.auth == "kubernetes" and settings.role == "edgebot-build"
    deployments = _by_kind("Deployment")
    token_mount = {m["mountPath"] for d in deployments.values() for m in _main_container(d)["volumeMounts"]
                   if m["name"] == "vault-token"}
    assert token_mount == {str(Path(settings.jwt_path).parent)}, "vault.jwt_path is where the projected token is"

    def refs_of(role: str) -> list[SecretRef]:
        refs = [config.redis_password]
        if role == "bot":
            return [*refs, config.slack.bot_token, config.slack.signing_secret]
        if role == "build":  # no Slack token: it reports through Redis
            return [*refs, *(r.push_password for r in config.registries.values())]
        return [*refs, config.slack.bot_token, config.exchange.password, config.signing.private_key,
                *(r.pull_password for r in config.registries.values() if r.pull_password)]

    policy_path = {role: re.search(r'path "secret/data/([^"]+)"', (DEPLOY / "vault" / f"edgebot-{role}.hcl")
                                   .read_text()).group(1) for role in ("build", "publish")}  # type: ignore[union-attr]
    for name, role in (("edgebot-bot", "bot"), ("edgebot-build-amd64", "build"), ("edgebot-build-arm64", "build"),
                       ("edgebot-publish", "publish")):
        env = _env(_main_container(deployments[name]))
        for ref in refs_of(role):
            assert ref is not None
            if ref.scheme == "env":
                assert ref.target in env, f"{name} does not set {ref.target} ({ref} in the config)"
            else:
                assert ref.scheme == "vault" and role != "bot", f"{name}: {ref}"
                path = ref.target.split("#")[0].removeprefix("secret/data/")
                assert path == policy_path[role], f"{name} cannot read {ref} with policy edgebot-{role}"


def test_redis_reference_keeps_acknowledged_writes() -> None:
    redis = _by_kind("StatefulSet")["edgebot-redis"]
    args = _main_container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert _config().redis_url.startswith("redis://edgebot-redis:")


def test_network_policy_denies_ingress_by_default_and_admits_slack_metrics_and_redis_clients() -> None:
    policies = _by_kind("NetworkPolicy")
    deny = policies.pop("edgebot-default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    ports = {name: [p["port"] for rule in p_["spec"]["ingress"] for p in rule["ports"]]
             for name, p_ in policies.items()}
    assert ports == {"edgebot-bot-http": [3000], "edgebot-worker-metrics": [9100], "edgebot-redis-clients": [6379]}


# -- docker compose ------------------------------------------------------------------------------------------------

def test_compose_file_runs_redis_with_aof_and_wires_config_and_secrets() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "bot", "publish", "build-amd64"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    volume = services["redis"]["volumes"][0].split(":")
    assert volume[1] == "/data" and volume[0] in compose["volumes"], "the AOF lives on a named volume"
    for name in ("bot", "publish", "build-amd64"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert any(v.endswith(":/etc/edgebot/edgebot.toml:ro") for v in service["volumes"]), name
        assert "redis" in service["depends_on"], name
        for key, value in service.get("environment", {}).items():
            if not key.startswith("EDGEBOT_"):  # settings may be literals; credentials come from the environment
                assert str(value).startswith("${"), f"{name}: {key} is a literal; take it from the environment"
        assert "healthcheck" in service, name
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], f"{name}: unknown secret {secret}"
    assert services["bot"]["command"][0] == "serve"
    assert services["publish"]["command"] == ["worker", "--publish"]
    assert services["build-amd64"]["command"] == ["worker", "--arch", "amd64"]


def test_compose_file_is_valid_for_docker_compose_and_refuses_to_start_without_its_secrets() -> None:
    """docker-compose (Debian's, installed by scripts/install-system-deps.sh) checks the file against the Compose
    schema offline; the required variables are enforced with a message naming them."""
    compose = ["docker-compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "-q"]
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    required = {"REDIS_BOT_PASSWORD": "rb", "REDIS_BUILD_PASSWORD": "rw", "REDIS_PUBLISH_PASSWORD": "rp",
                "SLACK_BOT_TOKEN": "s", "EXCHANGE_PASSWORD": "e", "REGISTRY_PUSH_PASSWORD": "p"}
    ok = subprocess.run(compose, env={**base, **required}, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    for name in required:
        missing = subprocess.run(compose, env={**base, **{k: v for k, v in required.items() if k != name}},
                                 capture_output=True, text=True, timeout=120)
        assert missing.returncode != 0 and name in missing.stderr, (name, missing.stderr)


# -- Redis ACL users (edgebot.redis_acl) -------------------------------------------------------------------------

ROLE_OF = {"edgebot-bot": "bot", "edgebot-publish": "publish", "edgebot-build-amd64": "build",
           "edgebot-build-arm64": "build"}


def test_each_deployment_and_compose_service_logs_in_to_redis_as_its_roles_user_only() -> None:
    deployments = _by_kind("Deployment")
    assert set(ROLE_OF) == set(deployments)
    for name, role in ROLE_OF.items():
        env = _env(_main_container(deployments[name]))
        assert env["EDGEBOT_REDIS_USERNAME"] == redis_acl.username(role), name
        assert env["REDIS_PASSWORD"]["secretKeyRef"] == {"name": "edgebot-redis", "key": f"{role}-password"}, name
        if role == "build":
            assert "SLACK_BOT_TOKEN" not in env and "EDGEBOT_SEAL_KEY" not in env, name
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, role in (("bot", "bot"), ("publish", "publish"), ("build-amd64", "build")):
        env = services[name]["environment"]
        assert env["EDGEBOT_REDIS_USERNAME"] == redis_acl.username(role), name
        assert env["REDIS_PASSWORD"] == f"${{REDIS_{role.upper()}_PASSWORD}}", name
    assert "SLACK_BOT_TOKEN" not in services["build-amd64"]["environment"]


def test_the_shipped_acl_template_is_edgebots_rules_and_renders_into_a_redis_that_enforces_them(
        tmp_path: Path) -> None:
    """Both templates (compose's file, Kubernetes' ConfigMap) are exactly edgebot.redis_acl's rules; the Kubernetes
    init container's script, run here with sh, writes an ACL file a real redis-server loads: each role logs in with
    its password, the default user and wrong passwords are refused, and the build user cannot write a record."""
    template = redis_acl.acl_template()
    assert (DEPLOY / "redis" / "users.acl.in").read_text() == template
    redis_doc = next(d for d in _documents(K8S / "redis.yaml") if d["kind"] == "ConfigMap")
    assert redis_doc["data"]["users.acl.in"] == template
    statefulset = _by_kind("StatefulSet")["edgebot-redis"]
    assert "--requirepass" not in _main_container(statefulset)["args"]
    script = _container(statefulset, "acl")["command"][2]
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "users.acl.in").write_text(template)
    script = script.replace("/etc/redis-acl/", f"{tmp_path}/etc/").replace("/acl/users.acl", f"{tmp_path}/users.acl")
    passwords = {role: os.urandom(16).hex() for role in redis_acl.ROLES}
    env = {"PATH": os.environ["PATH"], **{f"{r.upper()}_PASSWORD": pw for r, pw in passwords.items()}}
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
    rendered = (tmp_path / "users.acl").read_text()
    assert not any(pw in rendered for pw in passwords.values()), "only hashes on disk"
    import redis as redis_py

    from sandbox.proc_base import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--aclfile", str(tmp_path / "users.acl"), "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def client(user: str | None, password: str | None) -> redis_py.Redis:
            return redis_py.Redis(port=port, username=user, password=password, socket_timeout=5)

        for _ in range(100):
            try:
                client(redis_acl.username("bot"), passwords["bot"]).ping()
                break
            except redis_py.ConnectionError:
                import time

                time.sleep(0.1)
        for role, password in passwords.items():
            assert client(redis_acl.username(role), password).ping()
            with pytest.raises(redis_py.AuthenticationError):
                client(redis_acl.username(role), "wrong").ping()
        with pytest.raises(redis_py.AuthenticationError):
            client(None, None).ping()
        build = client(redis_acl.username("build"), passwords["build"])
        client(redis_acl.username("bot"), passwords["bot"]).set("edgebot:release:r-1", "{}")
        assert build.get("edgebot:release:r-1") == b"{}"
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            build.set("edgebot:release:r-1", "forged")
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            build.rpush("rq:queue:edgebot-publish", "r-1-publish-release")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- Prometheus rules ----------------------------------------------------------------------------------------------

def test_alert_rules_are_valid_and_their_unit_tests_pass() -> None:
    """promtool (Debian's prometheus package) parses every expression and runs edgebot-rules.test.yml: alerts fire on
    the series edgebot exposes, and fleet-wide series reported by two targets are not double counted."""
    rules = DEPLOY / "prometheus"
    check = subprocess.run(["promtool", "check", "rules", "edgebot-rules.yml"], cwd=rules, capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout
    test = subprocess.run(["promtool", "test", "rules", "edgebot-rules.test.yml"], cwd=rules, capture_output=True,
                          text=True, timeout=120)
    assert test.returncode == 0, test.stdout + test.stderr


def test_alert_rules_only_name_series_edgebot_exposes(redis_conn: Any) -> None:
    from edgebot import metrics

    metrics.CallErrorRecorder(redis_conn, "edgebot").record("slack", "chat.update", "ratelimited")
    exposed = {sample.name for family in metrics.build_registry(redis_conn, "edgebot", ["edgebot-publish"]).collect()
               for sample in family.samples}
    named = set(re.findall(r"\bedgebot_\w+", (DEPLOY / "prometheus" / "edgebot-rules.yml").read_text()))
    named = {n for n in named if not n.startswith("edgebot_rules")}
    assert named and named <= exposed, sorted(named - exposed)


# -- Slack app manifests -------------------------------------------------------------------------------------------

SCOPES_BY_METHOD = {
    "chat_postMessage": {"chat:write"}, "chat_update": {"chat:write"}, "chat_postEphemeral": {"chat:write"},
    "conversations_info": {"channels:read", "groups:read", "im:read", "mpim:read"},
    "conversations_members": {"channels:read", "groups:read", "im:read", "mpim:read"},
    "usergroups_users_list": {"usergroups:read"}, "usergroups_list": {"usergroups:read"},
    "users_info": {"users:read"}, "reactions_add": {"reactions:write"}, "auth_test": set(), "views_open": set(),
    "views_update": set(), "views_push": set(), "chat_getPermalink": set(),
    "files_getUploadURLExternal": {"files:write"}, "files_completeUploadExternal": {"files:write"},
    "files_upload_v2": {"files:write"},
}


def _slack_methods_called() -> set[str]:
    """Every Slack Web API method bot/, workers/ and edgebot/ call through slack_sdk's WebClient."""
    found: set[str] = set()
    for package in ("bot", "workers", "edgebot"):
        for path in (ROOT / package).glob("*.py"):
            found |= set(re.findall(
                r"\bclient\.((?:chat|conversations|usergroups|users|reactions|auth|views|files)_\w+)\(",
                path.read_text()))
    return found


@pytest.mark.parametrize("manifest", ["slack-app-manifest.yml", "slack-app-manifest.socket-mode.yml"])
def test_slack_manifest_grants_exactly_the_scopes_edgebot_uses(manifest: str) -> None:
    doc = yaml.safe_load((DEPLOY / manifest).read_text())
    methods = _slack_methods_called()
    assert {"chat_postMessage", "chat_update", "conversations_info", "files_completeUploadExternal"} <= methods
    unknown = methods - set(SCOPES_BY_METHOD)
    assert not unknown, f"add the scopes of {sorted(unknown)} to SCOPES_BY_METHOD and to the manifests"
    needed = {"commands"} | set().union(*(SCOPES_BY_METHOD[m] for m in methods))
    assert set(doc["oauth_config"]["scopes"]["bot"]) == needed
    commands = doc["features"]["slash_commands"]
    assert [c["command"] for c in commands] == ["/edge"]
    assert doc["settings"]["interactivity"]["is_enabled"] is True


def test_http_manifest_points_slack_at_the_bots_events_path() -> None:
    doc = yaml.safe_load((DEPLOY / "slack-app-manifest.yml").read_text())
    command_url = doc["features"]["slash_commands"][0]["url"]
    request_url = doc["settings"]["interactivity"]["request_url"]
    assert command_url == request_url
    assert re.fullmatch(rf"https://[a-z0-9.-]+{re.escape(SLACK_EVENTS_PATH)}", command_url)
    assert doc["settings"]["socket_mode_enabled"] is False
    ingress_host = _by_kind("Ingress")["edgebot-bot"]["spec"]["rules"][0]["host"]
    assert command_url == f"https://{ingress_host}{SLACK_EVENTS_PATH}", "the manifest and the Ingress agree"


def test_socket_mode_manifest_has_no_public_url() -> None:
    doc = yaml.safe_load((DEPLOY / "slack-app-manifest.socket-mode.yml").read_text())
    assert doc["settings"]["socket_mode_enabled"] is True
    assert "url" not in doc["features"]["slash_commands"][0]
    assert "request_url" not in doc["settings"]["interactivity"]


# -- the image -----------------------------------------------------------------------------------------------------

def test_dockerfile_is_pinned_non_root_multi_stage_and_installs_the_lock_file() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    bases = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert len(bases) == 2, "a build stage and a runtime stage (no compilers or pip caches in the image)"
    for base in bases:
        assert re.fullmatch(r"[\w./-]+(:\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?", base) and (
            "@sha256:" in base or re.search(r":\d+\.\d+\.\d+", base)), f"{base} is not pinned to an exact version"
    assert "-r requirements.lock" in text and "--no-deps ." in text
    user = [line.split()[1] for line in instructions if line.startswith("USER ")][-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    for line in instructions:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    assert "COPY tests" not in text and "COPY sandbox" not in text
    k8s_user = {_main_container(d)["securityContext"].get("runAsUser") or _pod(d)["securityContext"]["runAsUser"]
                for name, d in _by_kind("Deployment").items()}
    assert k8s_user == {int(user.split(":")[0])}, "the manifests run as the image's user"


# -- the Vault wiring, end to end against a real OpenBao -----------------------------------------------------------

def test_each_worker_deployment_logs_in_with_its_own_role_and_reads_only_its_policys_path(tmp_path: Path) -> None:
    """The ConfigMap's [vault] table (url and token path pointed at this test), the policies of deploy/vault, one
    Kubernetes auth role per ServiceAccount as docs/production.md writes them, and each Deployment's env: the build
    worker resolves the push credentials and is refused the signing key; the publish worker the other way round."""
    import tomllib

    from edgebot.errors import SecretUnavailable
    from sandbox.bao import BaoServer, TokenReviewStandIn
    from workers.vault import build_resolver

    data = tomllib.loads(_config_text())
    deployments = _by_kind("Deployment")
    with BaoServer(tmp_path / "bao") as bao, TokenReviewStandIn() as reviewer:
        data["vault"]["url"] = bao.url
        config = parse_config(data, environ={})
        values: dict[str, dict[str, str]] = {}
        for ref in (config.exchange.password, config.signing.private_key,
                    *(r.push_password for r in config.registries.values()),
                    *(r.pull_password for r in config.registries.values() if r.pull_password)):
            path, _, key = ref.target.partition("#")
            values.setdefault(path, {})[key] = f"value-of-{key}"
        for path, secret in values.items():
            bao.put_secret(path, secret)
        for role in ("build", "publish"):
            bao.write_policy(f"edgebot-{role}", (DEPLOY / "vault" / f"edgebot-{role}.hcl").read_text())
            bao.kubernetes_role(f"edgebot-{role}", [f"edgebot-{role}"], reviewer=reviewer,
                                service_account=f"edgebot-{role}", namespace="edgebot")

        def resolver_of(deployment: dict[str, Any]) -> Any:
            """The pod's projected token (its own file: the reader reads it at login) and the Deployment's env."""
            account = _pod(deployment)["serviceAccountName"]
            token = tmp_path / account
            token.write_text(reviewer.issue_jwt("edgebot", account))
            pod_config = parse_config({**data, "vault": {**data["vault"], "jwt_path": str(token)}}, environ={})
            env = {k: v for k, v in _env(_main_container(deployment)).items() if isinstance(v, str)}
            return build_resolver(pod_config, environ=env)

        build, publish = resolver_of(deployments["edgebot-build-arm64"]), resolver_of(deployments["edgebot-publish"])
        push = config.registries["icr"].push_password
        assert build.resolve(push).reveal() == "value-of-icr_push_apikey"
        assert publish.resolve(config.signing.private_key).reveal() == "value-of-signing_key"
        assert publish.resolve(config.exchange.password).reveal() == "value-of-exchange_password"
        with pytest.raises(SecretUnavailable, match="permission denied: the role may not read"):
            build.resolve(config.signing.private_key)
        with pytest.raises(SecretUnavailable, match="permission denied: the role may not read"):
            publish.resolve(push)
        assert reviewer.reviews >= 2
