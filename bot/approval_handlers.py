"""What the bot does with a click on an approval card (publish or rollback) and with the Reject modal.

The listeners (registered in bot.app.register) ack first, then call these. A :class:`Gate` says what differs between
the two kinds of card: which desk counts the click, which request it is, how the thread is repainted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, Respond
from slack_sdk import WebClient

from bot.approve import ClickOutcome
from edgebot import approval_messages, approvals, messages
from edgebot.release import Approval, Release

log = logging.getLogger(__name__)

Click = Callable[[str, str, str], ClickOutcome]


@dataclass(frozen=True)
class Gate:
    approve: Click
    check_reject: Click
    reject: Callable[[str, str, str, str], ClickOutcome]
    request_of: Callable[[Release], Approval | None]
    repaint: Callable[[str], None]
    """Repaint the card (tally, outcome, buttons removed)."""
    ended: Callable[[str], None]
    """After a rejection or an expiry found by a click: what else the thread says (the summary, for a publish)."""
    counted: Callable[[Release, bool], messages.Message]
    rollback: bool = False


def _clicked(body: dict[str, Any]) -> tuple[str, str, str]:
    """(release_id, card digest, user_id) of a click on an approval button."""
    action = (body.get("actions") or [{}])[0]
    release_id, digest = approvals.parse_button_value(str(action.get("value", "")))
    return release_id, digest, str((body.get("user") or {}).get("id", ""))


def _refusal(gate: Gate, outcome: ClickOutcome, release_id: str) -> messages.Message:
    release = outcome.release
    request = gate.request_of(release) if release else None
    return approval_messages.click_refused(outcome.refused or approvals.UNKNOWN, release, release_id,
                                           approvers=request.approvers if request else [])


def handle_approve(gate: Gate, body: dict[str, Any], respond: Respond) -> None:
    release_id, digest, user_id = _clicked(body)
    outcome = gate.approve(release_id, digest, user_id)
    release = outcome.release
    if outcome.refused is not None:
        respond_ephemeral(respond, _refusal(gate, outcome, release_id))
        if release is not None and outcome.refused == approvals.EXPIRED_CLICK:
            gate.repaint(release_id)  # the click found the request expired and closed it
            gate.ended(release_id)
        return
    assert release is not None
    gate.repaint(release_id)  # "1 of 2: @approver", in place
    respond_ephemeral(respond, gate.counted(release, outcome.quorum))


def handle_reject_click(gate: Gate, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
    release_id, digest, user_id = _clicked(body)
    outcome = gate.check_reject(release_id, digest, user_id)
    if outcome.refused is not None or outcome.release is None:
        respond_ephemeral(respond, _refusal(gate, outcome, release_id))
        return
    value = (body.get("actions") or [{}])[0].get("value", "")
    client.views_open(trigger_id=body.get("trigger_id", ""),
                      view=approval_messages.reject_modal(outcome.release, value, rollback=gate.rollback))


def handle_reject_submission(gate: Gate, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
    values = (view.get("state") or {}).get("values") or {}
    field = (values.get(approval_messages.REASON_BLOCK) or {}).get(approval_messages.REASON_ACTION) or {}
    reason = " ".join(str(field.get("value") or "").split())
    if len(reason) < 3:
        ack(response_action="errors", errors={approval_messages.REASON_BLOCK: "Say why, in a few words."})
        return
    release_id, digest = approvals.parse_button_value(str(view.get("private_metadata", "")))
    user_id = str((body.get("user") or {}).get("id", ""))
    try:
        outcome = gate.reject(release_id, digest, user_id, reason[:500])
    except Exception:
        log.exception("could not record the rejection of %s", release_id)
        ack(response_action="errors", errors={approval_messages.REASON_BLOCK: messages.internal_error().text})
        return
    if outcome.refused is not None:
        ack(response_action="errors", errors={approval_messages.REASON_BLOCK: _refusal(gate, outcome, release_id)
                                              .text[:150]})
        return
    ack()
    gate.repaint(release_id)  # buttons removed, "Rejected: … — reason"
    gate.ended(release_id)


def respond_ephemeral(respond: Respond, msg: messages.Message) -> None:
    respond(text=msg.text, blocks=msg.blocks or None, response_type="ephemeral", replace_original=False)
