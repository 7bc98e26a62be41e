"""Config loading: secrets only as references, precise messages for every mistake, settings overridable."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgebot.config import access_problem, parse_config
from edgebot.errors import ConfigError, SecretUnavailable
from edgebot.secrets import Secret, SecretRef, SecretResolver

BASE: dict[str, Any] = {
    "slack": {"bot_token": "env:SLACK_BOT_TOKEN", "signing_secret": "file:/run/secrets/slack-signing"},
    "redis": {"url": "redis://127.0.0.1:6379/0"},
    "exchange": {"url": "https://hub.example/edge-exchange/v1/", "username": "acme/edgebot",
                 "password": "vault:secret/data/edgebot/exchange#password"},
    "signing": {"private_key": "vault:secret/data/edgebot/signing#private_key"},
    "registries": {"icr": {"kind": "icr", "host": "us.icr.io", "namespace": "edge", "push_username": "iamapikey",
                           "push_password": "env:ICR_PUSH_KEY"}},
    "services": {"hello": {"source": "https://git.example/hello.git", "org": "acme", "arches": ["amd64", "arm64"]}},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node = data
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return data


def test_valid_config_defaults() -> None:
    config = parse_config(BASE)
    assert config.exchange.url == "https://hub.example/edge-exchange/v1"
    service = config.services["hello"]
    assert service.ref_for("1.2.3") == "v1.2.3"
    assert service.dockerfile_for("arm64") == "Dockerfile.arm64"
    assert service.image_base == "hello"
    assert config.registries["icr"].node_credentials() is None
    assert config.slack.api_url == "https://slack.com/api/"


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("slack.bot_token", "xoxb-123-literal", "slack.bot_token: a secret must be a reference"),
        ("registries.icr.push_password", "hunter2", "registries.icr.push_password: a secret must be a reference"),
        ("exchange.password", "vault:secret/data/x", "the #key is missing"),
        ("exchange.url", "hub.example/v1", "exchange.url must be the Exchange base URL"),
        ("registries.icr.host", "https://us.icr.io", "host[:port] only"),
        ("registries.icr.kind", "quay", "kind must be one of"),
        ("services.hello.arches", ["x86_64"], "'x86_64' is not an Open Horizon arch"),
        ("services.hello.ref", "main", "must contain {version}"),
        ("services.hello.horizon_dir", "../etc", "must be a path inside the source repository"),
        ("services.hello.colour", "blue", "unknown key(s) colour in [services.hello]"),
        ("registries.icr.pull_username", "reader", "set both pull_username and pull_password"),
        ("signing", None, "[signing] is missing"),
        ("registries.icr.reuse_push_credentials_for_nodes", "flase", "must be true or false (without quotes)"),
        ("registries.icr.reuse_push_credentials_for_nodes", "false", "must be true or false (without quotes)"),
    ],
)
def test_mistakes_are_named(path: str, value: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(path, value))
    assert fragment in str(info.value)
    if isinstance(value, str) and value in ("xoxb-123-literal", "hunter2"):
        assert value not in str(info.value)


def test_settings_from_table_then_env() -> None:
    data = _with("settings", {"worker_ttl": 5, "retry_backoff": 0.5})
    config = parse_config(data, environ={"EDGEBOT_WORKER_TTL": "7"})
    assert config.settings.worker_ttl == 7
    assert config.settings.retry_backoff == 0.5
    with pytest.raises(ConfigError, match="unknown setting 'worker_tll'"):
        parse_config(_with("settings", {"worker_tll": 5}))


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"rollout_auto_rollback": "flase"}, "setting 'rollout_auto_rollback' must be a boolean (true or false, without "
                                         "quotes), got 'flase'"),
    ({"rollout_auto_rollback": "false"}, "setting 'rollout_auto_rollback' must be a boolean"),
    ({"worker_ttl": "5"}, "setting 'worker_ttl' must be a number (an int, without quotes)"),
    ({"worker_ttl": True}, "setting 'worker_ttl' must be a number"),
    ({"worker_ttl": 2.5}, "setting 'worker_ttl' must be a whole number"),
    ({"log_format": 3}, "setting 'log_format' must be a string"),
])
def test_settings_in_the_file_are_strictly_typed(settings: dict[str, Any], fragment: str) -> None:
    """TOML has types: ``"flase"`` used to read as False (auto-rollback silently off)."""
    with pytest.raises(ConfigError) as info:
        parse_config(_with("settings", settings))
    assert fragment in str(info.value)


def test_every_settings_mistake_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with("settings", {"rollout_auto_rollback": "flase", "worker_tll": 5, "worker_ttl": "x"}))
    text = str(info.value)
    assert "'rollout_auto_rollback' must be a boolean" in text and "unknown setting 'worker_tll'" in text
    assert "'worker_ttl' must be a number" in text


@pytest.mark.parametrize(("env", "value"), [("on", True), ("0", False), ("False", False), ("YES", True)])
def test_boolean_settings_from_the_environment(env: str, value: bool) -> None:
    config = parse_config(_with("settings", {}), environ={"EDGEBOT_ROLLOUT_AUTO_ROLLBACK": env})
    assert config.settings.rollout_auto_rollback is value


def test_an_unreadable_boolean_in_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="EDGEBOT_ROLLOUT_AUTO_ROLLBACK must be a boolean"):
        parse_config(_with("settings", {}), environ={"EDGEBOT_ROLLOUT_AUTO_ROLLBACK": "flase"})


def test_secret_values_never_print(tmp_path: Any) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("s3cr3t-value\n")
    resolver = SecretResolver(environ={"TOKEN": "env-s3cr3t"})
    from_file = resolver.resolve(SecretRef.parse(f"file:{secret_file}", where="x"))
    from_env = resolver.resolve(SecretRef.parse("env:TOKEN", where="x"))
    assert from_file.reveal() == "s3cr3t-value" and from_env.reveal() == "env-s3cr3t"
    for secret in (from_file, from_env):
        assert "s3cr3t" not in repr(secret) and "s3cr3t" not in f"{secret}" and "s3cr3t" not in str([secret])
    assert isinstance(from_env, Secret)


def test_unresolvable_references_name_the_reference_only() -> None:
    resolver = SecretResolver(environ={})
    with pytest.raises(SecretUnavailable, match="env:MISSING: environment variable MISSING is not set"):
        resolver.resolve(SecretRef.parse("env:MISSING", where="x"))
    with pytest.raises(SecretUnavailable, match="no Vault access configured"):
        resolver.resolve(SecretRef.parse("vault:secret/data/a#b", where="x"))


def test_the_documented_example_config_loads() -> None:
    from pathlib import Path

    from edgebot.config import load_config

    config = load_config(Path(__file__).parent.parent / "examples" / "edgebot.toml")
    assert set(config.registries) == {"icr", "ocp"}
    assert config.services["hello"].arches == ("amd64", "arm64")
    assert access_problem(config) is None, "the bot starts with the example's [access]"
    assert config.access.holders("cancel", org="acme", service="hello") == config.access.release_managers != ()


def test_the_kubernetes_config_names_who_may_publish() -> None:
    import tomllib
    from pathlib import Path

    import yaml

    docs = yaml.safe_load_all((Path(__file__).parent.parent / "deploy" / "kubernetes" / "configmap.yaml").read_text())
    text = next(d for d in docs if d and d.get("kind") == "ConfigMap")["data"]["edgebot.toml"]
    config = parse_config(tomllib.loads(text), environ={})
    assert access_problem(config) is None and config.access.principals("publish", org="acme", service="hello")


def test_catalog_orgs() -> None:
    assert parse_config(BASE).services["hello"].allowed_orgs == ("acme",), "default: the service's own org only"
    service = parse_config(_with("services.hello.orgs", ["acme-staging", "acme"])).services["hello"]
    assert service.allowed_orgs == ("acme", "acme-staging")
    with pytest.raises(ConfigError, match="services.hello.orgs must be a list of Exchange org names"):
        parse_config(_with("services.hello.orgs", ["bad org"]))


def test_rollout_stages_and_the_one_stage_shorthand() -> None:
    from edgebot.config import RolloutTarget

    assert parse_config(BASE).services["hello"].rollout == ()
    staged = parse_config(_with("services.hello.rollout", [
        {"stage": "canary", "policies": ["hello-canary"], "healthy_share": 1, "timeout": 600},
        {"stage": "fleet", "policies": ["hello-fleet"], "patterns": ["gateway"], "healthy_share": 0.95},
    ])).services["hello"].rollout
    assert [(s.name, s.targets, s.healthy_share, s.timeout) for s in staged] == [
        ("canary", (RolloutTarget("policy", "hello-canary"),), 1.0, 600.0),
        ("fleet", (RolloutTarget("policy", "hello-fleet"), RolloutTarget("pattern", "gateway")), 0.95, None)]
    short = parse_config(_with("services.hello.patterns", ["gateway"])).services["hello"].rollout
    assert [(s.name, s.targets) for s in short] == [("fleet", (RolloutTarget("pattern", "gateway"),))]


@pytest.mark.parametrize(("stages", "fragment"), [
    ([{"stage": "canary"}], "names no policies and no patterns"),
    ([{"stage": "a", "policies": ["p"]}, {"stage": "a", "policies": ["q"]}], "unique lower-case name"),
    ([{"stage": "a", "policies": ["p"]}, {"stage": "b", "policies": ["p"]}], "policy p is already in an earlier"),
    ([{"stage": "a", "policies": ["acme/p"]}], "without the org"),
    ([{"stage": "a", "policies": ["p"], "healthy_share": 1.5}], "healthy_share must be a number in (0, 1]"),
    ([{"stage": "a", "policies": ["p"], "timeout": 0}], "timeout must be a positive number"),
    ([{"stage": "a", "policies": ["p"], "policy": ["q"]}], "unknown key(s) policy"),
    ({"stage": "a"}, "must be an array of tables"),
])
def test_rollout_mistakes_are_named(stages: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with("services.hello.rollout", stages))
    assert fragment in str(info.value)


# -- [services.X.build] (edgebot.build_inputs) -----------------------------------------------------------------------

def test_build_table_defaults_to_the_engine_as_before() -> None:
    build = parse_config(BASE).services["hello"].build
    assert (build.builder, build.args, build.secrets, build.pull, build.cache) == ("engine", (), (), False, False)


def test_build_table_with_buildah() -> None:
    config = parse_config(_with("services.hello.build", {
        "builder": "buildah", "pull": True, "cache": True,
        "args": {"VERSION": "{version}", "TARGET": "linux/{arch}", "REV": "{commit}", "MODE": "release"},
        "secrets": {"npmrc": "vault:secret/data/edgebot/build/npm#npmrc"}}))
    build = config.services["hello"].build
    assert build.build_args(version="1.2.3", arch="arm64", commit="abc") == {
        "VERSION": "1.2.3", "TARGET": "linux/arm64", "REV": "abc", "MODE": "release"}
    assert build.secrets == (("npmrc", SecretRef("vault", "secret/data/edgebot/build/npm#npmrc")),)
    assert build.cache_repository("reg:5000/edge/hello_arm64") == "reg:5000/edge/hello_arm64-cache"
    assert build.pull is True


def test_build_secrets_on_the_engine_builder_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with("services.hello.build", {"secrets": {"tok": "env:TOKEN"}}))
    message = str(info.value)
    assert "services.hello.build.secrets needs builder = \"buildah\"" in message
    assert "Set builder = \"buildah\" in [services.hello.build]" in message


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        ({"builder": "kaniko"}, "builder must be one of 'engine', 'buildah'"),
        ({"builder": "buildah", "secrets": {"tok": "s3cr3t-literal"}}, "a secret must be a reference"),
        ({"builder": "buildah", "secrets": {"bad id!": "env:X"}}, "'bad id!' is not a secret id"),
        ({"args": {"V": "{tag}"}}, "{tag} is not a placeholder; known: {version}, {arch}, {commit}"),
        ({"args": {"1X": "a"}}, "'1X' is not a build arg name"),
        ({"args": {"X": 1}}, "services.hello.build.args.X must be a string"),
        ({"pull": "yes"}, "pull must be true or false"),
        ({"cache": True}, "cache (a registry-backed layer cache) needs builder = \"buildah\""),
        ({"builder": "buildah", "cache": "reg:5000/edge/x:tag@sha256:0"}, "cache must be true, false or a registry"),
        ({"builder": "buildah", "squash": True}, "unknown key(s) squash in [services.hello.build]"),
    ],
)
def test_build_table_mistakes_are_named(build: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with("services.hello.build", build))
    assert fragment in str(info.value)
    assert "s3cr3t-literal" not in str(info.value)


def test_a_smoke_run_needs_the_engine_builder() -> None:
    """buildah builds never reach the Docker Engine, where the smoke run runs: refused at load, with the fix."""
    data = copy.deepcopy(BASE)
    data["services"]["hello"]["build"] = {"builder": "buildah"}
    data["services"]["hello"]["smoke"] = {"command": ["/bin/true"]}
    with pytest.raises(ConfigError, match="needs the Engine builder"):
        parse_config(data)
