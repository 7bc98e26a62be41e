"""The approval card, the Reject modal and every answer to an approval click (pure builders, snapshot-tested).

Kept beside :mod:`edgebot.messages` (which renders the rest of the thread) so each stays one concept.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import time
from typing import Any

from edgebot import approvals, smoke
from edgebot.approvals import Kind, Refusal
from edgebot.messages import (
    STATE_ICON,
    STATE_LABEL,
    Message,
    clip,
    context,
    escape,
    escape_keeping_mentions,
    limit_blocks,
    preformatted,
    section,
    short,
    title,
)
from edgebot.release import (
    AWAITING_APPROVAL,
    EXPIRED,
    PUBLISHING,
    REJECTED,
    ROLLED_BACK,
    ROLLING_OUT,
    SUCCEEDED,
    Approval,
    ArchResult,
    Release,
)

APPROVE_ACTION = "approve_release"
REJECT_ACTION = "reject_release"
REJECT_CALLBACK = "reject_release_modal"
APPROVE_ROLLBACK_ACTION = "approve_rollback"
REJECT_ROLLBACK_ACTION = "reject_rollback"
REJECT_ROLLBACK_CALLBACK = "reject_rollback_modal"
REASON_BLOCK = "reason"
REASON_ACTION = "reason_input"
REASON_MIN_LENGTH, REASON_MAX_LENGTH = 3, 500
"""A rejection's reason, in characters (the modal asks for it; the bot checks it again on submission)."""
REASON_TOO_SHORT = "Say why, in a few words."


def mention(principal: str) -> str:
    return f"<!subteam^{principal}>" if principal.startswith("S") else f"<@{principal}>"


def when(ts: float) -> str:
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
    return f"<!date^{int(ts)}^{{date_short_pretty}} {{time}}|{fallback}>"


def _tally(release: Release, request: Approval | None = None) -> str:
    request = request or release.approval
    assert request is not None
    given = request.approvals()
    who = ", ".join(f"<@{d.user_id}>" for d in given)
    return f"{len(given)} of {request.required}" + (f": {who}" if who else "")


def approval_card(release: Release) -> Message:
    """The card in the thread: exactly what ships, who must approve, and (while open) Approve / Reject."""
    approval = release.approval
    assert approval is not None, "approval_card needs a release with an approval request"
    open_ = release.state == AWAITING_APPROVAL and not release.is_final
    approvers = " ".join(mention(p) for p in approval.approvers)
    requester = "" if approval.allow_requester else " (not the requester)"
    if open_:
        head = (f":raised_hand: *Approval needed:* {title(release)} to org `{release.org}` — "
                f"{approval.required} approval(s) from {approvers}{requester}")
    elif release.state in (PUBLISHING, ROLLING_OUT, SUCCEEDED) and approval.quorum_at:
        head = f":white_check_mark: *Approved:* {title(release)} ({_tally(release)})"
    elif release.state == REJECTED:
        head = f"{STATE_ICON[REJECTED]} *Rejected:* {title(release)} — {escape_keeping_mentions(release.error)}"
    elif release.state == EXPIRED:
        head = f"{STATE_ICON[EXPIRED]} *Expired:* {title(release)} — {escape_keeping_mentions(release.error)}"
    else:
        head = f"*Approval closed:* {title(release)} — the release is {STATE_LABEL.get(release.state, release.state)}"
    lines = [
        f"requested by <@{release.user_id}> · release `{release.release_id}` · registry `{release.registry}`",
        f"commit `{release.commit_sha}`",
    ]
    if release.is_deploy:
        lines += _deploy_lines(release)
    else:
        for arch in release.arches:
            res = release.result(arch)
            change = escape(approval.exchange_changes.get(arch, ""))
            lines.append(f"*{arch}* `{res.pinned_image}`\n    signature `{short(res.signature_fingerprint, 23)}`"
                         + (f" · Exchange: {change}" if change else ""))
            lines += external_image_lines(res)
            lines += cluster_lines(res)
            lines += smoke_lines(res.smoke)  # issue 14
        key_fp = short(release.public_key_fingerprint, 23)
        lines.append(f"signing key `{release.key_name}` · public key fingerprint `{key_fp}`")
        lines += service_policy_lines(release)  # issue 15
        lines += visibility_lines(release)
    targets = approval.covers.get("targets") or []
    lines.append("moves " + ", ".join(f"`{t}`" for t in targets) if targets
                 else "moves no deployment policy or pattern (publish only)")
    blocks: list[dict[str, Any]] = [section(head), section("\n".join(lines))]
    tally = f"approvals {_tally(release)}"
    if open_:
        blocks.append(context(f"{tally} · open until {when(approval.expires_at)}"
                              + (f" · round {approval.round}" if approval.round > 1 else "")))
        value = approvals.button_value(release)
        blocks.append({
            "type": "actions",
            "block_id": "approval",
            "elements": [
                {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
                 "text": {"type": "plain_text", "text": "Reject"}},
            ],
        })
    else:
        blocks.append(context(tally))
    text = clip(f"{head}\n" + "\n".join(lines), 3900).replace("*", "")
    return Message(text=text, blocks=limit_blocks(blocks))


def _deploy_lines(release: Release) -> list[str]:
    """What a deploy's card shows: an existing version, nothing built, and exactly which services it moves to."""
    lines = [f"a {'rollback' if release.kind == 'rollback' else 'deploy'} of version {release.version}, already in "
             "the Exchange: nothing is built, pushed, signed or published"]
    for arch in release.arches:
        res = release.result(arch)
        if res.service_id:
            lines.append(f"*{arch}* service `{escape(res.service_id)}` · deployment sha256 "
                         f"`{short(hashlib.sha256(res.deployment.encode()).hexdigest(), 23)}` · signature "
                         f"`{short(res.signature_fingerprint, 23)}`")
    return lines


def superseded_card(release: Release) -> Message:
    text = (f":leftwards_arrow_with_hook: This approval card for {title(release)} is outdated: what would ship "
            "changed since it was posted. Approve the newer card below.")
    return Message(text=text, blocks=[section(text)])


def asked_again(release: Release) -> str:
    """Note in the thread when publish found the release changed since it was approved."""
    return (f":warning: {title(release)} changed after it was approved (a digest, a signature, the deployment or the "
            "target policies differ from what the approvers saw). Nothing was published; please approve again.")


def click_refused(reason: Refusal, release: Release | None, release_id: str, *, approvers: list[str] | None = None,
                  kind: Kind = Kind.PUBLISH) -> Message:
    """The ephemeral answer to a click on a ``kind`` card that did not count: exactly why."""
    name = title(release) if release else release_id
    if reason == Refusal.UNKNOWN:
        text = f"There is no release `{release_id}` any more, so this click did nothing."
    elif reason == Refusal.ENDED and kind is Kind.ROLLBACK and release is not None \
            and release.rollback_request is not None and release.state != ROLLED_BACK:
        # a rollback request closes (rejected, expired) while its release stays as it was; a publish's request ends
        # with its release
        text = (f"The rollback request for {name} was {release.rollback_request.status}; your click did not count. "
                "Ask again with /edge rollback.")
    elif reason == Refusal.ENDED:
        assert release is not None
        text = (f"{name} already ended ({STATE_LABEL.get(release.state, release.state)}); "
                "your click did not count.")
    elif reason == Refusal.NOT_WAITING:
        text = f"{name} is not waiting for approval (there is no open approval card), so nothing was approved."
    elif reason == Refusal.QUORUM_REACHED:
        assert release is not None
        text = (f"{name} already has its approvals ({_tally(release)}) and is being published; "
                "your click was not needed.")
    elif reason == Refusal.EXPIRED:
        text = (f"The approval request for {name} expired; your click did not count. The requester can publish "
                "again to ask for a new approval.")
    elif reason == Refusal.OUTDATED:
        text = (f"This card for {name} is outdated: what would ship changed since it was posted. "
                "Use the newest approval card in the thread.")
    elif reason == Refusal.REQUESTER:
        text = (f"You requested {name}, so your approval does not count (four-eyes): "
                "someone else among the approvers must approve it.")
    elif reason == Refusal.NOT_APPROVER:
        who = ", ".join(mention(p) for p in approvers or [])
        text = f"You are not an approver for {name}, so your click did not count." + (
            f" Approvers: {who}." if who else "")
    elif reason == Refusal.ALREADY:
        assert release is not None
        text = f"You already approved {name} ({_tally(release)}); a second click does not count twice."
    else:
        text = f"Your click on {name} did not count ({reason})."
    return Message(text=text)


def approval_counted(release: Release, reached: bool) -> Message:
    if reached:
        now = "being rolled out now" if release.is_deploy else "being published now"
        text = f"Approved: {title(release)} has the approvals it needs ({_tally(release)}) and is {now}."
    else:
        text = f"Your approval of {title(release)} counts: {_tally(release)}."
    return Message(text=text)


def reject_modal(release: Release, value: str, *, kind: Kind = Kind.PUBLISH) -> dict[str, Any]:
    """The modal that asks for a reason before a release (or a rollback) is rejected; ``private_metadata`` carries
    the card's button value."""
    rollback = kind is Kind.ROLLBACK
    if rollback:
        assert release.rollback_request is not None
        question = (f"Reject the rollback of *{title(release)}* (release `{release.release_id}`) requested by "
                    f"<@{release.rollback_request.requested_by}>? The fleet stays on {release.version}.")
    else:
        question = (f"Reject *{title(release)}* (release `{release.release_id}`) requested by <@{release.user_id}>? "
                    + ("The fleet stays where it is." if release.is_deploy else
                       "The images stay in the registry, nothing is published."))
    return {
        "type": "modal",
        "callback_id": REJECT_ROLLBACK_CALLBACK if rollback else REJECT_CALLBACK,
        "private_metadata": value,
        "title": {"type": "plain_text", "text": "Reject rollback" if rollback else "Reject release"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(question),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason (shown in the thread)"},
                "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "multiline": True,
                            "min_length": REASON_MIN_LENGTH, "max_length": REASON_MAX_LENGTH},
            },
        ],
    }


# -- rollback requests ---------------------------------------------------------------------------------------------

def rollback_card(release: Release) -> Message:
    """The card of a `/edge rollback` that needs approval: what goes back to which version, who must approve."""
    request = release.rollback_request
    assert request is not None, "rollback_card needs a rollback request"
    approvers = " ".join(mention(p) for p in request.approvers)
    open_ = request.status == "open" and release.state != ROLLED_BACK
    if open_:
        head = (f":leftwards_arrow_with_hook: *Rollback needs approval:* {title(release)} — {request.required} "
                f"approval(s) from {approvers}" + ("" if request.allow_requester else " (not the requester)"))
    elif request.status == "approved" or release.state == ROLLED_BACK:
        head = f":white_check_mark: *Rollback approved:* {title(release)} ({_tally(release, request)})"
    else:
        head = f":no_entry: *Rollback {request.status}:* {title(release)}"
    lines = [f"requested by <@{request.requested_by}> · release `{release.release_id}` (requested by "
             f"<@{release.user_id}>)"]
    for target in request.covers.get("targets", []):
        kind, name, versions = (str(target).split(":", 2) + ["", ""])[:3]
        pairs = [p.partition("=") for p in versions.split(",") if p]
        back = ", ".join(f"`{v}`" if a == "*" else f"`{v}` ({a})" for a, _, v in pairs)
        lines.append(f"{kind} `{name}` goes back to {back or 'what it pinned before'}")
    blocks: list[dict[str, Any]] = [section(head), section("\n".join(lines))]
    decided = [d for d in request.decisions if d.outcome == "rejected"]
    if decided:
        blocks.append(context(f"rejected by <@{decided[-1].user_id}>: {escape(decided[-1].reason)}"))
    if open_:
        blocks.append(context(f"approvals {_tally(release, request)} · open until {when(request.expires_at)}"))
        value = approvals.rollback_button_value(release)
        blocks.append({"type": "actions", "block_id": "rollback_approval", "elements": [
            {"type": "button", "action_id": APPROVE_ROLLBACK_ACTION, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve rollback"}},
            {"type": "button", "action_id": REJECT_ROLLBACK_ACTION, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}},
        ]})
    else:
        blocks.append(context(f"approvals {_tally(release, request)}"))
    text = clip(f"{head}\n" + "\n".join(lines), 3900).replace("*", "")
    return Message(text=text, blocks=limit_blocks(blocks))


def rollback_requested(release: Release) -> Message:
    assert release.rollback_request is not None
    text = (f"The rollback of {title(release)} (release `{release.release_id}`) needs "
            f"{release.rollback_request.required} approval(s): the card is in the release's thread.")
    return Message(text=text)


def rollback_counted(release: Release, reached: bool) -> Message:
    assert release.rollback_request is not None
    tally = _tally(release, release.rollback_request)
    if reached:
        return Message(text=f"Rollback approved ({tally}): {title(release)} is being rolled back now.")
    return Message(text=f"Your approval of the rollback of {title(release)} counts: {tally}.")


def external_image_lines(res: ArchResult) -> list[str]:
    """The images edgebot did not build, each with the tag the definition names and the digest it was pinned to."""
    services = (res.definition.get("deployment") or {}).get("services") or {}
    lines = []
    for name, pinned in sorted(res.external_pins.items()):
        spec = services.get(name)
        tagged = str(spec.get("image") or "") if isinstance(spec, dict) else ""
        lines.append(f"    `{escape(name)}` not built by edgebot: `{escape(tagged)}` pinned to "
                     f"`{short(pinned.rpartition('@')[2], 23)}`")
    return lines


def visibility_lines(release: Release) -> list[str]:
    """Who can see the version once published, when that is not the default (private by the definition)."""
    public = any(release.result(arch).definition.get("public") for arch in release.arches)
    if release.public is None and not public:
        return []
    source = "`--public`" if release.public else "`--private`" if release.public is False else "the definition"
    if public:
        return [f":globe_with_meridians: *public* (from {source}): every org of the Exchange can see and deploy it"]
    return [f"private (from {source}): only org `{escape(release.org)}` can see it"]


def service_policy_lines(release: Release) -> list[str]:
    """The service policy a publish PUTs with each arch (the same file for all; the built-in ``openhorizon.service.*``
    properties aside): its properties and constraints, as the approvers approve them."""
    policy = next((release.result(a).service_policy for a in release.arches if release.result(a).service_policy), None)
    if not policy:
        return []
    props = [p for p in policy.get("properties") or [] if not str(p.get("name", "")).startswith("openhorizon.service.")]
    shown = ", ".join(f"`{escape(str(p.get('name')))} = {escape(json.dumps(p.get('value')))}`" for p in props)
    constraints = ", ".join(f"`{escape(str(c))}`" for c in policy.get("constraints") or [])
    return [short_line(f"service policy · properties {shown or 'none'} · constraints {constraints or 'none'}")]


def short_line(text: str, limit: int = 900) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def smoke_lines(raw: dict[str, Any]) -> list[str]:
    """The smoke run of one arch's image on the card, under its digest: the command, its exit code, its last lines
    (from a build worker's report: bounded again here and escaped, in a code block that cannot close early)."""
    result = smoke.bounded(raw, smoke.LINES_MAX)
    if result is None:
        return []
    mark = ":white_check_mark:" if result.passed else ":x:"
    code = "killed at the timeout" if result.exit_code is None else f"exit {result.exit_code}"
    command = escape(short(result.command, 120)).replace("`", "'")
    head = f"    smoke run {mark} `{command}` {code}"
    tail = "\n".join(result.tail[-5:])
    return [head + ("\n" + preformatted(tail, 600) if tail else "")]
def decision_unconfirmed(release_id: str, *, approved: bool, wanted: int, timeout_ms: int) -> Message:
    """An approval or rejection written on the Redis master but not confirmed by ``wanted`` replicas in time
    (edgebot.durability): a failover now could lose it, so it is not reported as counted."""
    what = "approval" if approved else "rejection"
    text = (f":warning: Your {what} of `{release_id}` is written, but Redis did not confirm it on {wanted} replica(s) "
            f"within {timeout_ms} ms: if the data store fails over now it may be lost. Look at the card in a "
            f"moment: if your {what} is not on it, {'click Approve' if approved else 'reject'} again.")
    return Message(text=text, blocks=[section(text)])


def cluster_lines(res: ArchResult) -> list[str]:
    """The signed operator archive of a cluster service: its sha256 and size, and the images its YAMLs pin."""
    if not res.cluster_deployment:
        return []
    try:
        archive = base64.b64decode(json.loads(res.cluster_deployment)["operatorYamlArchive"])
    except (ValueError, KeyError, TypeError):
        return ["    :warning: clusterDeployment without a readable operator archive"]
    lines = [f"    cluster: operator archive `sha256:{short(hashlib.sha256(archive).hexdigest(), 16)}` "
             f"({len(archive)} bytes), signed as clusterDeploymentSignature"]
    for tag, pinned in sorted(res.cluster_pins.items()):
        lines.append(f"    cluster image `{escape(tag)}` pinned to `{short(pinned.rpartition('@')[2], 23)}`")
    try:
        names_own = bool(res.pinned_image) and res.pinned_image.encode() in gzip.decompress(archive)
    except (OSError, EOFError):
        names_own = False
    if names_own:
        digest = res.pinned_image.rpartition("@")[2]
        lines.append(f"    cluster image: the release image, pinned to `{short(digest, 23)}`")
    return lines
