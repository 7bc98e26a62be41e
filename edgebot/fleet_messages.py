"""What users read about the fleet and the Exchange beyond a release's own progress: rollout stages and the
rollout view, deploys and rollbacks, rollout halts, registry tokens stored for nodes (dockauths), and `verify`
reports. Pure functions, snapshot-tested like ``edgebot.messages``, whose building blocks they use.
"""

from __future__ import annotations

import time
from typing import Any

from edgebot.messages import (
    ROLLOUT_ICON,
    ROLLOUT_LABEL,
    STATE_LABEL,
    Message,
    clip,
    context,
    duration,
    escape,
    escape_keeping_mentions,
    limit_blocks,
    rollout_counts_line,
    section,
    short,
    title,
    when,
)
from edgebot.release import Release, RolloutStatus

# -- rollout, deploy, rollback --------------------------------------------------------------------------------------


def rollout_stage_message(release: Release, index: int) -> Message:
    """One rollout stage's progress message, edited in place at every poll."""
    stage = release.rollout[index]
    icon = ROLLOUT_ICON.get(stage.status, "")
    label = ROLLOUT_LABEL.get(stage.status, stage.status)
    heading = f"{icon} *Rollout · {stage.name}* ({index + 1}/{len(release.rollout)}) {label}"
    if stage.elapsed is not None:
        heading += f" · {duration(stage.elapsed)}"
    lines = [heading]
    if stage.counts:
        lines.append(rollout_counts_line(stage.counts, release.version))
    else:
        lines.append("waiting for the first node report…" if stage.status == RolloutStatus.RUNNING else "not started")
    for target in stage.targets:
        fallback = ", ".join(sorted(set(target.get("previous", {}).values())))
        lines.append(f"{target['kind']} `{target['name']}`" + (f" · previous {fallback}" if fallback else ""))
    if stage.note:
        lines.append(f"_{escape_keeping_mentions(stage.note)}_")
    text = "\n".join(lines)
    blocks = [section(text)]
    problems = [escape(p) for p in stage.problems]  # node errors come from agents
    if problems:
        blocks.append(section("*Failing nodes*\n" + clip("\n".join(f"• {p}" for p in problems), 2900)))
    plain = text.replace("*", "") + ("\n" + "\n".join(problems) if problems else "")
    return Message(text=clip(plain, 3900), blocks=limit_blocks(blocks))


def rollout_state_message(service: str, release: Release | None, version: str,
                          stages: list[tuple[str, str, dict[str, int]]], *, live: bool) -> Message:
    """`/edge rollout SERVICE [VERSION]`: per stage of the service's last rollout, how many nodes run ``version``.

    ``stages`` holds (stage name, status, counts); ``live`` says the counts come from this poll interval's
    node-details rather than from the release record's last poll.
    """
    if release is None:
        text = (f"`{service}` has not been rolled out yet: its rollout stages start after the next "
                f"`/edge publish {service} VERSION --registry ALIAS`.")
        return Message(text=text, blocks=[section(text)])
    head = (f"*{service} {version}* in org `{release.org}` · last rollout: release `{release.release_id}` "
            f"({release.version}, {STATE_LABEL.get(release.state, release.state)})")
    lines = [head]
    for name, status, counts in stages:
        line = f"{ROLLOUT_ICON.get(status, '')} *{name}* {ROLLOUT_LABEL.get(status, status)}"
        lines.append(line + ("\n" + rollout_counts_line(counts, version) if counts else " · no node data"))
    source = ("live: the node-details an active rollout read in this poll interval" if live else
              f"as of the rollout's last poll ({when(release.updated_at)})")
    text = "\n".join(lines)
    return Message(text=clip(text.replace("*", "") + "\n" + source, 3900),
                   blocks=limit_blocks([section(clip(text)), context(source)]))


def rollback_ack(release: Release, queued: bool) -> Message:
    moved = sorted({f"{t['kind']} `{t['name']}`" for s in release.rollout for t in s.targets})
    if not queued:
        text = f"A rollback of release `{release.release_id}` is already under way; its thread will show it."
    else:
        text = (f"Rolling back *{title(release)}* (release `{release.release_id}`): {', '.join(moved)} will pin the "
                "versions they pinned before it. The release's thread shows the result.")
    return Message(text=text.replace("*", ""), blocks=[section(text)])


def deploy_checked(release: Release, keys: dict[str, str]) -> Message:
    """The thread of a deploy, once every covered arch's service was read from the Exchange and verified."""
    lines = [f":mag: *{release.service} {release.version}* is in the Exchange (org `{release.org}`), nothing to build:"]
    for arch in release.arches:
        res = release.results.get(arch)
        if res is None or not res.service_id:
            lines.append(f"`{arch}` not published (no policy or pattern of the rollout deploys it)")
            continue
        lines.append(f"`{arch}` service `{escape(res.service_id)}` · signature `{short(res.signature_fingerprint, 23)}`"
                     f" verifies with key `{escape(keys.get(arch, ''))}` stored with the service")
    text = "\n".join(lines)
    return Message(text=text.replace("*", ""), blocks=[section(text)])


def deploy_queued_ack(release: Release) -> Message:
    moves = ", ".join(f"`{p}`" for p in release.rollout_only) or "the rollout stages of the catalog"
    text = (f"Queued release `{release.release_id}` ({title(release)}): edgebot checks that every arch the rollout "
            f"covers is in the Exchange and signed by a key stored with the service, then moves {moves} to "
            f"{release.version}. Follow it in the thread below.")
    return Message(text=text)


def rollback_refused_alert(problem_text: str) -> Message:
    """The rollback job found a request it cannot verify (a forged quorum, say): the fleet stays where it is."""
    text = escape_keeping_mentions(problem_text)
    return Message(text=text.replace("*", ""), blocks=[section(text)])


def rollout_constraints_unreadable(stage: str, detail: str) -> str:
    """A stage halts: a node's (or a policy's) constraints cannot be read, so which nodes it reaches is unknown."""
    return (f"rollout stage {stage} halted: {detail}. Which nodes the stage reaches cannot be known, and edgebot does "
            "not guess: fix the constraints (`hzn policy update` on the node for a node policy, `hzn exchange "
            "deployment updatepolicy` for a deployment policy), then publish again")


def node_details_unreadable(org: str, detail: str) -> str:
    """A stage halts: the Exchange's node-details answer is not a list of nodes (a proxy page, another API)."""
    return (f"rollout halted: the Exchange's node-details answer for org {org} could not be read ({detail}). "
            "Nothing was moved on its account: check that `exchange.url` is the Exchange API (it ends in `/v1`) "
            "and that no proxy answers in its place, then start it again with `/edge deploy SERVICE VERSION`")


def rollout_node_constraints_refuse(policy: str, constraints: list[str], names: list[str]) -> str:
    """Diagnosis line: nodes whose own constraints refuse a policy whose constraints they meet."""
    shown = ", ".join(sorted(names)[:10]) + (", …" if len(names) > 10 else "")
    return (f"{len(names)} node(s) left out of the stage: the node's constraints refuse the policy `{policy}` "
            f"({' AND '.join(constraints) or 'none'} does not hold on the policy's and service policy's properties); "
            f"the agreement bot makes no agreement there and their agents report nothing ({shown})")


def rollout_refused_constraints_unreadable(detail: str) -> str:
    """A rollout refused before anything moved: a node's (or a service policy's) constraints cannot be read."""
    return (f"rollout refused, nothing was moved: {detail}. Which nodes the rollout reaches cannot be known, and "
            "edgebot does not guess: fix the constraints (`hzn policy update` on the node for a node policy, `hzn "
            "exchange service addpolicy` for a service policy), then publish again")


# -- registry tokens stored for nodes (dockauths) -------------------------------------------------------------------


def expiry_text(expires_at: float | None, now: float | None = None) -> str:
    """``expires 2026-12-20 10:00 UTC (in 12 days)`` / ``expired …`` / ``no expiry``: plain text (CLI and Slack)."""
    if expires_at is None:
        return "no expiry"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires_at))
    if now is None:
        return f"expires {when}"
    left = expires_at - now
    return f"expired {when}" if left <= 0 else f"expires {when} (in {remaining(left)})"


def remaining(seconds: float) -> str:
    """A time left, in the largest unit that keeps two of it: ``12 days``, ``5 hours``, ``40 minutes``."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(1, round(seconds / 60))} minutes"


def dockauth_fix(service: str, org: str) -> str:
    return (f"put a new pull token where the registry's `pull_password` points (OpenShift: `oc create token …`), "
            f"then run `edgebot dockauth refresh {service} --org {org}` on a publish worker host")


def _dockauth_lines(records: list[Any], now: float) -> list[str]:
    return [f"• `{escape(r.service)}` {escape(r.version)} ({escape(r.arch)}) · registry `{escape(r.registry)}` "
            f"(user {escape(r.username)}) · {expiry_text(r.expires_at, now)}" for r in records]


def dockauth_expiry_warning(service: str, org: str, records: list[Any], *, now: float) -> Message:
    """The daily check's warning in the service's channel: nodes of these deployed versions stop pulling then."""
    head = (f":warning: Registry tokens that nodes pull *{escape(service)}* with (dockauths in org `{escape(org)}`) "
            "expire soon: after that, nodes can no longer pull these deployed versions.")
    lines = _dockauth_lines(records, now)
    fix = f"Fix: {dockauth_fix(escape(service), escape(org))}."
    blocks = [section(head), section("\n".join(lines)), context(fix)]
    return Message(text=clip("\n".join([head.replace("*", ""), *lines, fix]), 3900), blocks=limit_blocks(blocks))


def dockauth_status(service: str, org: str, records: list[Any], *, now: float, window: float) -> Message:
    """``/edge status SERVICE``: the recorded dockauth expiries of the service (the bot holds no Exchange
    credential: what the publish worker and the daily check recorded), with the warning for those expiring soon."""
    soon = [r for r in records if r.expires_at is not None and r.expires_at - now <= window]
    if not records:
        text = (f"*{escape(service)}* (org `{escape(org)}`): edgebot has recorded no dockauth for it (none published "
                "by edgebot yet, or its registry has no pull credential).")
        return Message(text=text.replace("*", ""), blocks=[section(text)])
    head = f"*{escape(service)}* (org `{escape(org)}`): registry tokens stored for nodes (dockauths)"
    lines = _dockauth_lines(records, now)
    blocks = [section(head), section("\n".join(lines))]
    text_lines = [head.replace("*", ""), *lines]
    if soon:
        warn = (f":warning: {len(soon)} of them expire within {remaining(window)}: nodes will no longer pull those "
                f"versions. Fix: {dockauth_fix(escape(service), escape(org))}.")
        blocks.append(section(warn))
        text_lines.append(warn)
    return Message(text=clip("\n".join(text_lines), 3900), blocks=limit_blocks(blocks))


def dockauth_refresh_line(outcome: str, where: str, *, alias: str = "", username: str = "",
                          expires_at: float | None = None, was: float | None = None, now: float | None = None) -> str:
    """One line of ``edgebot dockauth refresh`` (never a token)."""
    if outcome == "replaced":
        return (f"replaced {where}: now the pull credential of `{alias}` (user {username}, "
                f"{expiry_text(expires_at, now)}); was {expiry_text(was, now)}")
    if outcome == "unchanged":
        return f"unchanged {where}: already the current pull credential of `{alias}` ({expiry_text(expires_at, now)})"
    return f"skipped {where}: no registry alias with a pull credential has this host"


# -- verify: what is in the Exchange, per arch ----------------------------------------------------------------------


_VERIFY_OK = {
    "service": "service `{subject}` is in the Exchange",
    "signature": "signature verifies with stored key `{subject}`",
    "image": "image `{subject}` is pinned, in its registry, for {arch}",
    "dockauth": "nodes have a dockauth for `{subject}`",
    "policy": "service policy is present",
    "dependency": "dependency {subject} is published",
}


_VERIFY_BAD = {
    "service": "service `{subject}` {detail}",
    "signature": "signature {detail}",
    "image": "image `{subject}` {detail}",
    "dockauth": "`{subject}`: {detail}",
    "policy": "service policy {detail}",
    "dependency": "dependency {subject}: {detail}",
}


def verify_line(arch: str, check: dict[str, Any]) -> str:
    """One finding of ``workers.verify`` (a ``Check.as_dict()``) as a line of the report."""
    kind, ok = str(check.get("kind")), bool(check.get("ok"))
    template = (_VERIFY_OK if ok else _VERIFY_BAD).get(kind, "{subject}: {detail}")
    line = template.format(subject=escape(str(check.get("subject") or "")),
                           detail=escape(str(check.get("detail") or "")), arch=arch)
    if ok and kind == "dockauth" and check.get("detail") == "anonymous":
        line = f"`{escape(str(check.get('subject')))}` is pulled anonymously (edgebot has no pull credential for it)"
    return f"{':white_check_mark:' if ok else ':x:'} {line}"


def verify_report(service: str, version: str, org: str, arches: dict[str, dict[str, Any]]) -> Message:
    """`/edge verify` and `edgebot verify`: per arch, every finding; a verdict first."""
    bad = sorted(arch for arch, a in arches.items() if not all(c.get("ok") for c in a.get("checks") or []))
    verdict = (f":x: *{escape(service)} {escape(version)}* in org `{escape(org)}` does not verify for "
               + ", ".join(f"`{a}`" for a in bad)) if bad or not arches else (
        f":white_check_mark: *{escape(service)} {escape(version)}* in org `{escape(org)}` verifies for "
        + ", ".join(f"`{a}`" for a in sorted(arches)))
    if not arches:
        verdict += ": no arch to check"
    blocks = [section(verdict)]
    lines = [verdict]
    for arch, found in sorted(arches.items()):
        body = "\n".join(verify_line(arch, c) for c in found.get("checks") or [])
        lines.append(f"{arch}:\n{body}")
        blocks.append(section(clip(f"*{arch}*\n{body}")))
    text = "\n".join(lines)
    return Message(text=clip(text.replace("*", "")), blocks=limit_blocks(blocks))


def verify_note(arches: dict[str, dict[str, Any]]) -> str:
    """The summary's note after a publish: everything verified, or the problems per arch."""
    problems = [f"`{arch}`: " + verify_line(arch, c).removeprefix(":x: ")
                for arch, found in sorted(arches.items()) for c in found.get("checks") or [] if not c.get("ok")]
    if not problems:
        return (":mag: Verified in the Exchange for " + ", ".join(f"`{a}`" for a in sorted(arches))
                + ": signatures, pinned images in their registries, dockauths, service policy, dependencies.")
    return ":warning: Verification after publish found problems: " + "; ".join(problems)


def verify_queued(service: str, version: str, org: str) -> Message:
    text = (f":mag: Verifying *{escape(service)} {escape(version)}* in org `{escape(org)}`: a worker reads it back "
            "from the Exchange and the registries and posts the report in this channel.")
    return Message(text=text.replace("*", ""), blocks=[section(text)])


def verify_failed(service: str, version: str, org: str, problem: str) -> Message:
    """`/edge verify` could not check the version (not in the source, the Exchange unreachable)."""
    text = f":x: Could not verify *{escape(service)} {escape(version)}* in org `{escape(org)}`: {escape(problem)}"
    return Message(text=clip(text.replace("*", "")), blocks=[section(clip(text))])
