"""Shared fixtures: real Redis, a private Docker Engine, a TLS registry with htpasswd auth, git sources.

Everything a fixture starts is stopped at the end, also when tests fail. Session-scoped parts are shared; tests
that need a clean Redis use ``redis_conn`` (flushed before each test).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from sandbox.base_images import seed_base_images
from sandbox.pki import TestCA
from sandbox.processes import DockerDaemon, RedisServer, Registry, make_git_source

REGISTRY_USERS = {"pusher": "push-secret-1", "puller": "pull-secret-1"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_conn(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_server.url)
    conn.flushdb()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[DockerDaemon]:
    # unix socket paths must stay short: a directory under /tmp, not pytest's deep tmp tree
    with DockerDaemon(Path(f"/tmp/edgebot-dk-{os.getpid()}")) as daemon:
        client = daemon.client()
        seed_base_images(client, ("amd64", "arm64"))
        client.close()
        yield daemon


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    return TestCA.create("edgebot tests CA")


@pytest.fixture(scope="session")
def registry_users() -> dict[str, str]:
    return dict(REGISTRY_USERS)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Registry]:
    with Registry(tmp_path_factory.mktemp("registry"), test_ca, users=REGISTRY_USERS) as reg:
        yield reg


@pytest.fixture
def git_source(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1000))

    def make(files: dict[str, bytes | str], tag: str | None = "v1.0.0") -> Path:
        return make_git_source(tmp_path / f"src{next(counter)}", files, tag=tag)

    return make
