"""The people of the sandbox workspace, and what the sandbox config lets each of them do.

``make demo`` and ``edgebot sandbox`` play these users towards the bot (``/as approver1`` in the console):

* ``requester`` may publish;
* ``approver1`` and ``approver2`` are the ``@release-approvers`` user group, whose approval a release needs before
  it is published (one of them, never the requester), and who may also publish and cancel;
* ``visitor`` is in the channel but holds no permission, to see a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sandbox.slack import SlackStandIn
from sandbox.stack import APPROVER, CHANNEL_ID, CHANNEL_NAME, REQUESTER, Stack


@dataclass(frozen=True)
class Person:
    user_id: str
    name: str
    role: str


APPROVER2 = "U0APPROVER2"
VISITOR = "U0VISITOR"
APPROVERS_GROUP, APPROVERS_HANDLE = "S0APPROVERS", "release-approvers"
PEOPLE = (
    Person(REQUESTER, "requester", "may publish"),
    Person(APPROVER, "approver1", f"@{APPROVERS_HANDLE}: approves, may publish and cancel"),
    Person(APPROVER2, "approver2", f"@{APPROVERS_HANDLE}: approves, may publish and cancel"),
    Person(VISITOR, "visitor", "in the channel, no permission"),
)
BOT_USER_ID = "U0EDGEBOT"

SANDBOX_TOML = f"""[access]
publish = ["{REQUESTER}", "{APPROVERS_GROUP}"]
cancel = ["{APPROVERS_GROUP}"]

[approvals]
approvers = ["{APPROVERS_GROUP}"]
required = 1
allow_requester = false
timeout_minutes = 30
"""
"""Who may do what in the sandbox: ``[access]`` (bot/access.py; the requester may always cancel their own release)
and ``[approvals]`` (one approval from @release-approvers, never the requester's own: four-eyes)."""


def add_people(slack: SlackStandIn) -> None:
    """The users and the approvers' user group, in the Slack stand-in (``users.info``, ``usergroups.users.list``)."""
    for person in PEOPLE:
        slack.add_user(person.user_id, person.name)
    slack.add_usergroup(APPROVERS_GROUP, APPROVERS_HANDLE, [APPROVER, APPROVER2])


def display_names() -> dict[str, str]:
    """user or group id -> the name the terminal shows after ``@`` (and the channel's name after ``#``)."""
    names = {p.user_id: p.name for p in PEOPLE}
    names[APPROVERS_GROUP] = APPROVERS_HANDLE
    names[BOT_USER_ID] = "edgebot"
    names[CHANNEL_ID] = CHANNEL_NAME
    return names


def find_person(text: str) -> Person | None:
    """A person by user id (``U0APPROVER``) or name (``approver1``, ``@approver1``), case-insensitive."""
    wanted = text.strip().lstrip("@").lower()
    for person in PEOPLE:
        if wanted in (person.user_id.lower(), person.name.lower()):
            return person
    return None


def sandbox_stack(workdir: Path, arches: tuple[str, ...]) -> Stack:
    """The stack ``make demo`` and ``edgebot sandbox`` run (one place for both): secrets in OpenBao, the sandbox's
    ``[access]`` and ``[approvals]`` tables, ``hello``'s rollout stages. Call :func:`add_people` once it is started,
    then :func:`sandbox.seed.seed_fleet` for a fleet to roll out to."""
    from sandbox import seed

    return Stack(workdir, arches=arches, vault=True, versions=seed.VERSIONS,
                 extra_services={seed.SEED_SERVICE: list(arches)}, extra_toml=SANDBOX_TOML + seed.ROLLOUT_TOML,
                 settings=dict(seed.SETTINGS))
