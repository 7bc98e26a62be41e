"""The /edge grammar: what it accepts, the precise message for what it refuses, and a fuzz that it never raises."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import grammar
from bot.grammar import (
    CancelCommand,
    DeployCommand,
    HelpCommand,
    HistoryCommand,
    PublishCommand,
    RollbackCommand,
    RolloutCommand,
    StatusCommand,
    parse,
)
from edgebot.errors import UsageError
from edgebot.messages import PUBLISH_USAGE


def test_publish_minimal() -> None:
    assert parse("publish hello 1.2.3 --registry icr") == PublishCommand("hello", "1.2.3", "icr")


def test_publish_every_option_both_spellings() -> None:
    cmd = parse("publish hello 1.2 --registry=ocp --arch amd64,arm64,amd64 --org=team-b --dry-run --overwrite")
    assert cmd == PublishCommand("hello", "1.2", "ocp", ("amd64", "arm64"), "team-b", True, True)


def test_smart_dashes_from_slack_clients_are_flags() -> None:
    expected = PublishCommand("hello", "1", "icr", dry_run=True)
    assert parse("publish hello 1 \u2014registry icr \u2014dry-run") == expected


@pytest.mark.parametrize("text", ["", "help", "  HELP  "])
def test_help(text: str) -> None:
    assert parse(text) == HelpCommand("")


def test_status_and_history() -> None:
    assert parse("status") == StatusCommand()
    assert parse("status R-7F3A9C") == StatusCommand("r-7f3a9c")
    assert parse("status hello") == StatusCommand(service="hello")
    assert parse("history hello") == HistoryCommand("hello", 10)
    assert parse("history hello --limit 3") == HistoryCommand("hello", 3)
    assert parse("history --limit=25 hello") == HistoryCommand("hello", 25)
    assert parse("cancel r-7f3a9c") == CancelCommand("r-7f3a9c")


def test_help_publish() -> None:
    assert parse("help publish") == HelpCommand("publish")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("promote hello 1.0.0", "Unknown command `promote`"),
        ("publish", "SERVICE and VERSION missing"),
        ("publish hello", "VERSION missing"),
        ("publish hello 1.2.3", "`--registry ALIAS` is required"),
        ("publish hello 1.2.3-beta --registry icr", "Version `1.2.3-beta` would be refused by the Exchange"),
        ("publish hello v1.2.3 --registry icr", "no `v` prefix"),
        ("publish hello 1.2.3.4 --registry icr", "would be refused"),
        ("publish hello 1.2.3 --registry icr now please", "Unexpected extra words: `now` `please`"),
        ("publish hello 1.2.3 --registry", "`--registry` needs a value"),
        ("publish hello 1.2.3 --registry --dry-run", "`--registry` needs a value"),
        ("publish hello 1.2.3 --registry icr --registry ocp", "`--registry` is given twice"),
        ("publish hello 1.2.3 --registry icr --force", "Unknown option `--force`"),
        ("publish hello 1.2.3 --registry icr --dry-run=yes", "`--dry-run` takes no value"),
        ("publish hello 1.2.3 --registry icr --arch x86_64", "did you mean `amd64`"),
        ("publish hello 1.2.3 --registry icr --arch amd64,,arm64", "comma-separated"),
        ("publish Hello! 1.2.3 --registry icr", "is not a service name"),
        ("publish hello 1.2.3 --registry icr --org bad/org", "is not an Exchange org name"),
        ("help me", "I have no help on"),
        ("status r-7f3a9", "is not a release id"),
        ("status Hello!", "nor a service name"),
        ("status r-7f3a9c r-000000", "Unexpected extra words"),
        ("history", "SERVICE missing"),
        ("history hello --limit 0", "`--limit` takes a number from 1 to 25"),
        ("history hello --limit many", "`--limit` takes a number"),
        ("history hello --since 2d", "Unknown option `--since`"),
        ("history hello world", "Unexpected extra words"),
        ("cancel", "RELEASE missing"),
        ("cancel latest", "is not a release id"),
    ],
)
def test_refusals_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(text)
    assert fragment in info.value.problem
    assert info.value.usage


def test_publish_refusals_carry_the_publish_usage() -> None:
    with pytest.raises(UsageError) as info:
        parse("publish hello 1.2.3")
    assert info.value.usage == PUBLISH_USAGE


def test_user_input_is_echoed_bounded_and_without_backticks() -> None:
    with pytest.raises(UsageError) as info:
        parse("publish hello 1.2.3 --registry icr `" + "x" * 500)
    assert "x" * 41 not in info.value.problem
    assert "``" not in info.value.problem


_words = st.sampled_from(
    ["publish", "help", "hello", "1.2.3", "1", "--registry", "icr", "--arch", "amd64,arm64", "--org", "o",
     "--dry-run", "--overwrite", "—registry", "--registry=", "=", "--", "-", "`", "\u200b", "v1", "status",
     "history", "--limit", "r-7f3a9c", "25", "0", "cancel", "rollout", "rollback",
     "deploy", "--to", "--policy", "p1,p2", "verify"]
)


@settings(max_examples=int(os.environ.get("EDGEBOT_FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_words | st.text(max_size=12), max_size=12).map(" ".join)))
def test_fuzz_every_input_is_a_command_or_a_usage_error(text: str) -> None:
    try:
        result = parse(text)
    except UsageError as exc:
        assert exc.problem and "Traceback" not in exc.problem
    else:
        assert isinstance(result, grammar.Command)  # every command the grammar knows, new ones included


def test_rollout() -> None:
    assert parse("rollout hello") == RolloutCommand("hello")
    assert parse("rollout hello 1.2") == RolloutCommand("hello", "1.2")
    for text, fragment in (("rollout", "SERVICE missing"), ("rollout hello 1.2.3-rc1", "is not a version"),
                           ("rollout Hello!", "is not a service name"), ("rollout a 1 b", "Unexpected extra words")):
        with pytest.raises(UsageError) as info:
            parse(text)
        assert fragment in info.value.problem and info.value.usage == "/edge rollout SERVICE [VERSION]"


def test_publish_policy_option() -> None:
    assert parse("publish hello 1.0 --registry icr --policy a,b,a").policies == ("a", "b")  # type: ignore[union-attr]
    assert parse("publish hello 1.0 --registry icr").policies is None  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="not a policy or pattern name"):
        parse("publish hello 1.0 --registry icr --policy acme/x")


def test_rollback() -> None:
    assert parse("rollback hello") == RollbackCommand("hello")
    for text, fragment in (("rollback", "SERVICE missing"), ("rollback a b", "Unexpected extra words"),
                           ("rollback A!", "is not a service name")):
        with pytest.raises(UsageError, match=fragment):
            parse(text)


def test_deploy_and_rollback_to_a_version() -> None:
    assert parse("deploy hello 1.0.0") == DeployCommand("hello", "1.0.0")
    assert parse("deploy hello 1.0 --policy=a,b,a --registry icr") == DeployCommand(
        "hello", "1.0", policies=("a", "b"), registry="icr")
    assert parse("rollback hello --to 1.0.0") == DeployCommand("hello", "1.0.0", as_rollback=True)
    assert parse("rollback hello \u2014to 1.0.0 --policy canary") == DeployCommand(
        "hello", "1.0.0", policies=("canary",), as_rollback=True)
    assert parse("rollback hello") == RollbackCommand("hello"), "without --to: the last rollout put back"


@pytest.mark.parametrize("text, fragment", [
    ("deploy", "SERVICE missing"),
    ("deploy hello", "VERSION missing"),
    ("deploy hello v1.0.0", "is not a version"),
    ("deploy hello 1.0.0 extra", "Unexpected extra words"),
    ("deploy hello 1.0.0 --arch amd64", "Unknown option `--arch`"),
    ("deploy hello 1.0.0 --to 1.0.1", "Unknown option `--to`"),
    ("deploy hello 1.0.0 --policy", "`--policy` needs a value"),
    ("deploy hello 1.0.0 --policy A!", "is not a policy or pattern name"),
    ("deploy hello 1.0.0 --registry a --registry b", "`--registry` is given twice"),
    ("rollback hello --to", "`--to` needs a value"),
    ("rollback hello --to latest", "is not a version"),
    ("rollback hello --policy canary", "go with `--to VERSION`"),
    ("rollback hello 1.0.0 --to 1.0.0", "Unexpected extra words"),
])
def test_deploy_refusals_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment) as info:
        parse(text)
    assert info.value.usage.startswith("/edge rollback" if text.startswith("rollback") else "/edge deploy")


def test_verify_a_version() -> None:
    from bot.grammar import VerifyCommand

    assert parse("verify hello 1.0.0") == VerifyCommand("hello", "1.0.0")
    assert parse("verify hello 1.2 \u2014org=acme-eu") == VerifyCommand("hello", "1.2", "acme-eu")
    for text, fragment in (("verify", "SERVICE missing"), ("verify hello", "VERSION missing"),
                           ("verify hello v1", "is not a version"), ("verify hello 1 --arch amd64", "Unknown option"),
                           ("verify hello 1 --org", "`--org` needs a value"), ("verify hello 1 x", "extra words"),
                           ("verify hello 1 --org a --org b", "given twice"), ("verify hello 1 --org a/b", "org name")):
        with pytest.raises(UsageError, match=fragment):
            parse(text)


def test_public_and_private_override_the_definition_and_contradict_each_other() -> None:
    assert parse("publish hello 1 --registry icr --public") == PublishCommand("hello", "1", "icr", public=True)
    assert parse("publish hello 1 --registry icr --private") == PublishCommand("hello", "1", "icr", public=False)
    assert parse("publish hello 1 --registry icr").public is None
    with pytest.raises(UsageError, match="contradict each other"):
        parse("publish hello 1 --registry icr --public --private")
