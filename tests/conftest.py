"""Shared fixtures: real Redis, a private Docker Engine, a TLS registry with htpasswd auth, git sources.

Everything a fixture starts is stopped at the end, also when tests fail (each part is a context manager, and a part
that fails half-way through its start undoes what it did). Session-scoped parts are shared by all tests; tests that
need a clean Redis use ``redis_conn`` (flushed before each test). The names of these fixtures are used across the
suite: keep them stable.

Every part starts only when a selected test needs it (fixtures are lazy), and every test that needs the private
Docker Engine is marked ``slow`` here at collection, so ``make unit`` (``-m "not slow"``) never starts a dockerd.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest
import redis

from sandbox.base_images import seed_base_images
from sandbox.pki import TestCA
from sandbox.processes import DockerDaemon, RedisServer, Registry, make_git_source

REGISTRY_USERS = {"pusher": "push-secret-1", "puller": "pull-secret-1"}
HELLO_DIR = Path(__file__).resolve().parent.parent / "examples" / "hello"
BASE_IMAGE_ARCHES = ("amd64", "arm64")
NEEDS_DOCKERD = "docker_daemon"
"""The fixture that starts a private dockerd: a test that uses it, directly or through another fixture, is slow."""


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m "not slow" deselection
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test whose fixture closure includes :data:`NEEDS_DOCKERD` (seeding the base images alone
    takes seconds, and dockerd is what a loaded machine can least afford in a quick run)."""
    for item in items:
        if NEEDS_DOCKERD in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


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
    """A private dockerd, seeded with the per-arch busybox base images (``amd64/busybox:1.36``…).

    Unix socket paths must stay short: a directory under /tmp, not pytest's deep tmp tree. Dirs that crashed runs
    left there (owner and dockerd both gone) are removed first.
    """
    DockerDaemon.sweep_stale()
    with DockerDaemon(Path(f"/tmp/edgebot-dk-{os.getpid()}")) as daemon:
        client = daemon.client()
        try:
            seed_base_images(client, BASE_IMAGE_ARCHES)
        finally:
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
    """A registry on 127.0.0.1 (Docker skips its certificate checks: loopback counts as insecure)."""
    with Registry(tmp_path_factory.mktemp("registry"), test_ca, users=REGISTRY_USERS) as reg:
        yield reg


@pytest.fixture
def git_source(tmp_path: Path) -> Callable[..., Path]:
    """``git_source(files, tag="v1.0.0")`` → path of a bare repository with one commit (and that tag)."""
    numbers = count()

    def make(files: dict[str, bytes | str], tag: str | None = "v1.0.0") -> Path:
        return make_git_source(tmp_path / f"src{next(numbers)}", files, tag=tag)

    return make


def hello_files() -> dict[str, bytes | str]:
    """The sample service as its repository holds it.

    Its Dockerfiles start ``FROM amd64/busybox:1.36`` / ``FROM arm64v8/busybox:1.36`` (seeded into ``docker_daemon``
    from Debian's static busybox), so no binary has to be copied into the repository.
    """
    return {str(p.relative_to(HELLO_DIR)): p.read_bytes() for p in sorted(HELLO_DIR.rglob("*")) if p.is_file()}


@pytest.fixture
def hello_repo(git_source: Callable[..., Path]) -> Path:
    """A bare git repository of ``examples/hello``, tagged ``v1.0.0``."""
    return git_source(hello_files(), "v1.0.0")
