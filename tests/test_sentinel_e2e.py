"""Redis Sentinel end to end: Debian's redis-server and redis-sentinel on loopback (a master, two replicas, three
sentinels, the same ACL users), the real bot and real worker processes on a ``redis+sentinel://`` URL, with
``redis_wait_replicas = 1``. The master is SIGKILLed in the middle of a burst of publishes; the sentinels promote
a replica. Invariants, never timings: every release the bot acknowledged as queued completes on the new master
(none lost), each service version is written to the Exchange exactly once (none published twice), and the bot and
workers carried on by themselves (the same processes, none restarted by the test).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgebot.release import SUCCEEDED
from sandbox.sentinel import RedisSentinelCluster
from sandbox.stack import FAST_RECOVERY, ORG, Stack

pytestmark = pytest.mark.slow

SERVICES = [f"svc{i}" for i in range(6)]
"""One release per catalog service (one publish per service runs at a time: the publish lock), each of its own
version (they share the sample source, so each version is its own Exchange service id ``hello_VERSION_amd64``)."""
VERSIONS = tuple(f"9.0.{i}" for i in range(len(SERVICES) + 1))
"""Versions no other test publishes: the registry is the session's, shared with the other end-to-end modules."""
KILL_AFTER = 2
"""Commands sent before the master is killed; the rest are sent while it is down or being replaced."""
QUEUED = re.compile(r"Queued release `(r-[0-9a-f]+)`")
SERVICE_WRITE = re.compile(rf"/orgs/{ORG}/services(/[^/]+)?$")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelCluster]:
    with RedisSentinelCluster(Path(tmp_path_factory.mktemp("sentinel")), replicas=2) as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker_daemon: Any, registry: Any,
          cluster: RedisSentinelCluster) -> Iterator[Stack]:
    settings = {**FAST_RECOVERY, "redis_wait_replicas": 1, "redis_wait_timeout_ms": 2000, "bot_redis_timeout": 10.0}
    with Stack(tmp_path_factory.mktemp("stack"), docker=docker_daemon, registry=registry, sentinel=cluster,
               settings=settings, versions=VERSIONS, extra_services={name: ["amd64"] for name in SERVICES}) as running:
        running.wait_workers(2)
        yield running


def test_killing_the_master_during_a_burst_loses_no_acknowledged_release(stack: Stack,
                                                                         cluster: RedisSentinelCluster) -> None:
    pids = {name: proc.pid for name, proc in stack.processes.items()}
    old_master = cluster.master_port()
    answers: dict[str, str] = {}
    killed = threading.Event()

    def burst() -> None:
        for i, name in enumerate(SERVICES):
            if i == KILL_AFTER:
                cluster.kill_master()
                killed.set()
            answers[name] = stack.answer(f"publish {name} {VERSIONS[i]} --registry local")

    sender = threading.Thread(target=burst)
    sender.start()
    sender.join(timeout=600)
    assert not sender.is_alive() and killed.is_set()
    new_master = cluster.wait_failover(old_master)
    assert new_master != old_master

    acknowledged = {name: m.group(1) for name, text in answers.items() if (m := QUEUED.search(text))}
    refused = {name: text for name, text in answers.items() if name not in acknowledged}
    for text in refused.values():  # never a false "queued"; a refusal says what happened
        assert text == "" or "Not queued" in text or "internal" in text.lower() or "went wrong" in text.lower(), text
    assert acknowledged, answers  # the commands before the kill are acknowledged at least

    store = stack.store()
    for name, release_id in acknowledged.items():
        release = stack.wait_final(release_id, timeout=600)  # on the new master: the record survived
        assert release.state == SUCCEEDED, (name, release.state, release.error)
        assert release.service == name
    # a command whose answer was lost may still have been recorded (and run): every record there is must end too, and
    # each one that succeeded wrote its service exactly once
    succeeded = [r for r in (stack.wait_final(rid, timeout=600) for rid in stack.release_ids()) if r.state == SUCCEEDED]
    published = stack.exchange.services(ORG)
    for name in acknowledged:
        version = VERSIONS[SERVICES.index(name)]
        assert any(f"_{version}_amd64" in sid for sid in published), (version, sorted(published))
    writes = [r for r in stack.exchange.requests() if r["method"] in ("POST", "PUT")
              and SERVICE_WRITE.search(r["path"]) and 200 <= r["status"] < 300]
    assert len(writes) == len(succeeded), writes  # each release that succeeded written once, none twice
    assert set(acknowledged.values()) <= {r.release_id for r in succeeded}
    assert all(store.require(release_id).is_final for release_id in acknowledged.values())
    # the same processes did it all: nobody restarted the bot or a worker
    assert {name: proc.pid for name, proc in stack.processes.items()} == pids
    assert all(proc.poll() is None for proc in stack.processes.values())
    # and a release sent now, on the new master, is acknowledged and completes too
    after = stack.answer(f"publish {SERVICES[0]} {VERSIONS[-1]} --registry local")
    match = QUEUED.search(after)
    assert match, after
    assert stack.wait_final(match.group(1), timeout=600).state == SUCCEEDED
