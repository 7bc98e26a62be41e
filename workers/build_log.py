"""A build you can watch: "step N/M" progress while a build runs, and its whole log as a file in the thread.

A build worker has no Slack client and may not write the release record (workers.build_report), so both travel
through Redis:

* Progress. Each builder hands every output line (already scrubbed of the values it knows) to a :class:`Watch`.
  :func:`parse_step` reads the step counter — the Docker Engine's ``Step 3/7 : RUN …`` and buildah's
  ``STEP 3/7: RUN …`` (``[1/2] STEP 3/7: …`` in a multi-stage build) — and a new step is reported as a build report
  (:func:`workers.build_report.progress`) at most once per ``settings.build_progress_interval`` per arch
  (:class:`Throttle`). Reporting is best effort: a report that cannot be written never stops the build.
* The log. :class:`BoundedLog` keeps every line, scrubbed again here (secret values, ``user:password@`` in URLs,
  the patterns of edgebot.logs), bounded by ``settings.build_log_max_bytes``: a longer log keeps its head and its
  tail with a marker line where it was cut. When the build ends (built or failed), the log is written with that
  final report, in the same MULTI, to ``<prefix>:build-log:<release_id>:<arch>`` (TTL ``build_log_ttl``); the
  publish worker that applies the report takes it (GETDEL: attached once) and uploads it to the thread.

The watch of a running build is kept here, by release and arch, for the report that ends the build to take its
log (:func:`take`), whichever way it ends (built: the pipeline's report; failed: the build job's fail hook).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from edgebot import logs, messages
from workers import source

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger(__name__)

STEP_RE = re.compile(r"^\s*(?:\[\d+/\d+\]\s*)?(?:Step|STEP)\s+(\d{1,5})/(\d{1,5})\s*:")
"""The Engine's ``Step 3/7 : …`` and buildah's ``STEP 3/7: …`` (``[1/2] STEP 3/7: …`` in a multi-stage build)."""
MAX_STEPS = 10_000
CUT_MARKER = "[edgebot] … {dropped} line(s), {size} byte(s) of the build log left out here (setting " \
             "build_log_max_bytes) …"


def parse_step(line: str) -> tuple[int, int] | None:
    """``(N, M)`` of a builder's "step N of M" line; None for any other line (or an implausible counter)."""
    match = STEP_RE.match(line)
    if match is None:
        return None
    step, total = int(match.group(1)), int(match.group(2))
    return (step, total) if 1 <= step <= total <= MAX_STEPS else None


def log_key(prefix: str, release_id: str, arch: str) -> str:
    return f"{prefix}:build-log:{release_id}:{arch}"


class Throttle:
    """At most one event per ``interval`` seconds (the first one at once)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = max(0.0, interval)
        self.clock = clock
        self._last: float | None = None

    def ready(self) -> bool:
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


def _hidden(values: Iterable[str]) -> list[str]:
    """Each secret value, and each of its lines long enough to be telling, longest first."""
    hide: set[str] = set()
    for value in values:
        if value:
            hide.add(value)
            hide.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 6)
    return sorted(hide, key=len, reverse=True)


class BoundedLog:
    """Every line of a build's output, scrubbed, in at most ``max_bytes`` (head and tail kept when cut)."""

    def __init__(self, max_bytes: int, hide: Iterable[str] = ()) -> None:
        self.max_bytes = max(1024, max_bytes)
        self._hide = _hidden(hide)
        self._head: list[bytes] = []
        self._head_size = 0
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def hide(self, values: Iterable[str]) -> None:
        """More values to scrub from the lines still to come (a builder's secrets, once it has read them)."""
        self._hide = _hidden([*self._hide, *values])

    def scrub(self, line: str) -> str:
        for value in self._hide:
            line = line.replace(value, "***")
        return source.redact(logs.redact(line))

    @property
    def cut(self) -> bool:
        return self.dropped_lines > 0

    def add(self, line: str) -> None:
        data = (self.scrub(line.rstrip("\n")) + "\n").encode("utf-8", "replace")
        half = self.max_bytes // 2
        if len(data) > half:  # one huge line: keep its start
            data = data[: half - 4] + b" \xe2\x80\xa6\n"
        if not self._tail and self._head_size + len(data) <= half:
            self._head.append(data)
            self._head_size += len(data)
            return
        self._tail.append(data)
        self._tail_size += len(data)
        while self._tail_size > self.max_bytes - self._head_size - 200:  # room for the marker line
            gone = self._tail.popleft()
            self._tail_size -= len(gone)
            self.dropped_lines += 1
            self.dropped_bytes += len(gone)

    def render(self) -> bytes:
        parts = list(self._head)
        if self.cut:
            marker = CUT_MARKER.format(dropped=self.dropped_lines, size=self.dropped_bytes)
            parts.append((marker + "\n").encode())
        parts.extend(self._tail)
        return b"".join(parts)


class Watch:
    """One arch's running build: reports progress (throttled), keeps the log. ``report(step, total)`` writes the
    progress report (workers.build_report.progress)."""

    def __init__(self, report: Callable[[int, int], object], *, interval: float, max_bytes: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._report = report
        self.throttle = Throttle(interval, clock)
        self.log = BoundedLog(max_bytes)
        self.step: tuple[int, int] | None = None
        self.reported: tuple[int, int] | None = None
        self.lines = 0

    def hide(self, values: Iterable[str]) -> None:
        self.log.hide(values)

    def line(self, text: str) -> None:
        """One output line of the builder (called on the building thread)."""
        self.lines += 1
        self.log.add(text)
        step = parse_step(text)
        if step is not None:
            self.step = step
        if self.step is not None and self.step != self.reported and self.throttle.ready():
            self.reported = self.step
            try:
                self._report(*self.step)
            except Exception as exc:  # progress is best effort: the build goes on, its end reports for sure
                log.warning("build progress not reported: %s", type(exc).__name__)


_watches: dict[tuple[str, str], Watch] = {}
_lock = threading.Lock()


def begin(release_id: str, arch: str, watch: Watch) -> Watch:
    """Keep ``watch`` as the running build of ``release_id``/``arch`` (replacing a previous attempt's)."""
    with _lock:
        _watches[(release_id, arch)] = watch
    return watch


def take(release_id: str, arch: str) -> bytes | None:
    """The log of the build of ``release_id``/``arch``, once (None: no build ran in this process)."""
    with _lock:
        watch = _watches.pop((release_id, arch), None)
    return None if watch is None or not watch.lines else watch.log.render()


def forget(release_id: str, arch: str) -> None:
    with _lock, contextlib.suppress(KeyError):
        del _watches[(release_id, arch)]


# -- the publish worker's side -------------------------------------------------------------------------------------

def attach(ctx: WorkerContext, release_id: str, arch: str, *, failed: bool) -> None:
    """Attach the arch's stored build log to the release thread, once: the key is read and deleted in one MULTI, so
    of the apply jobs that get here only one uploads it. A failed upload is a note in the thread, never a failure."""
    settings = ctx.config.settings
    key = log_key(settings.key_prefix, release_id, arch)
    with ctx.redis.pipeline(transaction=True) as pipe:
        pipe.get(key)
        pipe.delete(key)
        raw, deleted = pipe.execute()
    if not raw or not deleted:
        return
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    data = data[: settings.build_log_max_bytes + 1024]  # written by an untrusted process: bounded here too
    release = ctx.store.require(release_id)
    ctx.reporter.attach_file(
        release_id, filename=messages.build_log_filename(release.service, release.version, arch),
        title=messages.build_log_title(release.service, release.version, arch), content=data,
        comment=messages.build_log_comment(arch, failed=failed, size=len(data)),
        on_failure=lambda why: messages.build_log_not_attached(arch, why))
