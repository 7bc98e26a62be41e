"""Redis ACL users, one per role: the data store itself keeps a compromised process inside its role.

Every edgebot process authenticates to Redis as its role's user (``[redis] username`` or ``EDGEBOT_REDIS_USERNAME``,
with the role's password through ``[redis] password``). The users and what each may touch:

``edgebot-bot``      the Slack bot: release records and their indexes, the approval and rate-limit keys, the
                     publish queue (a release's first step, the publish at quorum, a rollback) and RQ's job keys.
``edgebot-publish``  publish workers: everything edgebot keeps (``~edgebot:*``, ``~rq:*``); they hold the signing and
                     seal keys and the Exchange credential anyway. They alone run the reaper and take over a dead
                     scheduler (workers.worker), and they apply the build workers' reports to the records.
``edgebot-build``    build workers, which run repository-controlled Dockerfiles next to a Docker daemon: release
                     records *read-only*; writes only to their step-ledger entries and leases, their per-arch build
                     reports (``<prefix>:build-report:*``) and logs (``<prefix>:build-log:*``) and the RQ keys of
                     build jobs (ids containing ``-build-``) and build queues (``edgebot-build-*``, which includes
                     the reports queue). They can neither write a record (quorum, deployment, digest) nor enqueue
                     onto the publish queue, and they may subscribe to RQ's command channels but never publish on
                     them.

The audit stream (``<prefix>:audit``, edgebot.audit) is appended by the bot and publish roles in the MULTI of their
record writes and shipped by publish workers; no build pattern covers it, so a build worker can neither forge, trim nor
read the trail.

Commands: ``+@all -@dangerous`` (no FLUSHALL, CONFIG, KEYS, ACL, DEBUG, MONITOR, CLIENT KILL…) plus INFO and the
CLIENT subcommands RQ's worker uses to name its connection; the build role may not PUBLISH either (the bot stops a
cancelled release's running job through RQ's command channel; a build worker must not stop anyone's). Redis ≥ 7.0
checks these rules for every command a Lua script runs too, so the lease and ledger scripts are bound by them.

:func:`acl_file` renders the ``user`` lines for ``redis.conf``/an ACL file (the sandbox, ``make demo`` and
``deploy/`` use the same rules); ``user default off`` disables the password-less default user.
"""

from __future__ import annotations

from collections.abc import Mapping

BOT, BUILD, PUBLISH = "bot", "build", "publish"
ROLES = (BOT, BUILD, PUBLISH)

BUILD_REPORTS_QUEUE = "edgebot-build-reports"
"""Build workers report progress here; only publish workers serve it (edgebot.jobs.Step.APPLY_BUILD_REPORT)."""

_COMMANDS = "+@all -@dangerous +info +client|setname +client|info +client|getname +client|id"
"""Every role: no administrative or destructive command (RQ's worker names its connection, INFO is harmless)."""
_NO_PUBLISH = "-publish -spublish"
"""The build role may not PUBLISH: RQ's worker commands (shutdown, kill-horse, stop-job) travel on it."""

_RQ_BUILD_REGISTRIES = ("wip", "registry", "finished", "failed", "deferred", "ready", "scheduled", "canceled",
                        "clean_registries", "scheduler-lock", "workers")


def username(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown Redis role {role!r}: one of {', '.join(ROLES)}")
    return f"edgebot-{role}"


def key_patterns(role: str, prefix: str = "edgebot") -> list[str]:
    """The role's key patterns in ACL syntax (``~`` read-write, ``%R~`` read-only)."""
    if role == PUBLISH:
        return [f"~{prefix}:*", "~rq:*"]
    if role == BOT:
        return [f"~{prefix}:*", "~rq:*"]
    if role == BUILD:
        return [
            f"%R~{prefix}:release:*",  # read the record it builds; never write it
            # its step-ledger claims: build steps' entries and leases only (edgebot.steps), the shared fence counter
            f"~{prefix}:build-steps:*", f"~{prefix}:lease:*:build-*", f"~{prefix}:fence:*", f"~{prefix}:inflight",
            f"~{prefix}:build-report:*",  # its progress, applied by a publish worker
            f"~{prefix}:build-log:*",  # the whole (scrubbed) build log, attached to the thread by a publish worker
            f"~{prefix}:metrics:call_errors",
            "~rq:queue:edgebot-build-*", "~rq:queues", "%R~rq:suspended",
            "~rq:job:*-build-*", "~rq:results:*-build-*", "~rq:executions:*-build-*", "~rq:execution:*-build-*",
            *(f"~rq:{name}:edgebot-build-*" for name in _RQ_BUILD_REGISTRIES),
            "~rq:workers", "~rq:worker:*", "~rq:scheduler:*",
            "%R~rq:rl-keys", "%R~rq:groups", "~rq:clean_groups",  # RQ's maintenance pass reads them (unused here)
        ]
    raise ValueError(f"unknown Redis role {role!r}")


def channel_patterns(role: str) -> list[str]:
    return ["&rq:pubsub:*"] if role == BUILD else ["&*"]


def user_rule(role: str, password: str, prefix: str = "edgebot", *, hashed: bool = False) -> str:
    """One ``user`` line of an ACL file: ``password`` in clear, or with ``hashed`` its SHA-256 in hex (what deploy/
    writes, so no clear password lands in a file)."""
    secret = f"#{password}" if hashed else f">{password}"
    return " ".join(["user", username(role), "on", secret, "resetkeys", *key_patterns(role, prefix),
                     "resetchannels", *channel_patterns(role), _COMMANDS, *([_NO_PUBLISH] if role == BUILD else [])])


def acl_file(passwords: Mapping[str, str], *, admin_password: str | None = None, prefix: str = "edgebot",
             hashed: bool = False) -> str:
    """ACL lines for every role in ``passwords``, plus the ``default`` user: an administrator with
    ``admin_password`` (the sandbox's inspection connection), or ``off`` without one (production)."""
    lines = [f"user default on >{admin_password} ~* &* +@all" if admin_password else "user default off"]
    lines += [user_rule(role, passwords[role], prefix, hashed=hashed) for role in ROLES if role in passwords]
    return "\n".join(lines) + "\n"


# -- high availability (Sentinel): the users replication and the sentinels log in as (docs/production.md) ----------

REPLICA_USER = "edgebot-replica"
"""What a replica logs in to its master as (``masteruser``/``masterauth`` on every data node: any may become one)."""
SENTINEL_USER = "edgebot-sentinel"
"""What a sentinel logs in to the data nodes as (``sentinel auth-user``/``auth-pass``)."""
_REPLICA_COMMANDS = "+psync +replconf +ping"
_SENTINEL_COMMANDS = ("allchannels +multi +slaveof +replicaof +ping +exec +subscribe +config|rewrite +role +publish "
                      "+info +client|setname +client|kill +script|kill")
"""The commands Redis's own documentation (Sentinel, "Redis ACL authentication") gives these two users; no keys."""


def ha_rules(replica_password: str, sentinel_password: str, *, hashed: bool = False) -> str:
    """The ``user`` lines for replication and the sentinels, to add to every data node's ACL file."""
    def secret(password: str) -> str:
        return f"#{password}" if hashed else f">{password}"

    return (f"user {REPLICA_USER} on {secret(replica_password)} resetkeys resetchannels {_REPLICA_COMMANDS}\n"
            f"user {SENTINEL_USER} on {secret(sentinel_password)} resetkeys {_SENTINEL_COMMANDS}\n")


def placeholder(role: str) -> str:
    """Where deploy/'s ACL template takes the SHA-256 of ``role``'s password (filled in when Redis starts)."""
    return f"@{role.upper()}_PASSWORD_SHA256@"


def acl_template(prefix: str = "edgebot") -> str:
    """The ACL file shipped in deploy/ (docker-compose and Kubernetes), with :func:`placeholder` for the hashes."""
    return acl_file({role: placeholder(role) for role in ROLES}, prefix=prefix, hashed=True)


__all__ = ["BOT", "BUILD", "BUILD_REPORTS_QUEUE", "PUBLISH", "REPLICA_USER", "ROLES", "SENTINEL_USER", "acl_file",
           "acl_template", "ha_rules", "key_patterns", "placeholder", "user_rule", "username"]
