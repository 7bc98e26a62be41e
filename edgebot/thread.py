"""The release's Slack thread: one root message in the channel, one progress message per stage, one summary.

Every write re-reads the release record under a per-release Redis lock and renders the whole message from it, so
two workers reporting at once (two arches finishing together) never overwrite a newer state with an older one, and a
retried step edits the same message instead of posting a new one (message ts are stored in the record, once).

Slack being unreachable never fails a release: reporting is best effort, logged, and the next report repaints.

Workers report in the background (``background=True``): repaints are queued per message and coalesced — a stage that
goes running → done before its first repaint was sent costs one call — and a job flushes the queue when its step
ends, after it has enqueued the next step, so Slack round-trips overlap the next step instead of delaying it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from edgebot import approval_messages, fleet_messages, messages, metrics
from edgebot.ratelimit import SlackRateLimiter
from edgebot.release import Release
from edgebot.settings import Settings
from edgebot.store import ReleaseStore

log = logging.getLogger(__name__)


class _UploadRefused(Exception):
    """The upload URL answered something else than 200 (the error is the answer's status)."""
SLACK_FAILURES = (SlackClientError, OSError)
"""What a Slack call can raise: an API error answer, or a network failure (refused, reset, timed out)."""


def _why(exc: Exception) -> str:
    return str(exc.response.get("error")) if isinstance(exc, SlackApiError) else type(exc).__name__


class MeteredWebClient(WebClient):
    """A WebClient that counts every failed call (``edgebot_call_errors_total{system="slack"}``): Slack's error code
    (``not_in_channel``, ``ratelimited`` after the retries…) or the exception type of a network failure."""

    def api_call(self, api_method: str, **kwargs: Any) -> Any:
        try:
            return super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            metrics.call_error("slack", api_method, str(exc.response.get("error") or exc.response.status_code))
            raise
        except Exception as exc:
            metrics.call_error("slack", api_method, type(exc).__name__)
            raise


def slack_client(token: str, api_url: str, settings: Settings | None = None) -> WebClient:
    """A WebClient that honours 429 Retry-After (Slack rate-limits chat.update per workspace)."""
    settings = settings or Settings()
    client = MeteredWebClient(token=token, base_url=api_url, timeout=settings.slack_timeout)
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=settings.slack_ratelimited_retries))
    return client


class ThreadReporter:
    def __init__(self, client: WebClient, store: ReleaseStore, *, background: bool = False,
                 limiter: SlackRateLimiter | None = None) -> None:
        self.client = client
        self.limiter = limiter
        self.store = store
        self.lock_timeout = store.settings.thread_lock_timeout
        self.background = background
        self._cv = threading.Condition()
        self._pending: dict[tuple[str, ...], Callable[[], None]] = {}
        self._busy = False
        self._thread: threading.Thread | None = None

    # -- background queue -----------------------------------------------------------------------------------------
    def _submit(self, key: tuple[str, ...], job: Callable[[], None]) -> None:
        if not self.background:
            job()
            return
        context = contextvars.copy_context()  # the repaint logs with the submitter's release id (edgebot.logs)
        with self._cv:
            self._pending.setdefault(key, lambda: context.run(job))  # a queued repaint renders the freshest record
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="thread-reporter", daemon=True)
                self._thread.start()
            self._cv.notify_all()

    def _drain(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    self._busy = False
                    self._cv.notify_all()
                    self._cv.wait()
                key = next(iter(self._pending))
                job = self._pending.pop(key)
                self._busy = True
            try:
                job()
            except Exception:
                log.exception("thread report %s failed", key)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued repaint has been sent (a job calls this before it returns)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._pending and not self._busy,
                                     timeout=self.store.settings.report_flush_timeout if timeout is None else timeout)

    @contextmanager
    def _locked(self, release_id: str) -> Iterator[Release]:
        name = f"{self.store.prefix}:lock:thread:{release_id}"
        lock = self.store.redis.lock(name, timeout=self.lock_timeout, blocking_timeout=self.lock_timeout)
        acquired = lock.acquire()
        try:
            yield self.store.require(release_id)
        finally:
            if acquired:
                try:
                    lock.release()
                except Exception:  # expired while Slack was slow: nothing to release
                    log.debug("thread lock for %s had expired", release_id)

    # -- root ---------------------------------------------------------------------------------------------------
    def ensure_root(self, release_id: str) -> str:
        """Post the root message once; return its ts ("" if Slack refused)."""
        with self._locked(release_id) as release:
            if release.message_ts:
                return release.message_ts
            msg = messages.root_message(release)
            self._limit(release, "chat.postMessage")
            try:
                response = self.client.chat_postMessage(channel=release.channel_id, **msg.as_kwargs())
            except SLACK_FAILURES as exc:  # Slack being down never fails a release: the next report repaints
                log.warning("release %s: could not post the root message: %s", release_id, _why(exc))
                return ""
            ts = str(response["ts"])

            def keep(r: Release) -> None:
                r.message_ts = r.message_ts or ts

            return self.store.update(release_id, keep).release.message_ts

    def refresh_root(self, release_id: str) -> None:
        self._submit(("root", release_id), lambda: self._refresh_root(release_id))

    def _refresh_root(self, release_id: str) -> None:
        with self._locked(release_id) as release:
            if release.message_ts:
                self._update(release, release.message_ts, messages.root_message(release))

    # -- thread -------------------------------------------------------------------------------------------------
    def stage(self, release_id: str, stage: str) -> None:
        """Post or repaint the progress message of ``stage``."""
        self._submit(("stage", release_id, stage), lambda: self._stage(release_id, stage))

    def _stage(self, release_id: str, stage: str) -> None:
        self._progress(release_id, stage, lambda release: messages.stage_message(release, stage))

    def rollout_stage(self, release_id: str, index: int) -> None:
        """Post or repaint the progress message of rollout stage ``index`` (one message per stage)."""
        self._submit(("rollout", release_id, str(index)), lambda: self._rollout_stage(release_id, index))

    def _rollout_stage(self, release_id: str, index: int) -> None:
        release = self.store.require(release_id)
        if index >= len(release.rollout):
            return
        self._progress(release_id, f"rollout:{release.rollout[index].name}",
                       lambda current: fleet_messages.rollout_stage_message(current, index))

    def _progress(self, release_id: str, key: str, render: Callable[[Release], messages.Message]) -> None:
        """The progress message ``key`` of the thread: posted once (its ts kept in the record), then edited."""
        with self._locked(release_id) as release:
            if not release.message_ts:
                return
            msg = render(release)
            ts = release.progress_ts.get(key)
            if ts:
                self._update(release, ts, msg)
                return
            posted = self._post_in_thread(release, msg)
            if posted:

                def keep(r: Release) -> None:
                    r.progress_ts.setdefault(key, posted)

                self.store.update(release_id, keep)

    def summary(self, release_id: str) -> None:
        """Post the final summary once, then repaint the root so the channel shows the outcome."""
        self._submit(("summary", release_id), lambda: self._summary(release_id))

    def _summary(self, release_id: str) -> None:
        with self._locked(release_id) as release:
            if release.message_ts and not release.summary_ts:
                posted = self._post_in_thread(release, messages.summary_message(release))
                if posted:

                    def keep(r: Release) -> None:
                        r.summary_ts = r.summary_ts or posted

                    release = self.store.update(release_id, keep).release
            if release.message_ts:
                self._update(release, release.message_ts, messages.root_message(release))

    # -- approval card ----------------------------------------------------------------------------------------------
    def approval_card(self, release_id: str) -> None:
        """Post the approval card of the current round once, or repaint it (tally, closed, buttons removed)."""
        self._submit(("approval", release_id), lambda: self._approval_card(release_id))

    def _approval_card(self, release_id: str) -> None:
        with self._locked(release_id) as release:
            approval = release.approval
            if not release.message_ts or approval is None:
                return
            for ts in approval.superseded_cards:  # cards of earlier rounds lose their buttons
                self._update(release, ts, approval_messages.superseded_card(release))
            msg = approval_messages.approval_card(release)
            if approval.card_ts:
                self._update(release, approval.card_ts, msg)
                return
            posted = self._post_in_thread(release, msg)
            if posted:
                current_round = approval.round

                def keep(r: Release) -> None:
                    if r.approval is not None and r.approval.round == current_round and not r.approval.card_ts:
                        r.approval.card_ts = posted
                        r.approval.superseded_cards = []

                self.store.update(release_id, keep)

    def rollback_card(self, release_id: str) -> None:
        """Post the card of a rollback request once, or repaint it (tally, outcome, buttons removed)."""
        self._submit(("rollback_card", release_id), lambda: self._rollback_card(release_id))

    def _rollback_card(self, release_id: str) -> None:
        with self._locked(release_id) as release:
            request = release.rollback_request
            if not release.message_ts or request is None:
                return
            msg = approval_messages.rollback_card(release)
            if request.card_ts:
                self._update(release, request.card_ts, msg)
                return
            posted = self._post_in_thread(release, msg)
            if posted:
                asked_at = request.requested_at

                def keep(r: Release) -> None:
                    if r.rollback_request is not None and r.rollback_request.requested_at == asked_at:
                        r.rollback_request.card_ts = r.rollback_request.card_ts or posted

                self.store.update(release_id, keep)

    def note(self, release_id: str, msg: messages.Message) -> None:
        """Post a one-off message in the thread (e.g. that a step resumed after its worker died)."""
        self._submit(("note", release_id, msg.text), lambda: self._note(release_id, msg))

    def _note(self, release_id: str, msg: messages.Message) -> None:
        with self._locked(release_id) as release:
            if release.message_ts:
                self._post_in_thread(release, msg)

    # -- files ----------------------------------------------------------------------------------------------------
    def attach_file(self, release_id: str, *, filename: str, title: str, content: bytes, comment: str,
                    on_failure: Callable[[str], messages.Message]) -> None:
        """Upload ``content`` as a file in the thread (Slack's external upload flow); when Slack refuses, post
        ``on_failure(error)`` in the thread instead. Never fails the release."""
        self._submit(("file", release_id, filename),
                     lambda: self._attach_file(release_id, filename, title, content, comment, on_failure))

    def _attach_file(self, release_id: str, filename: str, title: str, content: bytes, comment: str,
                     on_failure: Callable[[str], messages.Message]) -> None:
        release = self.store.require(release_id)
        if not release.message_ts:
            return
        try:
            self._limit(release, "files.getUploadURLExternal")
            ticket = self.client.files_getUploadURLExternal(filename=filename, length=len(content))
            _upload(str(ticket["upload_url"]), content, timeout=self.client.timeout)
            self._limit(release, "files.completeUploadExternal")
            self.client.files_completeUploadExternal(
                files=[{"id": str(ticket["file_id"]), "title": title}], channel_id=release.channel_id,
                thread_ts=release.message_ts, initial_comment=comment)
        except (*SLACK_FAILURES, _UploadRefused) as exc:
            why = str(exc) if isinstance(exc, _UploadRefused) else _why(exc)
            log.warning("release %s: %s not attached: %s", release_id, filename, why)
            with self._locked(release_id) as current:
                self._post_in_thread(current, on_failure(why))

    def _limit(self, release: Release, method: str) -> None:
        if self.limiter is not None:
            self.limiter.acquire(release.team_id, method)

    def _post_in_thread(self, release: Release, msg: messages.Message) -> str:
        self._limit(release, "chat.postMessage")
        try:
            response = self.client.chat_postMessage(
                channel=release.channel_id, thread_ts=release.message_ts, **msg.as_kwargs()
            )
        except SLACK_FAILURES as exc:
            log.warning("release %s: thread post failed: %s", release.release_id, _why(exc))
            return ""
        return str(response["ts"])

    def _update(self, release: Release, ts: str, msg: messages.Message) -> None:
        self._limit(release, "chat.update")
        try:
            self.client.chat_update(channel=release.channel_id, ts=ts, **msg.as_kwargs())
        except SLACK_FAILURES as exc:
            log.warning("release %s: chat.update failed: %s", release.release_id, _why(exc))


def _upload(url: str, content: bytes, *, timeout: float) -> None:
    """POST the file's bytes to the upload URL ``files.getUploadURLExternal`` gave (stdlib: the bot's side of edgebot
    imports no HTTP client of its own); _UploadRefused unless Slack answers 200."""
    if not url.startswith(("https://", "http://")):
        raise _UploadRefused("upload_url_not_http")
    request = urllib.request.Request(url, data=content, method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # http(s) only, checked above
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:  # URLError, timeouts, refused connections
        raise _UploadRefused(f"upload_failed_{type(exc).__name__}") from None
    if status != 200:
        raise _UploadRefused(f"upload_http_{status}")
