"""End to end with every worker secret in a real OpenBao: signing through Transit, credentials rotated mid-run
(registry htpasswd, Exchange password), a wrong secret, a missing key, Vault stopped mid-run, and a redaction scan of
everything a release leaves behind (Slack calls, logs, RQ jobs, every Redis key and value).

The workers log in with two AppRoles bound to the policies shipped in ``deploy/vault/`` and cache values for an hour,
so a rotation is only noticed because the registry or the Exchange refuses the cached value (never by the cache
expiring). Tests run in file order and share one stack: each leaves Vault, the registry and the Exchange agreeing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import secrets
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from edgebot import messages
from edgebot.release import Release
from sandbox.bao import BaoServer
from sandbox.processes import add_commit
from sandbox.stack import (
    BOT_TOKEN,
    CHANNEL_ID,
    EXCHANGE_PASSWORD,
    EXCHANGE_USER,
    ORG,
    PULL_PASSWORD,
    PULL_USER,
    PUSH_PASSWORD,
    PUSH_USER,
    SIGNING_SECRET,
    Stack,
    wait_until,
)
from tests.openssl_check import openssl_says

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TRANSIT_KEY = "edgebot-signing"
PUSH_REF = "vault:secret/data/edgebot/build#push_password"
EXCHANGE_REF = "vault:secret/data/edgebot/publish#exchange_password"
VERSIONS = ("1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.0.5")


class VaultStack:
    """The sandbox stack, its bot on env references, its workers on Vault (AppRoles, Transit)."""

    def __init__(self, stack: Stack, bao: BaoServer, roles: dict[str, tuple[str, str]], config_path: Path) -> None:
        self.stack, self.bao, self.roles, self.config_path = stack, bao, roles, config_path
        self.push_password = PUSH_PASSWORD
        self.exchange_password = EXCHANGE_PASSWORD
        self.retired: list[str] = []  # every value a secret ever had in this module: none may leak either

    def set_push_password(self, password: str, vault: dict[str, str] | None = None) -> None:
        """The registry's password for the push user becomes ``password``; Vault gets ``vault`` (default: the same
        value under the key the config references)."""
        assert self.stack.registry is not None
        self.retired.append(self.push_password)
        self.stack.registry.set_password(PUSH_USER, password)
        self.bao.put_secret("edgebot/build", {"push_password": password} if vault is None else vault)
        self.push_password = password

    def set_exchange_password(self, password: str) -> None:
        self.retired.append(self.exchange_password)
        self.stack.exchange.add_user(ORG, EXCHANGE_USER, password)
        self.bao.put_secret("edgebot/publish", {"exchange_password": password, "pull_password": PULL_PASSWORD})
        self.exchange_password = password


@pytest.fixture(scope="module")
def vs(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any) -> Iterator[VaultStack]:
    workdir = tmp_path_factory.mktemp("vault-stack")
    # the stack's own registry: its htpasswd is rotated here, which other modules' registry must not see
    with Stack(workdir, docker=docker_daemon, versions=VERSIONS, settings={"duplicate_window": 2}) as stack, \
            BaoServer(workdir / "bao") as bao:
        stack.stop_process("worker-publish")
        stack.stop_process("worker-build-amd64")
        bao.put_secret("edgebot/build", {"push_password": PUSH_PASSWORD})
        bao.put_secret("edgebot/publish", {"exchange_password": EXCHANGE_PASSWORD, "pull_password": PULL_PASSWORD})
        bao.transit_key(TRANSIT_KEY)
        roles = {}
        for role in ("build", "publish"):
            bao.write_policy(f"edgebot-{role}", (ROOT / "deploy" / "vault" / f"edgebot-{role}.hcl").read_text())
            roles[role] = bao.approle(f"edgebot-{role}", [f"edgebot-{role}"])
        config = stack.config_path.read_text()
        for old, new in (
            (f'private_key = "file:{stack.key_file}"', f'transit_key = "{TRANSIT_KEY}"'),
            ("env:EDGEBOT_EXCHANGE_PASSWORD", EXCHANGE_REF),
            ("env:EDGEBOT_REGISTRY_PUSH_PASSWORD", PUSH_REF),
            ("env:EDGEBOT_REGISTRY_PULL_PASSWORD", "vault:secret/data/edgebot/publish#pull_password"),
        ):
            assert old in config
            config = config.replace(old, new)
        config += (f'\n[vault]\nurl = "{bao.url}"\nauth = "approle"\nrole_id = "env:EDGEBOT_VAULT_ROLE_ID"\n'
                   'secret_id = "env:EDGEBOT_VAULT_SECRET_ID"\ncache_ttl = 3600\n')
        vault_config = workdir / "edgebot-vault.toml"
        vault_config.write_text(config)
        env = {k: v for k, v in stack.env().items() if k not in (
            "EDGEBOT_EXCHANGE_PASSWORD", "EDGEBOT_REGISTRY_PUSH_PASSWORD", "EDGEBOT_REGISTRY_PULL_PASSWORD")}
        for role, args in (("publish", ["--publish"]), ("build", ["--arch", "amd64"])):
            role_id, secret_id = roles[role]
            stack.start_worker(f"vault-{role}", *args, config=vault_config,
                               env={**env, "EDGEBOT_VAULT_ROLE_ID": role_id, "EDGEBOT_VAULT_SECRET_ID": secret_id})
        stack.wait_workers(2)
        yield VaultStack(stack, bao, roles, vault_config)


def _publish(stack: Stack, text: str, user_id: str) -> Release:
    before = set(stack.release_ids())
    response = stack.command(text, user_id=user_id)
    assert response.status_code == 200, response.text
    new = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="a new release record")
    assert len(new) == 1, response.json()
    release = stack.wait_final(new.pop())
    store = stack.store()
    wait_until(lambda: store.require(release.release_id).summary_ts, timeout=30, what="the summary")
    final = store.require(release.release_id)
    expected_root = messages.root_message(final).text
    wait_until(lambda: stack.slack.thread(CHANNEL_ID, final.message_ts)[0]["text"] == expected_root, timeout=30,
               what="the root message to show the final state")
    return final


def _log(vs: VaultStack, role: str) -> str:
    return vs.stack.log_tail(f"worker-vault-{role}", 100_000)


def _thread(stack: Stack, release: Release) -> str:
    return json.dumps(stack.slack.thread(CHANNEL_ID, release.message_ts))


def test_release_signed_by_vault_transit(vs: VaultStack, tmp_path: Path) -> None:
    stack = vs.stack
    release = _publish(stack, "publish hello 1.0.0 --registry local", "U0TRANSIT")
    assert release.state == "succeeded", (release.error, _log(vs, "publish"))

    service = stack.exchange.service(ORG, "hello_1.0.0_amd64")
    assert service is not None and service["deploymentSignature"] == release.results["amd64"].signature
    key = stack.exchange.keys(ORG, "hello_1.0.0_amd64")["edgebot.public.pem"]
    transit = vs.bao.client().secrets.transit.read_key(name=TRANSIT_KEY)["data"]
    assert key == transit["keys"]["1"]["public_key"], "the uploaded key is the Transit key's public half"
    assert not transit["exportable"]
    assert not service["deploymentSignature"].startswith("vault:")
    # the agent's check, by openssl: salt auto-detected; and the salt is the maximum, like hzn's
    assert openssl_says(tmp_path, key, service["deployment"], service["deploymentSignature"], "auto") == "Verified OK"
    assert openssl_says(tmp_path, key, service["deployment"], service["deploymentSignature"], "max") == "Verified OK"
    dockauths = stack.exchange.dockauths(ORG, "hello_1.0.0_amd64")
    assert [(d["username"], d["token"]) for d in dockauths] == [(PULL_USER, PULL_PASSWORD)]
    assert "refused the credentials" not in _log(vs, "build") + _log(vs, "publish")
    for role in ("build", "publish"):  # the worker logged in once at start; its work horses use that token
        assert _log(vs, role).count("logged in to Vault at") == 1, _log(vs, role)


def test_exchange_password_rotated_mid_run_is_read_again(vs: VaultStack) -> None:
    """An admin rotates the Exchange password (in the Exchange and in Vault) after the publish job read it and just
    before its first Exchange request: the Exchange answers 401, the worker forgets the cached secret, reads the new
    value from Vault and retries once. The registry password rotated before the release is read fresh by the job."""
    stack = vs.stack
    vs.set_push_password("push-rotated-" + secrets.token_hex(6))
    new_password = "exchange-rotated-" + secrets.token_hex(6)
    stack.exchange.before_next("GET", r"/orgs/acme/services/hello_1\.0\.1_amd64$",
                               lambda: vs.set_exchange_password(new_password))
    requests_before = len(stack.exchange.requests())

    release = _publish(stack, "publish hello 1.0.1 --registry local", "U0ROTATE")
    assert release.state == "succeeded", (release.error, _log(vs, "build"), _log(vs, "publish"))
    assert vs.exchange_password == new_password, "the rotation happened during the publish job"
    assert f"the Exchange refused the credentials of {ORG}/{EXCHANGE_USER}; reading {EXCHANGE_REF} again" \
        in _log(vs, "publish")
    statuses = [r["status"] for r in stack.exchange.requests()[requests_before:]]
    assert statuses[0] == 401 and 401 not in statuses[1:], statuses
    assert stack.exchange.service(ORG, "hello_1.0.1_amd64") is not None
    digest, _ = stack.registry.manifest("edge/hello_amd64", "1.0.1")  # type: ignore[union-attr]
    assert digest == release.results["amd64"].digest


def test_refused_push_reads_the_rotated_credential_again(vs: VaultStack, caplog: pytest.LogCaptureFixture) -> None:
    """The build step's push (``builders.push_with_fresh_credentials``) with a warm cache holding the old password,
    in-process against the same OpenBao (build AppRole), registry and Docker Engine the workers use."""
    from edgebot.config import load_config
    from workers.builders import push_with_fresh_credentials
    from workers.context import WorkerContext
    from workers.vault import build_resolver

    stack = vs.stack
    config = load_config(vs.config_path)
    role_id, secret_id = vs.roles["build"]
    ctx = WorkerContext(config, build_resolver(config, environ={"EDGEBOT_VAULT_ROLE_ID": role_id,
                                                                "EDGEBOT_VAULT_SECRET_ID": secret_id}))
    registry = config.registries["local"]
    assert ctx.push_credentials(registry)[1].reveal() == vs.push_password  # cached now (cache_ttl: an hour)
    vs.set_push_password("push-midrun-" + secrets.token_hex(6))
    assert ctx.push_credentials(registry)[1].reveal() != vs.push_password, "the worker still holds the old value"

    assert stack.docker is not None and stack.registry is not None
    client = stack.docker.client()
    repository = f"{registry.host}/edge/rotation"
    try:
        client.images.get("amd64/busybox:1.36").tag(repository, "1")
        with caplog.at_level(logging.WARNING, logger="workers.context"):
            digest = push_with_fresh_credentials(ctx, client, registry, repository, "1")
    finally:
        client.close()
    assert stack.registry.manifest("edge/rotation", "1")[0] == digest
    assert f"registry {registry.host} refused the credentials from {PUSH_REF}; reading them again and retrying " \
           "once" in caplog.text
    assert ctx.push_credentials(registry)[1].reveal() == vs.push_password
    assert vs.push_password not in caplog.text


def test_wrong_secret_fails_naming_the_reference(vs: VaultStack) -> None:
    stack = vs.stack
    wrong = "push-wrong-" + secrets.token_hex(6)
    vs.set_push_password("push-right-" + secrets.token_hex(6), vault={"push_password": wrong})
    try:
        release = _publish(stack, "publish hello 1.0.2 --registry local", "U0WRONG")
        assert release.state == "failed"
        assert release.error == (
            f"push of amd64 to {stack.registry.address} was refused: the registry did not accept the push "  # type: ignore[union-attr]
            f"credentials of `local` (user {PUSH_USER}, password from {PUSH_REF}). Check them, and that the user "
            "may push to the namespace.")
        assert f"password from {PUSH_REF}" in _thread(stack, release)
        assert wrong not in _thread(stack, release) + _log(vs, "build")
        assert stack.exchange.service(ORG, "hello_1.0.2_amd64") is None
    finally:
        vs.bao.put_secret("edgebot/build", {"push_password": vs.push_password})


def test_missing_key_in_a_secret_fails_naming_the_reference(vs: VaultStack) -> None:
    stack = vs.stack
    renamed = "push-renamed-" + secrets.token_hex(6)
    vs.set_push_password(renamed, vault={"push_passwd": renamed})  # the key was renamed by mistake
    try:
        release = _publish(stack, "publish hello 1.0.2 --registry local", "U0MISSING")
        assert release.state == "failed"
        assert release.error == (f"push: a secret could not be read: {PUSH_REF}: no key 'push_password' at "
                                 "secret/data/edgebot/build (keys there: push_passwd)")
        assert "no key 'push_password'" in _thread(stack, release)
        assert vs.push_password not in _thread(stack, release) + _log(vs, "build")
    finally:
        vs.bao.put_secret("edgebot/build", {"push_password": vs.push_password})


def test_transit_key_rotated_after_signing_publishes_nothing(vs: VaultStack) -> None:
    """A release signed with Transit key version 1 reaches publish after the key was rotated: the uploaded public key
    would be version 2's, which does not verify the signature, so agents would refuse the service. The publish step
    (run in-process with the publish AppRole, as its job would) stops before its first Exchange write."""
    from edgebot.config import load_config
    from edgebot.errors import StepFailed
    from edgebot.release import StageState
    from edgebot.seals import Sealer, intake_payload
    from edgebot.secrets import SecretResolver
    from workers import pipeline, progress, trust
    from workers.context import WorkerContext
    from workers.vault import build_resolver

    stack = vs.stack
    store = stack.store()
    signed = next(r for r in (store.require(i) for i in stack.release_ids())
                  if r.version == "1.0.1" and r.state == "succeeded")
    data = signed.to_dict()
    data.update(release_id=signed.release_id + "-rotated", state="publishing", key_name="edgebot.public.pem")
    publish_env = stack.env("publish")  # the publish role's Redis ACL user and password
    config = load_config(vs.config_path, environ=publish_env)
    assert config.seal_key is not None
    sealer = Sealer.from_secret(SecretResolver().resolve(config.seal_key).reveal())
    copy = Release.from_dict(data)
    copy.stages["publish"] = StageState()  # signed, not yet published
    copy.intake_seal, copy.source_seal = sealer.seal("intake", intake_payload(copy)), ""  # as the bot and prepare do
    trust.seal_source(sealer, copy)
    store.create(copy)
    vs.bao.rotate_transit_key(TRANSIT_KEY)

    role_id, secret_id = vs.roles["publish"]
    ctx = WorkerContext(config, build_resolver(config, environ={
        "EDGEBOT_VAULT_ROLE_ID": role_id, "EDGEBOT_VAULT_SECRET_ID": secret_id, "EDGEBOT_SLACK_BOT_TOKEN": BOT_TOKEN,
        "EDGEBOT_REDIS_PASSWORD": publish_env["EDGEBOT_REDIS_PASSWORD"]}))
    writes_before = [r for r in stack.exchange.requests() if r["method"] != "GET"]
    with pytest.raises(StepFailed) as refused:
        pipeline.publish(ctx, data["release_id"])
    progress.fail(ctx, data["release_id"], str(refused.value))
    ctx.reporter.flush()
    ctx.release_vault_login()
    assert str(refused.value) == (f"the signature of amd64 does not verify with the current public key "
                                  f"(vault-transit:transit/{TRANSIT_KEY}): the signing key was rotated after this "
                                  "release was signed. Nothing was published; publish again.")
    assert [r for r in stack.exchange.requests() if r["method"] != "GET"] == writes_before
    assert store.require(data["release_id"]).state == "failed"


READERS: dict[str, Any] = {
    "string": lambda conn, key: [conn.get(key)],
    "hash": lambda conn, key: [f + b"=" + v for f, v in conn.hgetall(key).items()],
    "list": lambda conn, key: conn.lrange(key, 0, -1),
    "set": lambda conn, key: list(conn.smembers(key)),
    "zset": lambda conn, key: conn.zrange(key, 0, -1),
    "stream": lambda conn, key: [f + b"=" + v for _, fields in conn.xrange(key) for f, v in fields.items()],
}
"""How each Redis type is read whole (values as bytes)."""
SCAN_PASSES = 5
"""Full SCANs at most: one more after any pass that found a key not read yet (a worker kept writing meanwhile)."""


def _redis_text(conn: redis.Redis) -> str:
    """Every key and every value, read by type; RQ's zlib-compressed job payloads decompressed.

    The workers stay alive during the scan, so a key can vanish between SCAN and TYPE (``none``: not a leak, there is
    nothing left to read) or be re-created with another type before it is read (read again). SCAN only promises the
    keys that exist for the whole iteration, so full passes repeat until one finds no key it had not read: every key
    that exists when the scan ends has been read. A type nobody expected still fails the test.
    """
    def text(value: Any) -> str:
        raw = value if isinstance(value, bytes) else str(value).encode()
        with contextlib.suppress(zlib.error):
            raw += b"\n" + zlib.decompress(raw)
        return raw.decode("utf-8", errors="replace")

    def read(key: bytes) -> list[Any] | None:
        """The key and its values, or None when it no longer exists."""
        for _ in range(3):
            kind = conn.type(key).decode()
            if kind == "none":
                return None
            if kind not in READERS:
                raise AssertionError(f"unexpected Redis type {kind} for {key!r}")
            try:
                return [key, *READERS[kind](conn, key)]
            except redis.ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
        raise AssertionError(f"{key!r} kept changing its type while it was read")

    parts: list[str] = []
    seen: set[bytes] = set()
    for _ in range(SCAN_PASSES):
        new = [key for key in conn.scan_iter(count=1000) if key not in seen]
        if not new:
            return "\n".join(parts)
        for key in new:
            seen.add(key)
            parts += [text(value) for value in read(key) or [] if value is not None]  # None: gone since TYPE
    raise AssertionError(f"Redis still had keys the scan had not read after {SCAN_PASSES} passes")


def test_redaction_nothing_a_release_leaves_contains_a_secret(vs: VaultStack) -> None:
    stack = vs.stack
    vs.set_push_password("push-redact-" + secrets.token_hex(8))
    vs.set_exchange_password("exchange-redact-" + secrets.token_hex(8))
    release = _publish(stack, "publish hello 1.0.3 --registry local", "U0REDACT")
    assert release.state == "succeeded", release.error

    conn = stack.redis()
    job_keys = [k for k in conn.scan_iter(match=b"rq:job:*")]
    assert any(release.release_id.encode() in k for k in job_keys), "the release's RQ jobs are still in Redis"
    places = {
        "slack calls": json.dumps(stack.slack.exchanges(), default=str),
        "logs": "\n".join(p.read_text(errors="replace") for p in stack.workdir.glob("*.log")),
        "redis": _redis_text(conn),
    }
    assert "1.0.3" in places["slack calls"] and release.release_id in places["redis"]  # the scan sees real data
    values = [vs.push_password, vs.exchange_password, PULL_PASSWORD, BOT_TOKEN, SIGNING_SECRET, *vs.retired,
              *(part for role in vs.roles.values() for part in role)]
    values += [f"{PUSH_USER}:{vs.push_password}", f"{ORG}/{EXCHANGE_USER}:{vs.exchange_password}",
               f"{PULL_USER}:{PULL_PASSWORD}"]
    needles = {v: v for v in values}
    needles.update({f"base64 of {v[:4]}…": base64.b64encode(v.encode()).decode() for v in values})
    needles.update({f"base64url of {v[:4]}…": base64.urlsafe_b64encode(v.encode()).decode().rstrip("=")
                    for v in values})
    for where, text in places.items():
        for label, needle in needles.items():
            assert needle not in text, f"{label} leaked into {where}"
        assert not re.search(r"\b(?:hv)?[sbr]\.[A-Za-z0-9]{24,}\b", text), f"a Vault token leaked into {where}"
    assert "-----BEGIN RSA PRIVATE KEY-----" not in places["logs"] + places["redis"]
    for role in ("build", "publish"):  # still one login per worker after every job of this module
        assert _log(vs, role).count("logged in to Vault at") == 1


def test_vault_stopped_mid_run_fails_the_release_cleanly(vs: VaultStack) -> None:
    """Last: stops Vault while the build runs. The push needs the push credential (each RQ job is a fresh work horse,
    so it reads it then); Vault is unreachable, which is retried as transient, then the release fails with a message
    naming the reference and what is wrong with Vault, and nothing is pushed or published."""
    stack = vs.stack
    slow = "FROM amd64/busybox:1.36\nRUN [\"/bin/busybox\", \"sleep\", \"5\"]\nCMD [\"/bin/busybox\", \"true\"]\n"
    add_commit(stack.source_path, {"Dockerfile.amd64": slow}, tag="v1.0.9")
    before = set(stack.release_ids())
    stack.command("publish hello 1.0.9 --registry local", user_id="U0VAULTDOWN")
    (release_id,) = wait_until(lambda: set(stack.release_ids()) - before, timeout=10, what="the release")
    store = stack.store()
    wait_until(lambda: store.require(release_id).arch_step("build", "amd64").status == "running", timeout=60,
               what="the build to start")
    vs.bao.stop()

    release = stack.wait_final(release_id)
    assert release.state == "failed"
    assert release.error == (f"push: a secret could not be read: {PUSH_REF}: Vault at {vs.bao.url} is unreachable "
                             "(cannot reach it: connection refused)")
    wait_until(lambda: PUSH_REF in _thread(stack, store.require(release_id)), timeout=30,
               what="the thread to name the reference")
    assert vs.push_password not in _thread(stack, release) + _log(vs, "build")
    assert release.results["amd64"].image_id and not release.results["amd64"].digest
    assert stack.registry.tags("edge/hello_amd64").count("1.0.9") == 0  # type: ignore[union-attr]
    assert stack.exchange.service(ORG, "hello_1.0.9_amd64") is None
