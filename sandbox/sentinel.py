"""Redis with Sentinel on loopback, as in production: one master, replicas (``replicaof``) and three
``redis-sentinel`` processes, every data node with the same ACL users (edgebot.redis_acl: the roles, ``default`` as the
tests' administrator, and the replication and sentinel users of :func:`edgebot.redis_acl.ha_rules`).

Each process has its own directory and a free port; sentinels rewrite their config file (which is why it is theirs).
``kill_master`` SIGKILLs whoever is master now; the sentinels promote a replica (``down-after-milliseconds`` and
``failover-timeout`` short, quorum 2). :attr:`url` is the ``redis+sentinel://`` URL a config file holds.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from edgebot import redis_acl
from sandbox.proc_base import Managed, StartFailed, free_port, spawn, stop_process, wait_ready, wait_until
from sandbox.processes import RedisServer

MASTER_NAME = "edgebot"
QUORUM = 2


class ReplicaNode(RedisServer):
    """A data node that may be (or become) a replica: ``masteruser``/``masterauth`` on every node, since the sentinels
    turn a demoted master into a replica; ``replicaof`` on those that start as one."""

    def __init__(self, workdir: Path, *, cluster: RedisSentinelCluster, replica_of: int | None) -> None:
        super().__init__(workdir, appendonly=True, password=cluster.admin_password)
        self._role_passwords = dict(cluster.role_passwords)  # the same users and passwords on every node
        self.cluster = cluster
        self.replica_of = replica_of

    def _extra_conf(self) -> list[str]:
        lines = [f"masteruser {redis_acl.REPLICA_USER}", f"masterauth {self.cluster.replica_password}",
                 "replica-announce-ip 127.0.0.1", "repl-diskless-sync-delay 0"]
        lines += redis_acl.ha_rules(self.cluster.replica_password, self.cluster.sentinel_password).splitlines()
        if self.replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {self.replica_of}")
        return lines


class SentinelProcess(Managed):
    def __init__(self, workdir: Path, *, cluster: RedisSentinelCluster) -> None:
        self.workdir = Path(workdir)
        self.cluster = cluster
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SentinelProcess(127.0.0.1:{self.port})"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sentinel.log"

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "sentinel.conf"
        cluster = self.cluster
        lines = [
            f"port {self.port}", "bind 127.0.0.1", f'dir "{self.workdir}"', "protected-mode no",
            "sentinel announce-ip 127.0.0.1", "sentinel resolve-hostnames no",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {cluster.initial_master_port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {cluster.down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {cluster.failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
            f"sentinel auth-user {MASTER_NAME} {redis_acl.SENTINEL_USER}",
            f"sentinel auth-pass {MASTER_NAME} {cluster.sentinel_password}",
        ]
        conf.touch(mode=0o600, exist_ok=True)
        conf.chmod(0o600)
        conf.write_text("\n".join(lines) + "\n")
        self.proc = spawn(["redis-sentinel", str(conf)], self.log_path)

        def knows_master() -> bool:
            with self.client() as client:
                return client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME) is not None

        wait_ready(knows_master, timeout=30, what=f"redis-sentinel on port {self.port}", log=self.log_path,
                   proc=self.proc)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


class RedisSentinelCluster(Managed):
    """``replicas`` + 1 data nodes and three sentinels under ``workdir``; see the module doc."""

    def __init__(self, workdir: Path, *, replicas: int = 2, down_after_ms: int = 3000,
                 failover_timeout_ms: int = 6000) -> None:
        """``down_after_ms``: long enough that a master merely stalled by a loaded machine (``appendfsync always``,
        an AOF rewrite) is not failed over while it still takes writes — that split brain loses the writes it took
        (seen with 1000 ms in bench/failover.py: a worker's record update lost, its next job kept)."""
        self.workdir = Path(workdir)
        self.admin_password = secrets.token_hex(16)
        self.role_passwords = {role: secrets.token_hex(16) for role in redis_acl.ROLES}
        self.replica_password = secrets.token_hex(16)
        self.sentinel_password = secrets.token_hex(16)
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes: list[ReplicaNode] = []
        master = ReplicaNode(self.workdir / "node0", cluster=self, replica_of=None)
        self.initial_master_port = master.port
        self.nodes = [master] + [ReplicaNode(self.workdir / f"node{i + 1}", cluster=self, replica_of=master.port)
                                 for i in range(replicas)]
        self.sentinels = [SentinelProcess(self.workdir / f"sentinel{i}", cluster=self) for i in range(3)]

    def __repr__(self) -> str:
        return f"RedisSentinelCluster({self.url})"

    @property
    def url(self) -> str:
        """What a config file holds: the sentinels and the master's name, no credentials."""
        return f"redis+sentinel://{','.join(f'127.0.0.1:{s.port}' for s in self.sentinels)}/{MASTER_NAME}?db=0"

    def role_password(self, role: str) -> str:
        return self.role_passwords[role]

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_replicas_online(len(self.nodes) - 1)
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_see_each_other, timeout=60, interval=0.2)

    def _sentinels_see_each_other(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                try:
                    info = client.execute_command("SENTINEL", "MASTER", MASTER_NAME)
                except redis.RedisError:
                    return False
                pairs = dict(zip(info[::2], info[1::2], strict=False)) if isinstance(info, list) else dict(info)
                fields = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in pairs.items()}
                others = int(fields.get("num-other-sentinels") or 0)
                replicas = int(fields.get("num-slaves") or 0)
                if others < len(self.sentinels) - 1 or replicas < len(self.nodes) - 1:
                    return False
        return True

    def master_port(self) -> int:
        """The master's port, as a majority of the sentinels name it."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            if sentinel.proc is None:
                continue
            try:
                with sentinel.client() as client:
                    addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
            except redis.RedisError:
                continue
            if addr:
                port = int(addr[1])
                votes[port] = votes.get(port, 0) + 1
        port, count = max(votes.items(), key=lambda kv: kv[1], default=(0, 0))
        if count < QUORUM:
            raise StartFailed(f"the sentinels do not agree on a master: {votes}")
        return port

    def master(self) -> ReplicaNode:
        port = self.master_port()
        return next(n for n in self.nodes if n.port == port)

    def admin_client(self) -> redis.Redis:
        """The administrator (``default``) through the sentinels, riding out a failover like edgebot's processes."""
        from edgebot import redis_conn

        return redis_conn.connect(self.url, username="default", password=self.admin_password, socket_timeout=5,
                                  socket_connect_timeout=5, retry=redis_conn.retry_for(60, 0.5))

    def admin(self) -> redis.Redis:
        """The tests' inspection connection to the current master (the ``default`` administrator)."""
        node = self.master()
        return redis.Redis(host="127.0.0.1", port=node.port, password=self.admin_password)

    def wait_replicas_online(self, count: int, timeout: float = 60) -> None:
        def online() -> bool:
            try:
                with redis.Redis(host="127.0.0.1", port=self.master_port_or_initial(), password=self.admin_password,
                                 socket_timeout=2, retry=Retry(NoBackoff(), 0)) as client:
                    info = client.info("replication")
            except (redis.RedisError, StartFailed):
                return False
            synced = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                      and v.get("state") == "online"]
            return len(synced) >= count

        wait_until(online, timeout=timeout, interval=0.2)

    def master_port_or_initial(self) -> int:
        return self.master_port() if all(s.proc is not None for s in self.sentinels) else self.initial_master_port

    def kill_master(self) -> ReplicaNode:
        """SIGKILL the current master (a crash: no shutdown, no last sync); returns it (``.start()`` brings it back,
        the sentinels then make it a replica of the new master)."""
        node = self.master()
        stop_process(node.proc, sig=signal.SIGKILL)
        node.proc = None
        return node

    def wait_failover(self, old_port: int, timeout: float = 60) -> int:
        """Wait until a majority of the sentinels name a master other than ``old_port``; its port."""
        def moved() -> int:
            try:
                port = self.master_port()
            except StartFailed:
                return 0
            return port if port != old_port else 0

        wait_until(moved, timeout=timeout, interval=0.2)
        return self.master_port()

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()


__all__ = ["MASTER_NAME", "RedisSentinelCluster", "ReplicaNode", "SentinelProcess"]
