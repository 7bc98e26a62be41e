"""The Exchange's ``GET orgs/{org}/node-details`` answer, decoded into the few fields a rollout reads.

At 10,000 nodes the answer is about 12 MB of JSON, and most of it is what a rollout never looks at
(``registeredServices``, ``userInput``, ``softwareVersions``, ``heartbeatIntervals``, ``publicKey``…). ``json.loads``
builds a Python dict for every field of every node; :func:`decode` uses msgspec's typed decoder, which skips what the
structs below do not name and builds only these objects, so the poll that summarizes a stage costs about what parsing
the answer alone costs (docs/BENCHMARKS.md, "Rollout watch at scale").

The fields and their spelling are exchange-api's (``src/main/scala/org/openhorizon/exchangeapi/route/node/
NodeDetails.scala`` for the node, where every field but ``id`` is an ``Option``; ``table/node/OneService.scala`` and
``table/node/ContainerStatus.scala`` for ``services``; ``errors`` is ``List[Any]`` there, filled with anax's surface
errors, ``persistence/surface_error.go``). Every field may be missing or null in a real answer (an agent that never
reported a status, a node registered without a policy): each has a default, and
:class:`NodeDetailsUnreadable` names what did not have the expected type instead of a stack trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec


class NodeDetailsUnreadable(ValueError):
    """The answer is not a JSON array of node-details objects (``str(exc)`` says where: msgspec's path)."""


class ContainerStatus(msgspec.Struct, gc=False):
    name: str | None = None
    state: str | None = None


class RunningService(msgspec.Struct, gc=False):
    """One entry of the node's ``services`` (what its agent last reported in its status)."""

    orgid: str | None = None
    url: str | None = msgspec.field(name="serviceUrl", default=None)
    version: str | None = None
    containers: list[ContainerStatus] | None = msgspec.field(name="containerStatus", default=None)


class Workload(msgspec.Struct, gc=False):
    url: str | None = None
    org: str | None = None
    version: str | None = None


class AgentError(msgspec.Struct, gc=False):
    """One surfaced agent error (anax ``persistence.SurfaceError``)."""

    message: str | None = None
    event_code: str | None = None
    hidden: bool | None = None
    workload: Workload | None = None


class Node(msgspec.Struct, gc=False):
    """One node as node-details shows it, only what the rollout reads. ``properties`` stay dicts: the constraint
    language reads them raw, with their Exchange ``type``."""

    id: str | None = None
    name: str | None = None
    arch: str | None = None
    pattern: str | None = None
    last_heartbeat: str | None = msgspec.field(name="lastHeartbeat", default=None)
    services: list[RunningService] | None = None
    errors: list[AgentError] | None = None
    properties: list[dict[str, Any]] | None = None
    constraints: list[str] | str | None = None

    @property
    def label(self) -> str:
        """What a message calls the node: its name, else its id ``org/name``."""
        return self.name or self.id or ""


_DECODER = msgspec.json.Decoder(list[Node])


def decode(raw: bytes | str) -> list[Node]:
    """The nodes of one node-details answer; :class:`NodeDetailsUnreadable` when it is not one."""
    try:
        return _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise NodeDetailsUnreadable(f"the Exchange's node-details answer is not a list of nodes: {exc}") from None


def from_dicts(nodes: Iterable[dict[str, Any]]) -> list[Node]:
    """Nodes from already-parsed JSON (tests, and answers read as dicts elsewhere)."""
    try:
        return msgspec.convert(list(nodes), list[Node])
    except msgspec.ValidationError as exc:
        raise NodeDetailsUnreadable(f"not a list of node-details objects: {exc}") from None
