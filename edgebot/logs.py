"""Logging for the bot and the workers: human-readable lines or JSON (one object per line), never a secret.

``configure(format, level)`` installs one handler on the root logger (``edgebot serve`` and ``edgebot worker`` call
it with ``--log-format`` / ``settings.log_format``). Every line carries the id of the release being worked on when the
code that logs knows it: a job sets it for the whole job (:func:`set_release` in ``workers.jobs``), the bot's
listener as soon as it has recorded or looked up the release. It lives in a :class:`~contextvars.ContextVar`, so
concurrent requests in one bot process never see each other's id.

No secret reaches a log line: resolved secrets are :class:`~edgebot.secrets.Secret` objects whose ``str``/``repr``
show only their reference, extra fields are rendered the same way, and as a last line of defence Slack tokens
(``xoxb-…``, ``xapp-…``), ``Authorization`` header values and ``token=`` fields of form-encoded bodies (Slack's
verification token, which Bolt logs with a badly signed request) are masked in the final text.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from edgebot.secrets import Secret

FORMATS = ("text", "json")
release_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("edgebot_release_id", default=None)

_REDACTIONS = (
    (re.compile(r"\b(xox[abposr]|xapp)-[A-Za-z0-9-]{4,}"), r"\1-***"),
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)(basic|bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1\2 ***"),
    # Slack's verification token in a form-encoded request body (Bolt logs the body of a badly signed request)
    (re.compile(r"(?<![A-Za-z0-9_])token=[^&\s,)'\"]+"), "token=***"),
)
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                                    "release_id"}


def set_release(release_id: str | None) -> None:
    """The release this thread or job is working on from now on (None: none)."""
    release_id_var.set(release_id or None)


@contextmanager
def release_context(release_id: str | None = None) -> Iterator[None]:
    """Scope a release id: whatever :func:`set_release` does inside is undone on exit."""
    token = release_id_var.set(release_id or None)
    try:
        yield
    finally:
        release_id_var.reset(token)


def redact(text: str) -> str:
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _safe(value: Any) -> Any:
    """JSON-ready, with every Secret shown as its reference only."""
    if isinstance(value, Secret):
        return repr(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(v) for v in value]
    return str(value)


class ReleaseIdFilter(logging.Filter):
    """Puts the current release id on every record (``record.release_id``; an explicit ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "release_id", None):
            record.release_id = release_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, release_id (when known), process, exception, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        release_id = getattr(record, "release_id", None) or release_id_var.get()
        if release_id:
            entry["release_id"] = release_id
        entry["process"] = record.process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = _safe(value)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(release_tag)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        release_id = getattr(record, "release_id", None) or release_id_var.get()
        record.release_tag = f" [{release_id}]" if release_id else ""
        return redact(super().format(record))


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_from(settings: Any) -> logging.Handler:
    """:func:`configure` from ``settings.log_format`` / ``settings.log_level``; a bad value is a ConfigError."""
    from edgebot.errors import ConfigError

    if settings.log_format not in FORMATS:
        raise ConfigError(f"settings.log_format must be one of {', '.join(FORMATS)} (EDGEBOT_LOG_FORMAT or "
                          f"--log-format), got {settings.log_format!r}")
    if not isinstance(logging.getLevelName(str(settings.log_level).upper()), int):
        raise ConfigError(f"settings.log_level must be a level name such as INFO or DEBUG, got {settings.log_level!r}")
    return configure(settings.log_format, settings.log_level)


def stream_handler(fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``fmt`` lines (also a ``logging.config.dictConfig`` factory: ``{"()": this, "fmt": …}``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ReleaseIdFilter())
    handler._edgebot = True  # type: ignore[attr-defined]
    return handler


def gunicorn_logconfig(fmt: str, level: str) -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its own lines (start-up, worker boots and crashes) go through the root logger in
    edgebot's format too; access lines (every probe and scrape) are off."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level.upper(), "handlers": ["edgebot"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": False},
        },
        "handlers": {"edgebot": {"()": "edgebot.logs.stream_handler", "fmt": fmt}},
    }


def configure(fmt: str = "text", level: str | int = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Write ``fmt`` lines to ``stream`` (stderr) from the root logger, replacing a console handler installed before
    (by ``logging.basicConfig`` or an earlier call); other handlers (a test's log capture) are kept."""
    handler = stream_handler(fmt, stream)
    root = logging.getLogger()
    for old in list(root.handlers):  # ours from an earlier call, and basicConfig's console handler
        console = type(old) is logging.StreamHandler and old.stream in (sys.stderr, sys.stdout)
        if getattr(old, "_edgebot", False) or console:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
