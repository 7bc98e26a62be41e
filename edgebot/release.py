"""The release: one record that every step reads and updates, from the slash command to the final summary.

States::

    queued → building → awaiting_approval → publishing → rolling_out → succeeded
                    ↘ failed, rejected, expired, cancelled, rolled_back

Each step's output (commit SHA, digest, deployment string, signature) is written once and reused by any later
attempt, so a retried or resumed release publishes exactly the bytes it built and signed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ReleaseState(StrEnum):
    """Where the whole release is (the root message's status line)."""

    QUEUED = "queued"
    BUILDING = "building"
    AWAITING_APPROVAL = "awaiting_approval"
    PUBLISHING = "publishing"
    ROLLING_OUT = "rolling_out"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"


class StageStatus(StrEnum):
    """One pipeline stage (source, build, push, sign, publish), or one arch of a per-arch stage."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class RolloutStatus(StrEnum):
    """One rollout stage; the first four are also a poll's verdict (edgebot.fleet_summary.verdict)."""

    RUNNING = "running"
    HEALTHY = "healthy"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    PENDING = "pending"
    ROLLED_BACK = "rolled_back"


class RequestStatus(StrEnum):
    """A rollback request's outcome (a publish approval's outcome is the release state)."""

    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


# The release states by name, as every module spells them.
QUEUED, BUILDING, AWAITING_APPROVAL, PUBLISHING, ROLLING_OUT = (
    ReleaseState.QUEUED, ReleaseState.BUILDING, ReleaseState.AWAITING_APPROVAL, ReleaseState.PUBLISHING,
    ReleaseState.ROLLING_OUT)
SUCCEEDED, FAILED, REJECTED, EXPIRED, CANCELLED, ROLLED_BACK = (
    ReleaseState.SUCCEEDED, ReleaseState.FAILED, ReleaseState.REJECTED, ReleaseState.EXPIRED, ReleaseState.CANCELLED,
    ReleaseState.ROLLED_BACK)
ACTIVE_STATES = frozenset({QUEUED, BUILDING, AWAITING_APPROVAL, PUBLISHING, ROLLING_OUT})
FINAL_STATES = frozenset({SUCCEEDED, FAILED, REJECTED, EXPIRED, CANCELLED, ROLLED_BACK})

PUBLISH, DEPLOY, ROLLBACK_TO = "publish", "deploy", "rollback"
"""The kinds of release (``Release.kind``)."""

STAGES = ("source", "build", "push", "sign", "publish")
"""Pipeline stages, in order; each gets one progress message in the thread, edited in place."""

# The stage statuses by name (FAILED_STEP: FAILED is the release state).
PENDING, RUNNING, DONE, FAILED_STEP, SKIPPED = (
    StageStatus.PENDING, StageStatus.RUNNING, StageStatus.DONE, StageStatus.FAILED, StageStatus.SKIPPED)


class _Timed:
    started_at: float | None
    ended_at: float | None

    @property
    def elapsed(self) -> float | None:
        """Seconds from start to end (to now while running); None before it started."""
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at


@dataclass
class StageState(_Timed):
    """One stage, or one arch of a per-arch stage (build, push)."""

    status: StageStatus = PENDING
    started_at: float | None = None
    ended_at: float | None = None
    note: str = ""

    def mark(self, status: StageStatus, note: str | None = None) -> None:
        """Move to ``status``: the start time is set when it first runs, the end time when it settles."""
        now = time.time()
        if status == RUNNING and self.started_at is None:
            self.started_at = now
        if status in (DONE, FAILED_STEP, SKIPPED):
            self.started_at = self.started_at or now
            self.ended_at = now
        self.status = status
        if note is not None:
            self.note = note

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageState:
        return cls(**{**data, "status": StageStatus(data.get("status", PENDING))})


@dataclass
class ArchResult:
    """What the pipeline produced for one arch. Fields are written once (see ReleaseStore.set_once)."""

    image_tag: str = ""
    """``host/ns/base_arch:version`` as built."""
    image_id: str = ""
    digest: str = ""
    pinned_image: str = ""
    """``host/ns/base_arch@sha256:…`` as it appears in the signed deployment."""
    definition: dict[str, Any] = field(default_factory=dict)
    """The expanded service definition (before pinning), as read from the resolved commit."""
    built_containers: dict[str, str] = field(default_factory=dict)
    deployment: str = ""
    """The exact deployment string that is signed and uploaded."""
    signature: str = ""
    signature_fingerprint: str = ""
    """``sha256:<hex>`` of the decoded signature bytes."""
    service_id: str = ""
    publish_action: str = ""
    """created | updated | unchanged (already published) | would-create … (dry run)."""
    log_tail: list[str] = field(default_factory=list)
    exchange_write: str = ""
    """create | overwrite: written by the publish step *before* its service POST (PUT), so a retry or a failure knows
    the service in the Exchange is this release's creation (to complete or undo), or an overwrite (never undone)."""
    published_digest: str = ""
    """The image digest of this version as already published in the Exchange when the release was prepared ("" if
    the version was not published): the push must not move the version's tag away from it."""
    exchange_state: dict[str, Any] = field(default_factory=dict)
    """After a failed publish: what is in the Exchange for this arch (service, origin, key, dockauths, undo)."""
    report_seq: int = 0
    """The last build report of this arch applied to the record (workers.build_report): never goes back."""
    service_policy: dict[str, Any] = field(default_factory=dict)
    """The body of ``PUT …/services/{id}/policy`` from the source's service policy file ({}: none), sealed with the
    definitions (workers/service_policy.py)."""
    verify_report: list[str] = field(default_factory=list)
    """What ``verify`` found in the Exchange after publish, one line per problem ([] when all verified)."""
    external_pins: dict[str, str] = field(default_factory=dict)
    """container -> ``host/path@sha256:…`` for images edgebot does not build, resolved from their tags in prepare
    (workers.external_images) and sealed with the source; {} when there are none or the catalog says ``pin = false``."""
    smoke: dict[str, Any] = field(default_factory=dict)
    """The smoke run of this arch's image, as its build report said (edgebot.smoke; {}: none configured)."""
    cluster_archive: str = ""
    """Base64 of the ``clusterDeployment`` operator archive as read from the repository in prepare ("" without one);
    its sha256 is sealed with the source (workers/cluster.py)."""
    cluster_pins: dict[str, str] = field(default_factory=dict)
    """image tag in the operator YAMLs -> ``host/path@sha256:…`` for images edgebot does not build (sealed)."""
    cluster_deployment: str = ""
    """The exact ``clusterDeployment`` string that is signed and uploaded (its archive with the pushed digest)."""
    cluster_signature: str = ""


@dataclass
class Decision:
    """One approver's decision, with what it covered (the audit trail of an approval)."""

    user_id: str
    outcome: str
    """approved | rejected"""
    at: float
    covers_digest: str
    reason: str = ""
    via: str = ""
    """The approver entry of the policy the user qualified through: their own user id, or a user group id (S…)."""
    seal: str = ""
    """The bot's seal over this decision (edgebot.seals); the publish worker counts only sealed approvals."""


@dataclass
class Approval:
    """The approval request of a release: who may approve, how many, until when, and exactly what it covers."""

    required: int
    approvers: list[str]
    """Slack user ids (U…) and user group ids (S…); groups are resolved when a button is clicked."""
    allow_requester: bool
    requested_at: float
    expires_at: float
    covers: dict[str, Any]
    """sha256 of each arch's deployment string, the digests, signature and key fingerprints, the target policies."""
    covers_digest: str
    exchange_changes: dict[str, str] = field(default_factory=dict)
    """arch -> what publishing will do in the Exchange (new service, no change, overwrite …)."""
    round: int = 1
    """Incremented when publish found the release changed since the approval and asked again."""
    card_ts: str = ""
    decisions: list[Decision] = field(default_factory=list)
    quorum_at: float | None = None
    superseded_cards: list[str] = field(default_factory=list)
    kind: str = "publish"
    """publish (the gate before publish) | rollback (`/edge rollback` of a release that rolled out)."""
    requested_by: str = ""
    """Who asked (a rollback's requester, for four-eyes); the release's requester for a publish."""
    status: RequestStatus = RequestStatus.OPEN
    """A rollback request's outcome (a publish's is the release state)."""

    def approvals(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome == "approved" and d.covers_digest == self.covers_digest]

    def approved_by(self, user_id: str) -> bool:
        return any(d.user_id == user_id for d in self.approvals())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        data = dict(data)
        data["decisions"] = [Decision(**d) for d in data.get("decisions", [])]
        data["status"] = RequestStatus(data.get("status", RequestStatus.OPEN))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RolloutStageState(_Timed):
    """One rollout stage of a release: what edgebot changed, and the last poll's node counts."""

    name: str
    status: RolloutStatus = RolloutStatus.PENDING
    """pending → running → healthy, or failed / timed_out / rolled_back."""
    started_at: float | None = None
    ended_at: float | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    """{"kind","name","arch","constraints","previous": {arch: version}} for each policy/pattern moved."""
    counts: dict[str, int] = field(default_factory=dict)
    """total, new, old, failing, offline, waiting (see edgebot.fleet_summary)."""
    problems: list[str] = field(default_factory=list)
    """The failing nodes with their error, in the user's words (first N)."""
    polls: int = 0
    note: str = ""


@dataclass
class Release:
    release_id: str
    team_id: str
    channel_id: str
    user_id: str
    service: str
    version: str
    org: str
    registry: str
    arches: list[str]
    dry_run: bool = False
    overwrite: bool = False
    command_text: str = ""
    state: ReleaseState = QUEUED
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    message_ts: str = ""
    """The root message in the channel; the thread hangs off it."""
    progress_ts: dict[str, str] = field(default_factory=dict)
    """stage -> ts of its progress message in the thread."""
    summary_ts: str = ""
    commit_sha: str = ""
    source_ref: str = ""
    key_name: str = ""
    public_key_fingerprint: str = ""
    stages: dict[str, StageState] = field(default_factory=dict)
    arch_steps: dict[str, dict[str, StageState]] = field(default_factory=dict)
    """stage -> arch -> state, for the per-arch stages (build, push, sign, publish)."""
    results: dict[str, ArchResult] = field(default_factory=dict)
    error: str = ""
    error_detail: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things the thread should say besides progress (warnings such as credential reuse)."""
    rollout_only: list[str] = field(default_factory=list)
    """``--policy``: roll out through only these catalog policies/patterns (one stage, "override")."""
    rollout: list[RolloutStageState] = field(default_factory=list)
    """The rollout stages after publish (empty when the service has none, or for a dry run)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Audit trail: {"at", "what", ...} appended by every transition."""
    approval: Approval | None = None
    """Set once every arch is signed, when the release's approval policy asks for approvals."""
    approval_history: list[Approval] = field(default_factory=list)
    """Earlier rounds of approval (publish found the release changed since they were given)."""
    rollback_request: Approval | None = None
    """`/edge rollback` under an approval policy: the request, its card and its decisions."""
    intake_seal: str = ""
    """The bot's seal over who asked for what (edgebot.seals.intake_payload)."""
    source_seal: str = ""
    """The publish worker's seal over the commit and definitions prepare read (edgebot.seals.source_payload)."""
    public: bool | None = None
    """``--public`` / ``--private``: overrides the definition's ``public`` for every arch (None: the definition's)."""
    kind: str = "publish"
    """publish (build, sign, publish, roll out) | deploy (`/edge deploy`: roll out a version already in the Exchange,
    no build) | rollback (`/edge rollback --to VERSION`: a deploy of an older version, under the rollback permission).
    """

    @property
    def is_deploy(self) -> bool:
        """A deploy of a version already in the Exchange (``/edge deploy``, ``/edge rollback --to``): nothing built."""
        return self.kind in (DEPLOY, ROLLBACK_TO)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def stage(self, name: str) -> StageState:
        return self.stages.setdefault(name, StageState())

    def arch_step(self, stage: str, arch: str) -> StageState:
        return self.arch_steps.setdefault(stage, {}).setdefault(arch, StageState())

    def result(self, arch: str) -> ArchResult:
        return self.results.setdefault(arch, ArchResult())

    def event(self, what: str, **data: Any) -> None:
        self.events.append({"at": time.time(), "what": what, **data})

    def mark_failed(self, message: str, detail: list[str] | None = None, **event: Any) -> list[str]:
        """End the release as failed with ``message``; every running stage (and arch) is marked failed. Returns the
        names of those stages, for their thread messages to be repainted."""
        self.state = FAILED
        self.error = message
        self.error_detail = list(detail or [])
        self.event("failed", error=message, **event)
        failed: list[str] = []
        for name, state in self.stages.items():
            if state.status == RUNNING:
                state.mark(FAILED_STEP)
                failed.append(name)
        for name, per_arch in self.arch_steps.items():
            for state in per_arch.values():
                if state.status == RUNNING:
                    state.mark(FAILED_STEP)
                    if name not in failed:
                        failed.append(name)
        return failed

    # -- (de)serialization: plain JSON, no pickle -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        data = dict(data)
        data["state"] = ReleaseState(data.get("state", QUEUED))
        data["stages"] = {k: StageState.from_dict(v) for k, v in data.get("stages", {}).items()}
        data["arch_steps"] = {
            stage: {arch: StageState.from_dict(v) for arch, v in per_arch.items()}
            for stage, per_arch in data.get("arch_steps", {}).items()
        }
        data["results"] = {k: ArchResult(**v) for k, v in data.get("results", {}).items()}
        if data.get("approval"):
            data["approval"] = Approval.from_dict(data["approval"])
        data["approval_history"] = [Approval.from_dict(a) for a in data.get("approval_history", [])]
        if data.get("rollback_request"):
            data["rollback_request"] = Approval.from_dict(data["rollback_request"])
        data["rollout"] = [RolloutStageState(**{**v, "status": RolloutStatus(v.get("status", RolloutStatus.PENDING))})
                           for v in data.get("rollout", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
