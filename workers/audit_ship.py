"""Ship the audit stream to the sink users keep: a file, stdout or an HTTP endpoint (edgebot.audit).

Publish workers run :func:`ship` next to the reaper (workers.worker), every ``settings.reaper_interval`` seconds,
in a thread of their own (:func:`ship_in_background`: a sink that is slow or retrying never holds up the worker).
A pass takes a short lock (one shipper at a time), reads the stream entries after the last shipped id
(``<prefix>:audit-shipped``), hands them to the sink as one batch of JSON lines, and records the batch's last id only
once the sink accepted it. A sink that fails leaves the id where it was: the next pass sends the same lines again
(at-least-once). Each line's ``id`` is its stream id, stable and increasing, so a consumer dedupes by it.

Sinks:

* ``file:/path``: appended (``O_APPEND``) and fsynced before the id moves; created ``0600``.
* ``stdout``: one line each, flushed (a container's log collector keeps them).
* ``https://…``: one POST of the batch as NDJSON (``application/x-ndjson``), with ``Authorization`` from
  ``audit.auth_header`` if set; 2xx accepts, 5xx and timeouts are retried (``settings.audit_http_retries``), any other
  answer refuses the batch, logged with the status (never the header). Plain http only to a loopback address.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from typing import Any, Protocol

import httpx
import redis

from edgebot import audit
from edgebot.audit import AuditConfig
from edgebot.errors import SecretUnavailable
from edgebot.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1] shipped id, KEYS[2] ship lock, KEYS[3] shipped count; ARGV[1] new id, ARGV[2] lock token, ARGV[3] lines
_MOVE = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[3])
return 1
"""
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class SinkError(Exception):
    """The sink did not take the batch (the message says why; it never holds a secret)."""


class Sink(Protocol):
    def write(self, lines: list[str]) -> None: ...


class FileSink:
    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SinkError(f"cannot open the audit file {self.path}: {exc.strerror}") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            raise SinkError(f"cannot append to the audit file {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)


class StdoutSink:
    def write(self, lines: list[str]) -> None:
        try:
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
        except OSError as exc:
            raise SinkError(f"cannot write audit lines to stdout: {exc.strerror}") from None


class HttpSink:
    def __init__(self, url: str, settings: Settings, authorization: str | None = None,
                 client: httpx.Client | None = None) -> None:
        problem = audit.http_problem(url)
        if problem:
            raise SinkError(problem)
        self.url, self.settings, self.authorization = url, settings, authorization
        self.client = client or httpx.Client(timeout=settings.audit_http_timeout, follow_redirects=False)

    def write(self, lines: list[str]) -> None:
        headers = {"Content-Type": "application/x-ndjson"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        body = "".join(line + "\n" for line in lines).encode()
        attempts = max(0, self.settings.audit_http_retries) + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(5.0, 0.2 * 2**attempt))
            try:
                response = self.client.post(self.url, content=body, headers=headers)
            except httpx.TimeoutException:
                last = f"the audit endpoint {self.url} did not answer within {self.settings.audit_http_timeout:g} s"
                continue
            except httpx.HTTPError as exc:
                last = f"cannot reach the audit endpoint {self.url}: {type(exc).__name__}"
                continue
            if 200 <= response.status_code < 300:
                return
            if response.status_code >= 500:
                last = f"the audit endpoint {self.url} answered HTTP {response.status_code}"
                continue
            hint = " (check audit.auth_header)" if response.status_code in (401, 403) else ""
            raise SinkError(f"the audit endpoint {self.url} refused {len(lines)} line(s): HTTP "
                            f"{response.status_code}{hint}; they stay in Redis and are sent again next pass")
        raise SinkError(f"{last}; {len(lines)} line(s) stay in Redis and are sent again next pass")


def sink_for(config: AuditConfig, settings: Settings, authorization: str | None = None) -> Sink:
    if config.kind == "file":
        return FileSink(config.target)
    if config.kind == "stdout":
        return StdoutSink()
    return HttpSink(config.target, settings, authorization)


def sink_problem(config: AuditConfig) -> str:
    """`config check --role publish`: what the sink will get, or a SinkError saying why it cannot (nothing is sent:
    a test line would stay in the SIEM for good)."""
    if config.kind == "file":
        parent = os.path.dirname(config.target) or "/"
        if os.path.exists(config.target):
            if not os.access(config.target, os.W_OK):
                raise SinkError(f"the audit file {config.target} is not writable by this process")
            mode = os.stat(config.target).st_mode & 0o777
            note = "" if not mode & 0o077 else f" (mode {mode:o}: others can read it; 600 is what edgebot creates)"
            return f"appends to {config.target}{note}"
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise SinkError(f"the audit file's directory {parent} does not exist or is not writable: create it "
                            "(on a persistent volume) or change audit.sink")
        return f"will create {config.target} (mode 600)"
    if config.kind == "stdout":
        return "one line per action on the publish workers' stdout"
    problem = audit.http_problem(config.target)
    if problem:
        raise SinkError(problem)
    return f"POSTs NDJSON batches to {config.target} (not probed: a test line would stay there)"


def ship(connection: redis.Redis, settings: Settings, sink: Sink) -> int:
    """Send every entry after the last shipped id to ``sink``; return how many lines it accepted. Raises
    :class:`SinkError` (after recording what was shipped before) when the sink refuses a batch."""
    prefix = settings.key_prefix
    lock, token = audit.ship_lock_key(prefix), uuid.uuid4().hex
    if not connection.set(lock, token, nx=True, ex=max(30, int(settings.audit_http_timeout * 10))):
        return 0  # another worker is shipping now
    shipped = 0
    try:
        _count_trimmed(connection, prefix)
        while True:
            raw = connection.get(audit.shipped_key(prefix))
            after = raw.decode() if isinstance(raw, bytes) else (raw or "0-0")
            entries: list[Any] = connection.xrange(audit.stream_key(prefix), min=f"({after}", max="+",  # type: ignore[assignment]
                                                   count=max(1, settings.audit_batch))
            if not entries:
                return shipped
            lines = [_line(entry_id, fields) for entry_id, fields in entries]
            sink.write(lines)
            last = entries[-1][0]
            last = last.decode() if isinstance(last, bytes) else str(last)
            if not connection.eval(_MOVE, 3, audit.shipped_key(prefix), lock, audit.shipped_count_key(prefix), last,
                                   token, len(lines)):
                return shipped  # the lock expired under a slow sink: another pass ships from here (at-least-once)
            shipped += len(lines)
            if len(entries) < max(1, settings.audit_batch):
                return shipped
    finally:
        connection.eval(_UNLOCK, 1, lock, token)


def _count_trimmed(connection: redis.Redis, prefix: str) -> int:
    """Entries the stream's cap trimmed before they were shipped (logged as an error, then counted so that each is
    reported once). Trimming removes the oldest entries only, so none is missing while the first entry left is at or
    before the last shipped one; otherwise every entry ever added is shipped, lost, or still in the stream."""
    try:
        info: dict[Any, Any] = connection.xinfo_stream(audit.stream_key(prefix))  # type: ignore[assignment]
    except redis.ResponseError:  # no stream yet
        return 0
    first = info.get("first-entry")
    raw = connection.get(audit.shipped_key(prefix))
    after = raw.decode() if isinstance(raw, bytes) else (raw or "0-0")
    if not first or _order(first[0]) <= _order(after):
        return 0
    counted = int(connection.get(audit.shipped_count_key(prefix)) or 0)  # type: ignore[arg-type]
    lost = int(info.get("entries-added", 0)) - counted - int(info.get("length", 0))
    if lost <= 0:
        return 0
    connection.incrby(audit.shipped_count_key(prefix), lost)
    log.error("%d audit line(s) were trimmed from Redis before the sink took them (the stream keeps about "
              "audit_stream_max entries): fix the sink, or raise audit_stream_max", lost)
    return lost


def _order(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _line(entry_id: bytes | str, fields: dict[Any, Any]) -> str:
    """The entry as a line: its stored JSON with the stream id first, as ``id``."""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    raw = fields.get(audit.FIELD.encode(), fields.get(audit.FIELD, b"{}"))
    body = json.loads(raw)
    return json.dumps({"id": eid, **body}, separators=(",", ":"), sort_keys=False)


def ship_in_background(connection: redis.Redis, settings: Settings,
                       previous: threading.Thread | None = None) -> threading.Thread:
    """Start a shipping pass in a daemon thread, unless ``previous`` is still running (then return it): the worker's
    loop (dequeue, heartbeat, reaper) never waits on a sink that is slow or retrying."""
    if previous is not None and previous.is_alive():
        return previous

    def run() -> None:
        try:
            ship_with_worker_context(connection, settings)
        except Exception:  # a bug here must never stop the worker; the next pass starts again
            log.exception("shipping the audit trail failed")

    thread = threading.Thread(target=run, name="edgebot-audit-ship", daemon=True)
    thread.start()
    return thread


def ship_with_worker_context(connection: redis.Redis, settings: Settings) -> int:
    """The worker loop's pass: ship to this worker's configured sink (nothing without ``[audit]``); a sink failure
    is logged once per pass, never raised."""
    from workers import context

    ctx = context.current()
    config = ctx.config.audit
    if config is None:
        return 0
    try:
        authorization = ctx.resolver.resolve(config.auth_header).reveal() if config.auth_header else None
        return ship(connection, settings, sink_for(config, settings, authorization))
    except (SinkError, SecretUnavailable) as exc:
        log.warning("audit lines not shipped: %s", exc)
        return 0


__all__ = ["FileSink", "HttpSink", "Sink", "SinkError", "StdoutSink", "ship", "ship_in_background",
           "ship_with_worker_context", "sink_for", "sink_problem"]
