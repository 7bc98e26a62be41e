"""Every user-facing text and Block Kit payload, built by small pure functions (snapshot-tested).

Each builder returns a :class:`Message`: the plain-text fallback (notifications, screen readers, clients without
Block Kit) and the blocks, kept within Slack's limits (50 blocks, 3,000 characters per text object).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from edgebot.release import (
    AWAITING_APPROVAL,
    BUILDING,
    CANCELLED,
    DONE,
    EXPIRED,
    FAILED,
    FAILED_STEP,
    PENDING,
    PUBLISHING,
    QUEUED,
    REJECTED,
    ROLLED_BACK,
    ROLLING_OUT,
    RUNNING,
    SKIPPED,
    STAGES,
    SUCCEEDED,
    Release,
    RolloutStatus,
    StageState,
)
from edgebot.smoke import SmokeResult

MAX_BLOCKS = 50
MAX_TEXT = 3000

PUBLISH_USAGE = (
    "/edge publish SERVICE VERSION --registry ALIAS [--arch amd64,arm64] [--org ORG] [--policy NAME] [--dry-run] "
    "[--overwrite] [--public | --private]"
)
HELP_USAGE = "/edge help [publish]"
STATUS_USAGE = "/edge status [RELEASE | SERVICE]"
HISTORY_USAGE = "/edge history SERVICE [--limit N]"
CANCEL_USAGE = "/edge cancel RELEASE"
ROLLOUT_USAGE = "/edge rollout SERVICE [VERSION]"
ROLLBACK_USAGE = "/edge rollback SERVICE [--to VERSION [--policy NAME] [--registry ALIAS]]"
DEPLOY_USAGE = "/edge deploy SERVICE VERSION [--policy NAME] [--registry ALIAS]"
VERIFY_USAGE = "/edge verify SERVICE VERSION [--org ORG]"

STATE_LABEL = {
    QUEUED: "queued",
    BUILDING: "building",
    AWAITING_APPROVAL: "waiting for approval",
    PUBLISHING: "publishing",
    ROLLING_OUT: "rolling out",
    SUCCEEDED: "published",
    FAILED: "failed",
    REJECTED: "rejected",
    EXPIRED: "expired",
    CANCELLED: "cancelled",
    ROLLED_BACK: "rolled back",
}
STATE_ICON = {
    QUEUED: ":inbox_tray:",
    BUILDING: ":hammer_and_wrench:",
    AWAITING_APPROVAL: ":raised_hand:",
    PUBLISHING: ":outbox_tray:",
    ROLLING_OUT: ":satellite_antenna:",
    SUCCEEDED: ":white_check_mark:",
    FAILED: ":x:",
    REJECTED: ":no_entry:",
    EXPIRED: ":hourglass:",
    CANCELLED: ":octagonal_sign:",
    ROLLED_BACK: ":leftwards_arrow_with_hook:",
}
STEP_ICON = {
    PENDING: ":white_circle:",
    RUNNING: ":hourglass_flowing_sand:",
    DONE: ":white_check_mark:",
    FAILED_STEP: ":x:",
    SKIPPED: ":heavy_minus_sign:",
}
STATUS_ACTION = "release_status"
CANCEL_ACTION = "release_cancel"
STAGE_TITLE = {"source": "Source", "build": "Build", "push": "Push", "sign": "Sign", "publish": "Publish"}


@dataclass(frozen=True)
class Message:
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def as_kwargs(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks}


# -- small helpers ---------------------------------------------------------------------------------------------

_LEADING_MENTION_RE = re.compile(r"^([a-z ]{0,40} by )&lt;(@[UW][A-Z0-9]{2,})&gt;")


def escape(text: str) -> str:
    """Untrusted text (build output, reasons, node errors, anything from a repository, registry, agent or user) for
    mrkdwn: ``&``, ``<`` and ``>`` escaped as Slack's docs say, so ``<!channel>`` or ``<https://x|click>`` is dead
    text that shows as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_keeping_mentions(text: str) -> str:
    """:func:`escape`, except the one user mention edgebot itself puts at the start of what it records ("cancelled
    by <@U…>", "rejected by <@U…>: <reason>"): every other ``<…>`` (a channel ping, a link, a mention inside the
    untrusted part) is dead text."""
    return _LEADING_MENTION_RE.sub(r"\1<\2>", escape(text), count=1)


def preformatted(text: str, limit: int = 2900) -> str:
    """Untrusted text as a code block that cannot close early (a ````` inside is broken up) and whose markup stays
    dead (escaped), cut to ``limit`` characters keeping the end."""
    return "```" + clip(escape(text).replace("```", "`\u200b`\u200b`"), limit) + "```"


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """Cut ``text`` to ``limit`` characters, saying so, keeping the end (log tails matter most at the end)."""
    if len(text) <= limit:
        return text
    marker = "…(cut)…\n"
    return marker + text[-(limit - len(marker)):]


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text)}}


def context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(t)} for t in texts[:10]]}


def limit_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    return blocks[: MAX_BLOCKS - 1] + [context(f"…{len(blocks) - MAX_BLOCKS + 1} more blocks not shown")]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} m {secs:02d} s"


def short(text: str, keep: int = 16) -> str:
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def state_label(release: Release) -> str:
    if release.dry_run and release.state == SUCCEEDED:
        return "dry run passed, nothing published"
    return STATE_LABEL.get(release.state, release.state)


def title(release: Release) -> str:
    if release.is_deploy:
        what = "rollback to" if release.kind == "rollback" else "deploy of"
        return f"{what} {release.service} {release.version} from the Exchange"
    return f"{release.service} {release.version} → {release.registry}"


# -- ephemeral answers to commands -------------------------------------------------------------------------------

def help_message(topic: str = "") -> Message:
    if topic == "publish":
        text = (
            f"*Publish a service version to the Exchange*\n`{PUBLISH_USAGE}`\n\n"
            "• `SERVICE` is a service of edgebot's catalog; `VERSION` is `1`, `1.2` or `1.2.3` (what the Exchange "
            "accepts).\n"
            "• `--registry ALIAS` picks a configured registry (`icr`, `ocp`, …).\n"
            "• `--arch a,b` builds only some of the service's arches (default: all of them).\n"
            "• `--org ORG` publishes to another org than the catalog's.\n"
            "• `--dry-run` runs every check and the build, but pushes and publishes nothing.\n"
            "• `--overwrite` replaces a version that is already published with different content "
            "(nodes running it will not re-pull it).\n"
            "• `--public` / `--private` override the definition's `public` (a public version is visible to every "
            "org; `--public` needs the `public` permission).\n\n"
            "Examples:\n`/edge publish hello 1.2.3 --registry icr`\n"
            "`/edge publish hello 1.2.4 --registry ocp --arch arm64 --dry-run`"
        )
        return Message(text=text, blocks=[section(text)])
    text = (
        "*edgebot* builds, pushes, signs and publishes edge services to the Horizon Exchange.\n"
        f"• `{PUBLISH_USAGE}`\n• `{STATUS_USAGE}`: active releases here, one release in detail, or the registry "
        "tokens nodes pull a service with\n"
        f"• `{HISTORY_USAGE}`: past releases of a service\n• `{CANCEL_USAGE}`: stop a release before it publishes\n"
        f"• `{ROLLOUT_USAGE}`: how far the fleet runs a version\n"
        f"• `{ROLLBACK_USAGE}`: put the policies/patterns of the last rollout back to the previous version (or, "
        "with `--to`, move them to an older published version)\n"
        f"• `{DEPLOY_USAGE}`: roll out a version already in the Exchange, without a build\n"
        f"• `{VERIFY_USAGE}`: check what the Exchange holds for a version, as nodes will meet it\n"
        f"• `{HELP_USAGE}`\n\n"
        "Everything about a release is reported in the thread of its message in this channel."
    )
    return Message(text=text, blocks=[section(text)])


def usage_error(problem: str, usage: str) -> Message:
    text = f":warning: {problem}\nUsage: `{usage}`" if usage else f":warning: {problem}"
    return Message(text=text, blocks=[section(text), context(f"`{HELP_USAGE}` explains the commands.")])


def not_in_channel(channel_id: str) -> Message:
    text = (
        f":warning: I can't post in <#{channel_id}>, so I did not queue anything. "
        "Invite me first: `/invite @edgebot`, then send the command again."
    )
    return Message(text=text, blocks=[section(text)])


def missing_scope(needed: str) -> Message:
    scope = f"`{escape(needed)}`" if needed else "the scope of this kind of conversation"
    text = (
        f":warning: Slack won't tell me about this conversation: the edgebot app lacks {scope}, so I did not queue "
        "anything. Ask a Slack admin to add it to the app (as in `deploy/slack-app-manifest.yml`) and reinstall it, "
        "or send the command from a channel I am in."
    )
    return Message(text=text, blocks=[section(text)])


def not_allowed(permission: str, service: str, org: str, holders: list[str]) -> Message:
    who = ", ".join(holders[:20]) or "nobody"
    text = (
        f":no_entry: You don't have the `{permission}` permission for `{service}` in org `{org}`, so nothing was "
        f"queued. It is granted to {who}: ask one of them, or a Slack admin to add you to the group."
    )
    if permission == "public":
        text += (" `--public` makes the version visible to every org of the Exchange; without it, the definition's "
                 "`public` applies.")
    return Message(text=text, blocks=[section(text)])


def queued_ack(release: Release) -> Message:
    text = f"Queued release `{release.release_id}` ({title(release)}); follow it in the thread below."
    return Message(text=text)


def duplicate_ack(release_id: str) -> Message:
    text = f"That command was just sent: it is release `{release_id}` already. Nothing new was queued."
    return Message(text=text)


def internal_error() -> Message:
    text = ":warning: Something went wrong on edgebot's side and nothing was queued. Try again in a minute."
    return Message(text=text)


# -- the thread --------------------------------------------------------------------------------------------------

def root_message(release: Release) -> Message:
    label = state_label(release)
    dry = " (dry run)" if release.dry_run else ""
    text = (
        f"{title(release)}{dry}, requested by <@{release.user_id}>: {label} · release {release.release_id}"
    )
    line = f"{STATE_ICON.get(release.state, '')} *{title(release)}*{dry}, requested by <@{release.user_id}>"
    facts = f"{label} · release `{release.release_id}` · org `{release.org}` · arches {', '.join(release.arches)}"
    if release.commit_sha:
        facts += f" · commit `{release.commit_sha[:12]}`"
    blocks = [section(line), context(facts)]
    if not release.is_final:
        blocks.append(root_buttons(release))
    return Message(text=text, blocks=blocks)


def root_buttons(release: Release) -> dict[str, Any]:
    """Status and Cancel on the root message while the release is active (both answer ephemerally)."""
    return {
        "type": "actions",
        "block_id": "release",
        "elements": [
            {"type": "button", "action_id": STATUS_ACTION, "value": release.release_id,
             "text": {"type": "plain_text", "text": "Status"}},
            {"type": "button", "action_id": CANCEL_ACTION, "value": release.release_id, "style": "danger",
             "text": {"type": "plain_text", "text": "Cancel"},
             "confirm": {"title": {"type": "plain_text", "text": "Cancel this release?"},
                         "text": {"type": "mrkdwn", "text": f"Stop {title(release)} before it is published."},
                         "confirm": {"type": "plain_text", "text": "Cancel release"},
                         "deny": {"type": "plain_text", "text": "Keep it"}}},
        ],
    }


def _step_line(name: str, step: StageState) -> str:
    bits = f"{STEP_ICON.get(step.status, '')} {name}"
    if step.status in (RUNNING, DONE, FAILED_STEP):
        bits += f" · {duration(step.elapsed)}"
    if step.note:
        bits += f" · {escape_keeping_mentions(step.note)}"
    return bits


def stage_message(release: Release, stage: str) -> Message:
    """The one progress message of a stage, edited in place as it moves."""
    step = release.stage(stage)
    heading = _step_line(f"*{STAGE_TITLE.get(stage, stage)}*", step)
    if stage == "source" and release.commit_sha:
        heading += f"\n`{release.source_ref}` → commit `{release.commit_sha}`"
    lines = [heading]
    for arch, arch_step in sorted(release.arch_steps.get(stage, {}).items()):
        lines.append(_step_line(f"`{arch}`", arch_step))
    text = "\n".join(lines)
    blocks = [section(text)]
    failed_arch = [a for a, s in release.arch_steps.get(stage, {}).items() if s.status == FAILED_STEP]
    for arch in failed_arch:
        tail = release.result(arch).log_tail
        if tail:
            blocks.append(section(f"`{arch}` log (last {len(tail)} lines):\n" + preformatted("\n".join(tail))))
    return Message(text=clip(text.replace("*", ""), 3900), blocks=limit_blocks(blocks))


def summary_message(release: Release) -> Message:
    """The final word in the thread: per arch what shipped, and for whom."""
    mention = f"<@{release.user_id}>"
    label = STATE_LABEL.get(release.state, release.state)
    if release.state == SUCCEEDED and release.dry_run:
        head = (
            f"{STATE_ICON[SUCCEEDED]} {mention} dry run of *{title(release)}* passed: nothing was pushed or published."
        )
    elif release.state == SUCCEEDED and release.is_deploy:
        head = f"{STATE_ICON[SUCCEEDED]} {mention} *{title(release)}* is rolled out in org `{release.org}`."
    elif release.state == SUCCEEDED:
        head = f"{STATE_ICON[SUCCEEDED]} {mention} *{title(release)}* is published to org `{release.org}`."
    else:
        why = escape_keeping_mentions(release.error or label)
        head = f"{STATE_ICON.get(release.state, '')} {mention} *{title(release)}* {label}: {why}."
    blocks: list[dict[str, Any]] = [section(head)]
    text_lines = [head.replace("*", "")]
    if release.error_detail:
        blocks.append(section(preformatted("\n".join(release.error_detail))))
    for arch in release.arches:
        result = release.results.get(arch)
        if result is None or not (result.pinned_image or result.image_tag or result.service_id):
            continue
        lines = [f"*{arch}*"]
        if result.pinned_image or result.image_tag:
            lines.append(f"image `{result.pinned_image or result.image_tag}`")
        if result.service_id:
            action = f" ({result.publish_action})" if result.publish_action else ""
            lines.append(f"service `{release.org}/{escape(result.service_id)}`{action}")  # from the definition's url
        if result.signature:
            lines.append(
                f"signature `{short(result.signature, 24)}` · fingerprint `{short(result.signature_fingerprint, 23)}`"
            )
        arch_timings = [
            f"{stage} {duration(step.elapsed)}"
            for stage in ("build", "push")
            if (step := release.arch_steps.get(stage, {}).get(arch)) and step.ended_at
        ]
        if arch_timings:
            lines.append(" · ".join(arch_timings))
        blocks.append(section("\n".join(lines)))
        text_lines.append(" · ".join(line.replace("*", "") for line in lines))
    state_lines = exchange_state_lines(release)
    if state_lines:  # a failed publish: exactly what is (and is not) in the Exchange, never the success claim
        blocks.append(section("\n".join(state_lines)))
        text_lines.extend(line.replace("*", "") for line in state_lines)
    elif release.key_name and release.is_deploy:
        key_line = (f"nothing built: the signatures verify with key(s) `{escape(release.key_name)}` stored with the "
                    "service")
        blocks.append(context(key_line))
        text_lines.append(key_line)
    elif release.key_name and (published := release.stages.get("publish")) is not None and published.status == DONE:
        key_fp = short(release.public_key_fingerprint, 23)
        key_line = f"key `{release.key_name}` in the Exchange · public key fingerprint `{key_fp}`"
        blocks.append(context(key_line))
        text_lines.append(key_line)
    timings = [
        f"{STAGE_TITLE.get(name, name)} {duration(step.elapsed)}"
        for name in STAGES
        if (step := release.stages.get(name)) is not None and step.status in (DONE, FAILED_STEP)
    ]
    if timings:
        total = (release.ended_at or time.time()) - release.created_at
        blocks.append(context(" · ".join(timings) + f" · total {duration(total)}"))
    if release.rollout:
        blocks.append(context("\n".join(rollout_summary_lines(release))))
    for note in release.notes:
        blocks.append(context(escape(note)))
    return Message(text=clip("\n".join(text_lines), 3900), blocks=limit_blocks(blocks))


# -- status and history ----------------------------------------------------------------------------------------

def when(ts: float | None) -> str:
    return f"<!date^{int(ts)}^{{date_short_pretty}} {{time}}|{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(ts))}>" \
        if ts else "–"


def _current_stage(release: Release) -> str:
    running = [name for name in STAGES if release.stages.get(name) and release.stages[name].status == RUNNING]
    return running[0] if running else ""


def status_list(channel_id: str, releases: list[Release]) -> Message:
    if not releases:
        text = f"No active releases in <#{channel_id}>."
        return Message(text=text, blocks=[section(text)])
    lines = [f"*Active releases in <#{channel_id}>*"]
    for r in releases[:40]:
        stage = _current_stage(r)
        lines.append(
            f"{STATE_ICON.get(r.state, '')} `{r.release_id}` {title(r)} · {state_label(r)}"
            + (f" ({stage})" if stage else "") + f" · <@{r.user_id}> · since {when(r.created_at)}"
        )
    text = "\n".join(lines)
    return Message(text=clip(text.replace("*", ""), 3900), blocks=[section(text)])


def _approved_by(release: Release) -> str:
    given = release.approval.approvals() if release.approval else []
    return ", ".join(f"<@{d.user_id}>" for d in given)


def status_detail(release: Release, permalink: str = "") -> Message:
    """One release in detail; ``permalink``: the thread's link (``chat.getPermalink`` of the root), if known."""
    label = state_label(release)
    stage = _current_stage(release)
    lines = [
        f"{STATE_ICON.get(release.state, '')} *{title(release)}* · release `{release.release_id}`",
        f"state: {label}" + (f" (stage: {stage})" if stage else "")
        + (f" — {escape_keeping_mentions(release.error)}" if release.error else ""),
        f"requested by <@{release.user_id}> {when(release.created_at)} in <#{release.channel_id}> · "
        f"org `{release.org}` · arches {', '.join(release.arches)}" + (" · dry run" if release.dry_run else ""),
    ]
    if release.commit_sha:
        lines.append(f"commit `{release.commit_sha}` ({release.source_ref})")
    for arch in release.arches:
        result = release.results.get(arch)
        if result and (result.pinned_image or result.image_tag):
            lines.append(f"`{arch}`: `{result.pinned_image or result.image_tag}`"
                         + (f" → `{release.org}/{escape(result.service_id)}`" if result.service_id else ""))
    approval = release.approval
    if approval is not None:
        given = len(approval.approvals())
        rejected = [d for d in approval.decisions if d.outcome == "rejected"]
        lines.append(f"approvals {given} of {approval.required}"
                     + (f": {_approved_by(release)}" if given else "")
                     + (f" · rejected by <@{rejected[-1].user_id}>: {escape(rejected[-1].reason)}" if rejected else ""))
    for step in release.rollout:
        counts = step.counts
        lines.append(f"rollout {step.name}: {ROLLOUT_LABEL.get(step.status, step.status)}" + (
            f" · new {counts.get('new', 0)} · old {counts.get('old', 0)} · failing {counts.get('failing', 0)} · "
            f"offline {counts.get('offline', 0)}" if counts else ""))
    if permalink:
        lines.append(f"<{permalink}|thread>")
    text = "\n".join(lines)
    return Message(text=clip(text.replace("*", ""), 3900), blocks=[section(clip(text))])


def history_message(service: str, org: str, releases: list[Release], elsewhere: int = 0) -> Message:
    """``releases``: those of the channel asking; ``elsewhere``: how many more were requested in other channels
    (counted, never shown: a private channel's releases stay there)."""
    others = (f"{elsewhere} other release(s) of `{service}` were requested in other channels; ask there to see them."
              if elsewhere else "")
    if not releases:
        text = f"No releases of `{service}` in org `{org}` yet." if not elsewhere else \
            f"No releases of `{service}` in org `{org}` were requested in this channel. {others}"
        return Message(text=text, blocks=[section(text)])
    lines = [f"*Releases of `{service}`* (org `{org}`, newest first)"]
    for r in releases:
        took = duration((r.ended_at - r.created_at) if r.ended_at else None)
        digests = ", ".join(
            f"{arch} `{res.digest[7:19]}`" for arch, res in sorted(r.results.items()) if res.digest
        )
        approved = _approved_by(r)
        lines.append(
            f"{STATE_ICON.get(r.state, '')} `{r.version}` · `{r.release_id}` · {state_label(r)}"
            f" · <@{r.user_id}>" + (f", approved by {approved}" if approved else "")
            + f" · {when(r.created_at)} · {took}" + (f" · {digests}" if digests else "")
        )
    if others:
        lines.append(others)
    text = "\n".join(lines)
    return Message(text=clip(text.replace("*", ""), 3900), blocks=[section(text)])


def unknown_release(release_id: str) -> Message:
    return usage_error(f"There is no release `{release_id}`, or it is older than the kept history.", STATUS_USAGE)


def cancel_refused(release: Release) -> Message:
    if release.state == SUCCEEDED and not release.dry_run:
        text = (f":warning: `{release.release_id}` ({title(release)}) is already published, so it cannot be "
                "cancelled. Publish the previous version again, or roll back, to move nodes off it.")
    else:
        text = f":warning: `{release.release_id}` already ended ({state_label(release)}); there is nothing to cancel."
    return Message(text=text, blocks=[section(text)])


def release_elsewhere(release_id: str) -> Message:
    """`/edge status RELEASE` (or a Status button) outside the channel the release was requested in: no details."""
    text = (f":lock: Release `{release_id}` was not requested in this channel, so I show it only there: ask "
            "in the channel its thread is in.")
    return Message(text=text, blocks=[section(text)])


def cancel_too_late(release: Release) -> Message:
    """`/edge cancel` from ``publishing`` on: stopping would leave the Exchange and the fleet half moved."""
    text = (f":warning: `{release.release_id}` ({title(release)}) is {state_label(release)}: cancelling it now would "
            "leave the Exchange and the fleet half moved, so it goes on. To move the fleet back once it has rolled "
            f"out, roll back: `/edge rollback {release.service}`.")
    return Message(text=text, blocks=[section(text)])


def cancelled_ack(release: Release, stopped_jobs: int, removed_jobs: int) -> Message:
    what = []
    if removed_jobs:
        what.append(f"{removed_jobs} queued step(s) removed")
    if stopped_jobs:
        what.append(f"{stopped_jobs} running step(s) stopped")
    text = f"Cancelled `{release.release_id}` ({title(release)})" + (f": {', '.join(what)}." if what else ".")
    return Message(text=text)


# -- rollout -----------------------------------------------------------------------------------------------------

ROLLOUT_ICON: dict[str, str] = {
    RolloutStatus.PENDING: ":white_circle:",
    RolloutStatus.RUNNING: ":satellite_antenna:",
    RolloutStatus.HEALTHY: ":white_check_mark:",
    RolloutStatus.FAILED: ":x:",
    RolloutStatus.TIMED_OUT: ":hourglass:",
    RolloutStatus.ROLLED_BACK: ":leftwards_arrow_with_hook:",
}
ROLLOUT_LABEL: dict[str, str] = {RolloutStatus.PENDING: "waiting", RolloutStatus.RUNNING: "rolling out",
                 RolloutStatus.HEALTHY: "healthy", RolloutStatus.FAILED: "failed", RolloutStatus.TIMED_OUT: "timed out",
                 RolloutStatus.ROLLED_BACK: "rolled back"}


def rollout_counts_line(counts: dict[str, int], version: str) -> str:
    """``[████░░] 40%  4 of 10 online nodes run 1.1.0`` and the per-bucket counts, for thread and /edge rollout."""
    from edgebot.fleet_summary import progress_bar

    online = counts.get("total", 0) - counts.get("offline", 0)
    bar = progress_bar(counts.get("new", 0), online)
    return (f"`{bar}` {counts.get('new', 0)} of {online} online node(s) run {version}\n"
            f"new {counts.get('new', 0)} · "
            + (f"starting {counts['starting']} · " if counts.get("starting") else "")  # pulling: not failing
            + f"old {counts.get('old', 0)} · failing {counts.get('failing', 0)} · "
            f"offline {counts.get('offline', 0)} · waiting {counts.get('waiting', 0)}")


def rollout_summary_lines(release: Release) -> list[str]:
    """One line per rollout stage for the final summary."""
    lines = []
    for stage in release.rollout:
        counts = stage.counts
        label = ROLLOUT_LABEL.get(stage.status, stage.status)
        line = f"{ROLLOUT_ICON.get(stage.status, '')} rollout {stage.name}: {label}"
        if counts:
            online = counts.get("total", 0) - counts.get("offline", 0)
            line += (f" · {counts.get('new', 0)}/{online} online node(s) on {release.version}, "
                     f"{counts.get('failing', 0)} failing, {counts.get('offline', 0)} offline")
        lines.append(line)
    return lines


# -- locks and crash recovery ------------------------------------------------------------------------------------

def _step_label(step: str) -> str:
    """``build-amd64`` → ``build (amd64)``, ``publish-round-2`` → ``publish (round 2)``; others as they are."""
    stage, _, arch = step.partition("-")
    if arch.startswith("round-"):
        return f"{stage} (round {arch.removeprefix('round-')})"
    return f"{stage} ({arch})" if arch else stage


def publish_locked(holder: Release) -> Message:
    text = (
        f":lock: `{holder.service}` in org `{holder.org}` is being published by <@{holder.user_id}>: release "
        f"`{holder.release_id}` ({holder.version}, {STATE_LABEL.get(holder.state, holder.state)}) since "
        f"{when(holder.created_at)}. Only one release of a service publishes at a time, so nothing was queued. "
        f"Send the command again when it has ended (`/edge status {holder.release_id}`), or cancel it with "
        f"`/edge cancel {holder.release_id}`."
    )
    return Message(text=text, blocks=[section(text)])


def resumed_note(step: str, attempt: int) -> str:
    return f":repeat: {_step_label(step)} resumed (attempt {attempt}) after the worker running it stopped."


def resumed_message(step: str, attempt: int, reused: list[str]) -> Message:
    kept = ("; reusing " + ", ".join(reused)) if reused else ""
    text = (
        f":repeat: Resumed *{_step_label(step)}* (attempt {attempt}): the worker running it stopped responding, so "
        f"another worker continues from the last completed step{kept}."
    )
    return Message(text=text, blocks=[section(text)])


# -- what a failed publish left in the Exchange ------------------------------------------------------------------

def exchange_state_lines(release: Release) -> list[str]:
    """Per arch, after a failed publish (``ArchResult.exchange_state``, written by ``workers/unpublish.py``): what
    edgebot removed, what it left and why, and what is missing from a version that stays. Empty when none."""
    if not any(release.results.get(a) and release.results[a].exchange_state for a in release.arches):
        return []
    org = release.org
    lines = [f"*In the Exchange (org `{org}`) after the failed publish:*"]
    for arch in release.arches:
        result = release.results.get(arch)
        state = result.exchange_state if result else {}
        sid = escape(str(state.get("service_id") or "")) or "(no service id)"
        where = f"`{org}/{sid}`"
        service = state.get("service")
        if service == "unknown":
            lines.append(f"• {arch}: {where} could not be checked ({escape(str(state.get('error', '')))}): check it "
                         f"with `hzn exchange service list {org}/{sid}`; if this release created it, remove it with "
                         f"`hzn exchange service remove {org}/{sid}`")
        elif service == "absent" and state.get("undone"):
            lines.append(f"• {arch}: {where} removed: this release had created it (with its key and dockauths)")
        elif service == "absent":
            lines.append(f"• {arch}: {where} is not in the Exchange")
        elif state.get("origin") == "created":
            lines.append(f"• {arch}: {where} was created by this release and could not be removed: remove it with "
                         f"`hzn exchange service remove {org}/{sid}`")
        else:
            lines.append(f"• {arch}: {where} {_kept_how(state)}: {_parts_text(state)}")
    return lines


def _kept_how(state: dict[str, Any]) -> str:
    if state.get("origin") == "overwritten":
        return ("now holds this release's content (--overwrite replaced the earlier version, which cannot be put "
                "back); kept")
    if state.get("content") == "this release":
        return "was already published before this release, with the same content; kept unchanged"
    return "was already published before this release; kept unchanged"


def _parts_text(state: dict[str, Any]) -> str:
    key = escape(str(state.get("key", "")))
    parts = [f"key `{key}` {'present' if state.get('key_present') else 'missing'}"]
    registries = [escape(str(r)) for r in state.get("dockauths", []) if r]
    parts.append("dockauths for " + ", ".join(f"`{r}`" for r in registries) if registries else "no dockauth")
    missing = not state.get("key_present")
    tail = " — publish again (with --overwrite if its content differs) to add what is missing" if missing else ""
    return " · ".join(parts) + tail


# -- smoke run per arch (issue 14, edgebot.smoke) ------------------------------------------------------------------

def smoke_failed(service: str, arch: str, result: SmokeResult) -> str:
    """A release's error when the smoke run of its ``arch`` image failed (its last lines are the error's detail).
    Plain text: the summary escapes it where it is shown."""
    how = (f"was killed at its {result.timeout:g} s timeout" if result.exit_code is None
           else f"exited with code {result.exit_code}")
    return (f"the smoke run of the {arch} image failed, so it was not pushed: `{result.command}` {how} (its last "
            "output lines are below). Fix the image, or the command or timeout in the catalog's "
            f"[services.{service}.smoke], then publish again")


def smoke_not_started(arch: str, command: str, reason: str) -> str:
    """A release's error when the Engine would not run the smoke command in the built ``arch`` image."""
    return (f"the smoke run of the {arch} image could not start, so it was not pushed: `{command}`: {reason}. Check "
            "that the command's program exists in the image (it runs without a shell), then publish again")
def not_durable(release_id: str, *, wanted: int, timeout_ms: int, withdrawn: bool) -> Message:
    """The intake's write was not confirmed by ``wanted`` Redis replicas in time (edgebot.durability): never "queued".
    ``withdrawn``: the withdrawal is confirmed, so it certainly will not run."""
    head = (f":warning: Not queued: Redis did not confirm the request on {wanted} replica(s) within {timeout_ms} ms "
            "(the data store is failing over or a replica is down), so I cannot promise it would survive.")
    if withdrawn:
        tail = f" Release `{release_id}` was withdrawn and will not run. Send the command again in a moment."
    else:
        tail = (f" I withdrew release `{release_id}`, but Redis did not confirm that either: if Redis fails over "
                f"right now it might still run. Check `/edge status {release_id}` before sending the command again.")
    text = head + tail
    return Message(text=text, blocks=[section(text)])


def rollback_unconfirmed(release_id: str, *, wanted: int, timeout_ms: int, requested: bool) -> Message:
    """A rollback (or its approval request) written on the Redis master but not confirmed by ``wanted`` replicas in
    time (edgebot.durability): a failover now could lose it, so it is not reported as under way."""
    what = "rollback request" if requested else "rollback"
    text = (f":warning: The {what} of release `{release_id}` is written, but Redis did not confirm it on {wanted} "
            f"replica(s) within {timeout_ms} ms: if the data store fails over now it may be lost. Watch the "
            "release's thread: if nothing shows up in a minute, send `/edge rollback` again (while the first one is "
            "queued, a second one changes nothing).")
    return Message(text=text, blocks=[section(text)])


# -- a build you can watch (issue 14, workers/build_log.py) ------------------------------------------------------

def build_progress_note(step: int, total: int) -> str:
    """The running build's place, on its arch's line of the build stage message (``⏳ amd64 · 42.0 s · step 3/7``)."""
    return f"step {step}/{total}"


def is_build_progress_note(note: str) -> bool:
    return re.fullmatch(r"step \d+/\d+", note) is not None


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def build_log_filename(service: str, version: str, arch: str) -> str:
    """The name of an arch's build log file in the thread: ``hello-1.2.3-arm64-build.log``."""
    return f"{_file_safe(service)}-{_file_safe(version)}-{_file_safe(arch)}-build.log"


def build_log_title(service: str, version: str, arch: str) -> str:
    return f"Build log of {service} {version} ({arch})"


def build_log_comment(arch: str, *, failed: bool, size: int) -> str:
    """The comment posted with an arch's build log (Slack's files.completeUploadExternal ``initial_comment``)."""
    how = "failed" if failed else "built"
    kib = max(1, round(size / 1024))
    return (f":page_facing_up: The full build log of `{arch}` ({how}, {kib} KiB, secrets scrubbed); a log over the "
            "build_log_max_bytes setting keeps its start and end.")


def build_log_not_attached(arch: str, why: str) -> Message:
    """In the thread when Slack refused the build log's upload (the release goes on)."""
    hint = {"missing_scope": "the Slack app needs the `files:write` scope: reinstall it from "
                             "deploy/slack-app-manifest.yml",
            "not_in_channel": "invite the bot to the channel"}.get(why, "the next release tries again")
    text = (f":warning: The build log of `{escape(arch)}` could not be attached: Slack answered "
            f"`{escape(why[:60])}`; {hint}. The release is not affected.")
    return Message(text=clip(text, 3900), blocks=[context(text)])
