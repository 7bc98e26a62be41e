"""edgebot's exception hierarchy, drawn once::

    EdgebotError                    base; str() is a user-facing sentence, never a secret, never a stack trace
    ├── ConfigError                 the config file is wrong (start-up refuses to run)
    ├── SecretUnavailable           a secret reference could not be resolved (names the reference, not the value)
    ├── UsageError                  a Slack command the bot cannot accept (shown ephemerally, with the usage)
    ├── StepFailed                  a pipeline step failed for good; ``transient`` says whether a retry may help
    │   └── (workers raise subclasses: definition, source, image, signing and Exchange errors are mapped here)
    ├── LeaseLost                   a step lost its lease on the release: it must not write anything more
    └── ReleaseEnded                the release ended meanwhile (cancelled, failed elsewhere): stop, write nothing

Client modules (``workers.exchange``, ``workers.images``, ``workers.source``…) have their own small hierarchies;
the pipeline maps them onto :class:`StepFailed` at one place, so a user only ever sees one kind of failure text.
"""

from __future__ import annotations

from collections.abc import Iterable


class EdgebotError(Exception):
    """Base class. ``str(exc)`` is safe to show a user."""


class ConfigError(EdgebotError):
    pass


def refuse_unknown_keys(table: Iterable[str], label: str, keys: Iterable[str]) -> None:
    """ConfigError naming the keys of ``table`` that are not ``keys`` (and every known one), for the table ``label``
    (``[services.x.smoke]``, ``the top level``): every table of the config refuses what it would silently ignore."""
    known = sorted(set(keys))
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {label}; known: {', '.join(known)}")


class SecretUnavailable(EdgebotError):
    pass


class UsageError(EdgebotError):
    """A command the bot refuses. ``usage`` is the grammar line to show underneath the problem."""

    def __init__(self, problem: str, usage: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.usage = usage


class StepFailed(EdgebotError):
    def __init__(self, message: str, *, transient: bool = False, detail: list[str] | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.detail = detail or []


class LeaseLost(EdgebotError):
    pass


class ReleaseEnded(EdgebotError):
    pass
