"""A whole edgebot installation on one machine, from real parts and the two stand-ins.

Real: Redis, a private Docker Engine, a registry with htpasswd auth and TLS, git, `edgebot serve` behind gunicorn
and `edgebot worker` processes (real RQ workers). Stand-ins: the Slack Web API and the Horizon Exchange.
Used by the end-to-end tests, the benchmarks and `make demo`; production code never imports this module.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import redis

from edgebot import redis_acl
from edgebot.release import Release
from edgebot.store import ReleaseStore
from sandbox.base_images import seed_base_images
from sandbox.exchange import ExchangeStandIn
from sandbox.pki import TestCA
from sandbox.proc_base import free_port, wait_until
from sandbox.processes import DockerDaemon, RedisServer, Registry, make_git_source
from sandbox.sandbox_vault import SandboxVault
from sandbox.sentinel import RedisSentinelCluster
from sandbox.slack import SlackStandIn
from sandbox.slack_client import SlackPlatform

TEAM_ID = "T0EDGE"
CHANNEL_ID = "C0RELEASES"
CHANNEL_NAME = "releases"
REQUESTER = "U0REQUESTER"
APPROVER = "U0APPROVER"
ORG = "acme"
EXCHANGE_USER = "edgebot"
SIGNING_SECRET = "sandbox-signing-secret-0123456789"
BOT_TOKEN = "xoxb-sandbox-bot-token"
APP_TOKEN = "xapp-sandbox-app-token"
EXCHANGE_PASSWORD = "sandbox-exchange-pw"
PUSH_USER, PUSH_PASSWORD = "pusher", "push-secret-1"
PULL_USER, PULL_PASSWORD = "puller", "pull-secret-1"
FAST_RECOVERY = {
    "lease_ttl": 4.0,
    "lease_renew_interval": 0.5,
    "reaper_interval": 1.0,
    "maintenance_interval": 2,
    "scheduler_stale_after": 3.0,
    "redis_reconnect_for": 60.0,
}
"""Every lease, TTL and interval of crash recovery in seconds, for runs that kill workers (tests, the soak)."""
HELLO_DIR = Path(__file__).resolve().parent.parent / "examples" / "hello"
ENV_REFS = {
    "bot_token": "env:EDGEBOT_SLACK_BOT_TOKEN",
    "signing_secret": "env:EDGEBOT_SLACK_SIGNING_SECRET",
    "app_token": "env:EDGEBOT_SLACK_APP_TOKEN",
    "exchange_password": "env:EDGEBOT_EXCHANGE_PASSWORD",
    "push_password": "env:EDGEBOT_REGISTRY_PUSH_PASSWORD",
    "pull_password": "env:EDGEBOT_REGISTRY_PULL_PASSWORD",
}
"""The config's secret references without Vault (the signing key is a file: reference to the stack's key file)."""
REDIS_USERNAME_ENV, REDIS_PASSWORD_ENV = "EDGEBOT_REDIS_USERNAME", "EDGEBOT_REDIS_PASSWORD"
BUILD_ABSENT_REFS = {"signing_key": "env:EDGEBOT_SIGNING_KEY", "seal_key": "env:EDGEBOT_SEAL_KEY"}
"""The build role's config names the signing and seal keys by references its environment never resolves."""
NOT_FOR_BUILD = ("EDGEBOT_SLACK_BOT_TOKEN", "EDGEBOT_SLACK_SIGNING_SECRET", "EDGEBOT_SLACK_APP_TOKEN",
                 "EDGEBOT_EXCHANGE_PASSWORD", "EDGEBOT_REGISTRY_PULL_PASSWORD", "EDGEBOT_SIGNING_KEY",
                 "EDGEBOT_SEAL_KEY")
"""Secrets a build worker never gets: it reports through Redis (no Slack), never publishes or signs."""
SECRET_ENV = ("EDGEBOT_SLACK_BOT_TOKEN", "EDGEBOT_SLACK_SIGNING_SECRET", "EDGEBOT_SLACK_APP_TOKEN",
              "EDGEBOT_EXCHANGE_PASSWORD", "EDGEBOT_REGISTRY_PUSH_PASSWORD", "EDGEBOT_REGISTRY_PULL_PASSWORD")
__all__ = ["Stack", "free_port", "wait_until", "write_config", "hello_files"]


def hello_files(version: str = "1.0.0") -> dict[str, bytes | str]:
    """The sample service's files, as its git repository holds them."""
    files: dict[str, bytes | str] = {}
    for path in sorted(HELLO_DIR.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(HELLO_DIR))] = path.read_bytes()
    return files


def write_config(path: Path, *, redis_url: str, slack_api_url: str, exchange_url: str, registry_address: str,
                 docker_url: str, source: str, arches: list[str], key_file: Path, workdir: Path,
                 settings: dict[str, Any] | None = None, extra_services: dict[str, list[str]] | None = None,
                 extra_toml: str = "", registry_ca: str = "", secret_refs: dict[str, str] | None = None,
                 redis_password_ref: str = "") -> Path:
    """A complete edgebot.toml for the sandbox. Secrets are references to env vars and files, like production;
    ``secret_refs`` replaces some of them (keys of :data:`ENV_REFS` and ``signing_key``), e.g. by vault: ones."""
    seal_key = workdir / "seal.key"  # held by the bot and the publish workers (edgebot.seals)
    if not seal_key.exists():
        seal_key.write_text(secrets.token_hex(32) + "\n")
        seal_key.chmod(0o600)
    refs = {**ENV_REFS, "signing_key": f"file:{key_file}", "seal_key": f"file:{seal_key}", **(secret_refs or {})}
    tunables = {
        "source_cache_dir": str(workdir / "cache"),
        "work_dir": str(workdir / "work"),
        "worker_ttl": 10,
        "maintenance_interval": 5,
        "step_retries": 2,
        "retry_backoff": 1.0,
        "channel_check_ttl": 60,
        "exchange_timeout": 10.0,
        # one sandbox workspace serves every test release in turn: Slack's real per-minute limits would only add waits
        "slack_update_per_minute": 1200.0,
        "slack_post_per_minute": 1200.0,
        **(settings or {}),
    }
    lines = [
        "# edgebot sandbox config (generated): every secret is a reference, none is in this file",
        "[slack]",
        f'bot_token = "{refs["bot_token"]}"',
        f'signing_secret = "{refs["signing_secret"]}"',
        f'app_token = "{refs["app_token"]}"  # Socket Mode only',
        f'api_url = "{slack_api_url}"',
        "",
        "[redis]",
        f'url = "{redis_url}"',
        # the ACL user is the process's role's, from EDGEBOT_REDIS_USERNAME (edgebot.redis_acl)
        *([f'password = "{redis_password_ref}"'] if redis_password_ref else []),
        "",
        "[exchange]",
        f'url = "{exchange_url}"',
        f'username = "{ORG}/{EXCHANGE_USER}"',
        f'password = "{refs["exchange_password"]}"',
        "",
        "[signing]",
        f'private_key = "{refs["signing_key"]}"',
        'key_name = "edgebot.public.pem"',
        "",
        "[docker]",
        f'url = "{docker_url}"',
        "",
        "[trust]",
        f'seal_key = "{refs["seal_key"]}"',
        "",
        "[registries.local]",
        'kind = "generic"',
        f'host = "{registry_address}"',
        'namespace = "edge"',
        f'push_username = "{PUSH_USER}"',
        f'push_password = "{refs["push_password"]}"',
        f'pull_username = "{PULL_USER}"',
        f'pull_password = "{refs["pull_password"]}"',
        *([f'ca_cert = "file:{registry_ca}"'] if registry_ca else []),
        "",
        "[services.hello]",
        f'source = "{source}"',
        f'org = "{ORG}"',
        "arches = [" + ", ".join(f'"{a}"' for a in arches) + "]",
        'image_base = "hello"',
        'ref = "v{version}"',
        "",
    ]
    for name, service_arches in (extra_services or {}).items():
        lines += [f"[services.{name}]", f'source = "{source}"', f'org = "{ORG}"',
                  "arches = [" + ", ".join(f'"{a}"' for a in service_arches) + "]", 'image_base = "hello"', ""]
    if not any(line.strip() == "[access]" for line in extra_toml.splitlines()):  # unless the caller says who
        lines += ["[access]  # the sandbox lets everyone in its channel publish and roll back, on purpose",
                  'publish = ["*"]', f'release_managers = ["{APPROVER}"]  # and cancel others\' releases', ""]
    lines += [
        "[settings]",
    ]
    for key, value in tunables.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n" + (f"\n{extra_toml}\n" if extra_toml else ""))
    return path


def worker_role(args: tuple[str, ...] | list[str]) -> str:
    """``edgebot worker --arch …`` alone is a build worker; with ``--publish`` it is a publish worker (which may
    build too: small installs and the sandbox's soak run both in one process)."""
    return redis_acl.BUILD if "--arch" in args and "--publish" not in args else redis_acl.PUBLISH


class Stack:
    """Start everything with :meth:`start`, stop everything with :meth:`stop` (also on errors and Ctrl-C)."""

    def __init__(self, workdir: Path, *, arches: tuple[str, ...] = ("amd64",), docker: DockerDaemon | None = None,
                 registry: Registry | None = None, redis_server: RedisServer | None = None,
                 settings: dict[str, Any] | None = None, versions: tuple[str, ...] = ("1.0.0",),
                 extra_services: dict[str, list[str]] | None = None, extra_toml: str = "",
                 vault: bool = False, sentinel: RedisSentinelCluster | None = None) -> None:
        """``vault=True``: the workers' secrets live in an OpenBao dev server and the config holds only ``vault:``
        references (plus ``file:`` ones for the bot's Slack secrets), see :mod:`sandbox.sandbox_vault`.
        ``sentinel``: Redis is that (started) cluster, the config's URL its ``redis+sentinel://`` one."""
        self.workdir = Path(workdir)
        self.use_vault = vault
        self.vault: SandboxVault | None = None
        self.arches = list(arches)
        self.settings = settings
        self.versions = versions
        self.extra_services = extra_services
        self.extra_toml = extra_toml
        self._own: list[Any] = []
        self.docker = docker
        self.registry = registry
        self.redis_server = redis_server
        self.sentinel = sentinel
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.exchange = ExchangeStandIn()
        self.slack = SlackStandIn(bot_token=BOT_TOKEN, team_id=TEAM_ID, app_token=APP_TOKEN)
        self.bot_url = ""
        self.config_path = self.workdir / "edgebot.toml"
        self.build_config_path = self.workdir / "edgebot-build.toml"
        """The build workers' config: the same, except that it names no signing or seal key it could read."""
        self.source_path = Path()
        self.key_file = Path()

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, *, workers: bool = True, bot: bool = True) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_parts()
            if bot:
                self.start_bot()
            if workers:
                self.start_worker("publish", "--publish")
                for arch in self.arches:
                    self.start_worker(f"build-{arch}", "--arch", arch)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_parts(self) -> None:
        if self.redis_server is None and self.sentinel is None:
            self.redis_server = RedisServer(self.workdir / "redis")
            self.redis_server.start()
            self._own.append(self.redis_server)
        if self.docker is None:
            self.docker = DockerDaemon(Path(f"/tmp/edgebot-dk-{os.getpid()}-{free_port()}"))
            self.docker.start()
            self._own.append(self.docker)
        client = self.docker.client()
        try:
            extra = [a for arches in (self.extra_services or {}).values() for a in arches]
            seed_base_images(client, tuple(sorted({*self.arches, *extra})))
        finally:
            client.close()
        if self.registry is None:
            ca = TestCA.create("edgebot sandbox CA")
            self.registry = Registry(self.workdir / "registry", ca,
                                     users={PUSH_USER: PUSH_PASSWORD, PULL_USER: PULL_PASSWORD})
            self.registry.start()
            self._own.append(self.registry)
        self.exchange.start()
        self.exchange.add_org(ORG)
        # node-details shows a standard user only the nodes it owns (exchange-api route/node/Details.scala): a real
        # edgebot deployment's identity is an org admin, and the rollout watch refuses anything less
        self.exchange.add_user(ORG, EXCHANGE_USER, EXCHANGE_PASSWORD, admin=True)
        self.slack.start()
        self.slack.add_channel(CHANNEL_ID, CHANNEL_NAME, bot_member=True)
        self.slack.add_user(REQUESTER, "requester")
        self.slack.add_user(APPROVER, "approver")
        source = make_git_source(self.workdir / "sources", hello_files(), tag="v" + self.versions[0])
        self.source_path = source
        for version in self.versions[1:]:
            from sandbox.processes import add_commit

            add_commit(source, {"index.html": f"hello {version}\n"}, tag="v" + version)
        from workers.signing import generate_private_key_pem

        key_file = self.key_file = self.workdir / "keys" / "service.private.key"
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(generate_private_key_pem(2048))
        key_file.chmod(0o600)
        assert self.docker is not None and self.registry is not None
        secret_refs, extra_toml = self._start_vault(key_file)
        for path, refs in ((self.config_path, secret_refs),
                           (self.build_config_path, {**(secret_refs or {}), **BUILD_ABSENT_REFS})):
            write_config(
                path, redis_url=self._redis_config_url(), slack_api_url=self.slack.api_url,
                exchange_url=self.exchange.url, registry_address=self.registry.address,
                docker_url=self.docker.base_url, source=str(source), arches=self.arches, key_file=key_file,
                workdir=self.workdir, settings=self.settings, extra_services=self.extra_services,
                extra_toml=extra_toml, registry_ca=str(self.registry.ca_path), secret_refs=refs,
                redis_password_ref=f"env:{REDIS_PASSWORD_ENV}",
            )

    def _redis_config_url(self) -> str:
        if self.sentinel is not None:
            return self.sentinel.url
        assert self.redis_server is not None
        return self.redis_server.plain_url

    def _start_vault(self, key_file: Path) -> tuple[dict[str, str] | None, str]:
        """With ``vault=True``: OpenBao started and filled; (the config's secret references, extra TOML)."""
        if not self.use_vault:
            return None, self.extra_toml
        self.vault = SandboxVault(self.workdir / "vault")
        self._own.append(self.vault)
        refs = self.vault.start(push_password=PUSH_PASSWORD, pull_password=PULL_PASSWORD,
                                exchange_password=EXCHANGE_PASSWORD, signing_key_pem=key_file.read_text(),
                                slack_secrets={"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET,
                                               "app_token": APP_TOKEN})
        key_file.unlink()  # the signing key now lives only in Vault
        return refs, "\n\n".join(part for part in (self.extra_toml, self.vault.config_table()) if part)

    def env(self, role: str = redis_acl.BOT) -> dict[str, str]:
        """The environment of a process of ``role`` (edgebot.redis_acl): its Redis ACL user and password, and only
        the secrets that role holds."""
        env = dict(os.environ)
        env.update({
            "EDGEBOT_CONFIG": str(self.config_path),
            "EDGEBOT_SLACK_BOT_TOKEN": BOT_TOKEN,
            "EDGEBOT_SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "EDGEBOT_SLACK_APP_TOKEN": APP_TOKEN,
            "EDGEBOT_EXCHANGE_PASSWORD": EXCHANGE_PASSWORD,
            "EDGEBOT_REGISTRY_PUSH_PASSWORD": PUSH_PASSWORD,
            "EDGEBOT_REGISTRY_PULL_PASSWORD": PULL_PASSWORD,
            "PYTHONUNBUFFERED": "1",
        })
        if self.use_vault:  # every secret comes from Vault or a file: none in the environment
            for name in SECRET_ENV:
                env.pop(name, None)
        return self.role_env(role, env)

    def role_env(self, role: str, env: dict[str, str]) -> dict[str, str]:
        """``env`` as a process of ``role`` gets it: that role's Redis credentials (whatever ``env`` said), and no
        secret the role does not hold."""
        server = self.sentinel or self.redis_server
        assert server is not None
        env = {**env, REDIS_USERNAME_ENV: redis_acl.username(role), REDIS_PASSWORD_ENV: server.role_password(role)}
        if role == redis_acl.BUILD:
            for name in NOT_FOR_BUILD:
                env.pop(name, None)
        return env

    def _spawn(self, name: str, args: list[str], *, role: str, config: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        running = self.processes.get(name)
        if running is not None and running.poll() is None:  # it would be forgotten, and outlive the stack
            raise RuntimeError(f"{name} is already running (pid {running.pid}): stop it first")
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        if config is None:
            config = self.build_config_path if role == redis_acl.BUILD else self.config_path
        proc = subprocess.Popen([sys.executable, "-m", "edgebot", "--config", str(config), *args], stdout=log,
                                stderr=subprocess.STDOUT, env=self.role_env(role, env or self.env(role)),
                                start_new_session=True)
        self.processes[name] = proc
        return proc

    def start_bot(self, workers: int = 1) -> str:
        port = free_port()
        self._spawn("bot", ["serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)], role=redis_acl.BOT)
        self.bot_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            self._check_alive("bot")
            try:
                return httpx.get(self.bot_url + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=60, what="edgebot serve to answer /readyz")
        return self.bot_url

    def start_socket_bot(self, name: str = "bot-socket") -> subprocess.Popen[bytes]:
        """``edgebot serve --socket-mode``: the bot connects out to the stand-in's Socket Mode endpoint."""
        link = self.slack.socket_mode()
        before = link.connects
        proc = self._spawn(name, ["serve", "--socket-mode"], role=redis_acl.BOT)
        wait_until(lambda: link.connects > before and link.connected(), timeout=60,
                   what="the bot to connect over Socket Mode")
        return proc

    def start_worker(self, name: str, *args: str, config: Path | None = None,
                     env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        if env is None and self.vault is not None:  # the AppRole of this worker's role, and only that one
            env = self.vault.worker_env(self.env(), args)
        return self._spawn(f"worker-{name}", ["worker", "--name", f"{name}-{os.getpid()}-{free_port()}", *args],
                           role=worker_role(args), config=config, env=env)

    def wait_workers(self, count: int, timeout: float = 60) -> None:
        from rq import Worker

        wait_until(lambda: len(Worker.all(connection=self.redis())) >= count, timeout=timeout,
                   what=f"{count} RQ workers to register")

    def _check_alive(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def horse_pids(self, name: str) -> list[int]:
        """The RQ work horses of worker ``name``: its children that run in a process group of their own (RQ's
        ``os.setpgrp()``), unlike its scheduler process, which stays in the worker's group."""
        proc = self.processes[name]
        horses = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ppid, pgid = int(fields[1]), int(fields[2])
            if ppid == proc.pid and pgid == int(entry.name):
                horses.append(int(entry.name))
        return horses

    def kill_worker(self, name: str, *, horse: bool) -> list[int]:
        """SIGKILL worker ``name`` (its process group: the worker and its scheduler) and, with ``horse``, its work
        horses too. Returns the horses' pids (alive unless ``horse``). The worker is forgotten: start a new one."""
        horses = self.horse_pids(name)
        if horse:
            for pid in horses:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.stop_process(name, signal.SIGKILL)
        return horses

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_process(name)
        self._record_acl_denials()
        for part in (self.slack, self.exchange):
            with contextlib.suppress(Exception):  # never started
                part.stop()
        for part in reversed(self._own):
            with contextlib.suppress(Exception):
                part.stop()
        self._own.clear()
        shutil.rmtree(self.workdir / "work", ignore_errors=True)

    def _record_acl_denials(self) -> None:
        """Write what Redis refused anyone (ACL LOG) to ``redis-acl-denials.log`` in the workdir: a role's rules that
        miss a key its process needs show up there (a test's attacker shows up too, on purpose)."""
        if self.redis_server is None or self.redis_server.proc is None:
            return
        with contextlib.suppress(Exception):
            entries = self.redis().execute_command("ACL", "LOG", "200")
            lines = []
            for entry in entries:
                fields = dict(zip(entry[::2], entry[1::2], strict=False)) if isinstance(entry, list) else entry
                text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                        for k, v in fields.items()}
                lines.append(" ".join(f"{k}={text.get(k)}" for k in ("username", "reason", "object", "context",
                                                                     "count")))
            if lines:
                (self.workdir / "redis-acl-denials.log").write_text("\n".join(lines) + "\n")

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving it ---------------------------------------------------------------------------------------------
    def platform(self) -> SlackPlatform:
        return SlackPlatform(self.bot_url + "/slack/events", SIGNING_SECRET, self.slack, team_id=TEAM_ID)

    def redis(self) -> redis.Redis:
        if self.sentinel is not None:  # the administrator, through the sentinels: it follows a failover
            return self.sentinel.admin_client()
        assert self.redis_server is not None
        return redis.Redis.from_url(self.redis_server.url)

    def store(self) -> ReleaseStore:
        from edgebot.config import load_config

        return ReleaseStore(self.redis(), load_config(self.config_path, environ=self.env()).settings)

    def command(self, text: str, *, user_id: str = REQUESTER, channel_id: str = CHANNEL_ID) -> httpx.Response:
        return self.platform().slash_command(text, user_id=user_id, channel_id=channel_id,
                                             channel_name=CHANNEL_NAME)

    def release_ids(self) -> list[str]:
        prefix = b"edgebot:release:"
        return sorted(k.decode()[len(prefix):] for k in self.redis().scan_iter(match=prefix + b"*"))

    def answer(self, text: str) -> str:
        """The text of the bot's answer to ``/edge TEXT``, or "" when it gave none (an error status, a timeout, a
        refused connection: not acknowledged)."""
        try:
            response = self.command(text)
        except httpx.HTTPError:
            return ""
        if response.status_code != 200:
            return ""
        try:
            return str(response.json().get("text", ""))
        except ValueError:
            return response.text

    def start_release(self, text: str, *, user_id: str = REQUESTER) -> str:
        """Send ``/edge TEXT`` (it must be acknowledged) and return the id of the one release record it created."""
        before = set(self.release_ids())
        response = self.command(text, user_id=user_id)
        assert response.status_code == 200, response.text
        new = wait_until(lambda: set(self.release_ids()) - before, timeout=10, what="a new release record")
        return str(new.pop())

    def finished(self, release_id: str, timeout: float = 300) -> Release:
        """The release once it ended and its summary is in the thread."""
        self.wait_final(release_id, timeout=timeout)
        store = self.store()
        wait_until(lambda: store.require(release_id).summary_ts, timeout=30, what="the summary")
        return store.require(release_id)

    def wait_final(self, release_id: str, timeout: float = 180) -> Release:
        store = self.store()

        def final() -> Release | None:
            release = store.get(release_id)
            return release if release is not None and release.is_final else None

        return wait_until(final, timeout=timeout, interval=0.25, what=f"release {release_id} to end")  # type: ignore[no-any-return]
