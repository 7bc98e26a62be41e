"""The launchers of the real parts: each starts for real, answers, keeps what it must, and cleans up after itself.

The centrepiece is the CA step of the IEAM private-registry guide: Docker skips certificate checks for registries
on 127.0.0.0/8, so a registry in a network namespace of its own, reached by a name in /etc/hosts, shows that a push
fails with x509 until the CA is in ``/etc/docker/certs.d/<host:port>/ca.crt``, and succeeds after.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sandbox.pki import TestCA
from sandbox.processes import (
    CERTS_D,
    HOSTS,
    DockerDaemon,
    NetNamespace,
    RedisServer,
    Registry,
    StartFailed,
    add_commit,
    busybox_path,
    trust_registry_ca,
    untrust_registry_ca,
)
from workers.images import PushFailed, build_image, push_image

NS_HOSTNAME = "edgebot-reg.test"
NS_PORT = 5443
NS_ADDRESS = f"{NS_HOSTNAME}:{NS_PORT}"
NS_HOST_IP, NS_IP = "10.213.7.1", "10.213.7.2"


def _git(*args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, env=env).stdout.strip()


def _poll(fn: Callable[[], object], *, timeout: float, interval: float = 0.5) -> object:
    """The first truthy value of ``fn`` within ``timeout``, else its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# -- Redis --------------------------------------------------------------------------------------------------------


def test_redis_with_aof_keeps_a_key_across_a_crash_and_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True, password="redis-pw-77")
    with server:
        port, url = server.port, server.url
        with redis.Redis.from_url(url) as conn:
            conn.set("release:r-1", "building")
        server.kill()  # SIGKILL: no shutdown save, only the AOF
        assert server.proc is not None and server.proc.poll() is not None
        server.restart()
        assert server.port == port and server.url == url
        with redis.Redis.from_url(url) as conn:
            assert conn.get("release:r-1") == b"building"
        no_retry = Retry(NoBackoff(), 0)  # redis-py retries with backoff by default; the answer is final here
        with redis.Redis(port=port, retry=no_retry) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        assert any((tmp_path / "redis").glob("appendonly*"))
        assert "redis-pw-77" not in repr(server)
        proc = server.proc
    assert proc is not None and proc.poll() is not None  # stopped on exit
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_redis_that_cannot_start_says_why(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: redis cannot bind it, and nothing answers there
        with pytest.raises(StartFailed) as failed:
            RedisServer(tmp_path / "redis", port=taken.getsockname()[1]).start()
    assert "exited" in str(failed.value) and "Address already in use" in str(failed.value)


# -- Docker Engine ------------------------------------------------------------------------------------------------


def test_private_dockerd_answers_builds_from_scratch_and_runs(docker_daemon: DockerDaemon, tmp_path: Path) -> None:
    client = docker_daemon.client()
    try:
        assert client.version()["ApiVersion"]
        assert client.info()["DockerRootDir"] == str(docker_daemon.workdir / "data")  # its own, not the host's
        context = tmp_path / "ctx"
        context.mkdir()
        shutil.copy(busybox_path(), context / "busybox")
        (context / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "sh", "-c", "echo built-by-run > /stamp"]\n'
        )
        out = list(client.api.build(path=str(context), tag="edgebot-test/scratch:1", decode=True, rm=True,
                                    pull=False))
        assert not [entry for entry in out if "error" in entry], out
        logs = client.containers.run("edgebot-test/scratch:1", ["/bin/busybox", "cat", "/stamp"],
                                     network_mode="none", remove=True)
        assert logs.strip() == b"built-by-run"
    finally:
        client.close()


def test_dockerd_with_too_long_a_socket_path_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(StartFailed, match="socket path too long"):
        DockerDaemon(tmp_path / ("x" * 120)).start()


# -- registry -----------------------------------------------------------------------------------------------------


def test_registry_refuses_anonymous_and_wrong_password_and_accepts_users(registry: Registry,
                                                                          registry_users: dict[str, str]) -> None:
    base = f"https://127.0.0.1:{registry.port}/v2/"
    ca = ssl.create_default_context(cafile=str(registry.ca_path))
    anonymous = httpx.get(base, verify=ca)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert httpx.get(base, verify=ca, auth=("pusher", "push-secret-wrong")).status_code == 401
    for user, password in registry_users.items():
        assert httpx.get(base, verify=ca, auth=(user, password)).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # TLS really is from the test CA
        httpx.get(base, verify=ssl.create_default_context())
    assert "push-secret-1" not in repr(registry)


def test_netns_start_removes_leftovers_of_a_crashed_run(tmp_path: Path) -> None:
    crashed = NetNamespace("edgebotlo", host_ip="10.213.11.1", ns_ip="10.213.11.2", hostname="edgebot-lo.test")
    crashed.start()  # never stopped, as if the run had been killed
    try:
        again = NetNamespace("edgebotlo", host_ip="10.213.11.1", ns_ip="10.213.11.2", hostname="edgebot-lo.test")
        with again:
            assert again.exists()
            assert HOSTS.read_text().count(again.tag) == 1
            answer = subprocess.run([*again.exec_prefix, "ip", "-o", "addr", "show", "dev", again.peer],
                                    capture_output=True, text=True, check=True).stdout
            assert "10.213.11.2/30" in answer
        assert not again.exists()
        assert again.tag not in HOSTS.read_text() and "edgebot-lo.test" not in HOSTS.read_text()
        assert subprocess.run(["ip", "link", "show", again.veth], capture_output=True).returncode != 0
    finally:
        crashed._cleanup()


def test_push_needs_the_ca_in_certs_d_for_a_registry_in_a_namespace(docker_daemon: DockerDaemon,
                                                                     tmp_path: Path) -> None:
    untrust_registry_ca(NS_ADDRESS)
    ca = TestCA.create("edgebot private CA (netns)")
    users = {"pusher": "ns-push-secret"}
    repository = f"{NS_ADDRESS}/edge/ca-step"
    # the same address for this name as every other test uses (tests/test_registry_trust.py): dockerd caches
    # /etc/hosts for up to 5 s, and a stale address whose veth is gone would be routed off the machine
    netns = NetNamespace("edgebotrp", host_ip=NS_HOST_IP, ns_ip=NS_IP, hostname=NS_HOSTNAME)
    client = docker_daemon.client()
    try:
        context = tmp_path / "ctx"
        context.mkdir()
        (context / "Dockerfile").write_text('FROM amd64/busybox:1.36\nCMD ["/bin/busybox", "true"]\n')
        build_image(client, context_dir=context, dockerfile="Dockerfile", tag=f"{repository}:1", arch="amd64")
        with netns, Registry(tmp_path / "reg", ca, users=users, host=netns.ns_ip, port=NS_PORT, netns=netns,
                             hostname=NS_HOSTNAME) as reg:
            assert f"{netns.ns_ip} {NS_HOSTNAME}" in HOSTS.read_text()

            messages: list[str] = []

            def refused_by_tls() -> bool:
                with pytest.raises(PushFailed) as refused:
                    push_image(client, repository=repository, tag="1", username="pusher", password=users["pusher"])
                messages.append(str(refused.value))
                return "x509" in messages[-1]

            # dockerd's resolver re-reads /etc/hosts at most every 5 s: until it does, the name does not resolve
            # (or still points where an earlier test put it). Wait for the TLS answer, which is the one that counts.
            _poll(refused_by_tls, timeout=40)
            message = messages[-1]
            assert "x509: certificate signed by unknown authority" in message
            assert users["pusher"] not in message

            ca_file = trust_registry_ca(NS_ADDRESS, ca.cert_pem)
            assert ca_file == CERTS_D / NS_ADDRESS / "ca.crt" and ca_file.read_bytes() == ca.cert_pem
            digest = push_image(client, repository=repository, tag="1", username="pusher", password=users["pusher"])
            got, manifest = reg.manifest("edge/ca-step", "1")
            assert got == digest
            assert reg.config_blob("edge/ca-step", manifest)["architecture"] == "amd64"
    finally:
        untrust_registry_ca(NS_ADDRESS)
        client.close()
    assert not netns.exists()
    assert netns.tag not in HOSTS.read_text() and NS_HOSTNAME not in HOSTS.read_text()
    assert subprocess.run(["ip", "link", "show", netns.veth], capture_output=True).returncode != 0
    assert not (CERTS_D / NS_ADDRESS).exists()


# -- git and busybox ----------------------------------------------------------------------------------------------


def test_git_source_is_a_bare_repo_with_an_annotated_tag_that_add_commit_moves(
        git_source: Callable[..., Path]) -> None:
    origin = git_source({"horizon/hzn.json": "{}", "bin/blob": b"\x00\x01"}, "v1.0.0")
    assert _git("-C", str(origin), "rev-parse", "--is-bare-repository") == "true"
    assert _git("-C", str(origin), "cat-file", "-t", "v1.0.0") == "tag"  # annotated, as hzn projects tag
    first = _git("-C", str(origin), "rev-parse", "v1.0.0^{commit}")
    assert _git("-C", str(origin), "show", "main:bin/blob") == "\x00\x01"
    second = add_commit(origin, {"horizon/hzn.json": '{"HZN_ORG_ID": "acme"}'}, tag="v1.0.1")
    assert second != first
    assert _git("-C", str(origin), "rev-parse", "main", "v1.0.1^{commit}").split() == [second, second]
    assert _git("-C", str(origin), "show", "v1.0.1:horizon/hzn.json") == '{"HZN_ORG_ID": "acme"}'
    assert _git("-C", str(origin), "rev-parse", "v1.0.0^{commit}") == first


def test_hello_repo_holds_the_sample_service_at_v1(hello_repo: Path) -> None:
    names = _git("-C", str(hello_repo), "ls-tree", "-r", "--name-only", "v1.0.0").split()
    assert {"Dockerfile.amd64", "Dockerfile.arm64", "horizon/service.definition.json", "horizon/hzn.json",
            "index.html"} <= set(names)


def test_busybox_is_the_static_one() -> None:
    path = Path(busybox_path())
    assert path.read_bytes()[:4] == b"\x7fELF"
    out = subprocess.run(["file", "-L", str(path)], capture_output=True, text=True).stdout
    assert "statically linked" in out or "static-pie" in out


def test_stack_refuses_a_second_process_under_a_running_ones_name(tmp_path: Path) -> None:
    """Started twice under one name, the first process would be forgotten and outlive the stack (the bench once
    left a bot running that way): the stack refuses and names it."""
    from sandbox.stack import Stack

    stack = Stack(tmp_path)
    sleeper = subprocess.Popen(["sleep", "60"])
    stack.processes["bot"] = sleeper
    try:
        with pytest.raises(RuntimeError, match=rf"bot is already running \(pid {sleeper.pid}\): stop it first"):
            stack.start_bot()
        assert stack.processes["bot"] is sleeper
    finally:
        sleeper.kill()
        sleeper.wait()
