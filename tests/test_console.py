"""`edgebot sandbox` driven the way a person uses it: on a pseudo-terminal, typing lines and pressing Ctrl-C.

The console runs as its own process with the pty as its controlling terminal, so Ctrl-C is the terminal's SIGINT,
not a signal the test sends. Assertions are on what the screen shows (ANSI codes stripped), with generous deadlines.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import pty
import re
import signal
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.proc_base import wait_until
from sandbox.stack import BOT_TOKEN, EXCHANGE_PASSWORD, PULL_PASSWORD, PUSH_PASSWORD, SIGNING_SECRET

pytestmark = pytest.mark.slow

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CLEARED_LINE_RE = re.compile(r"[^\n]*\r\x1b\[K")
"""What a terminal erases: the line so far, when the console writes carriage return + erase-line over it."""
ROOT = Path(__file__).resolve().parent.parent
SELECT_SYSCALLS = {"x86_64": ("23", "270"), "aarch64": ("72",)}
"""Syscall numbers of select and pselect6 (what readline waits for a key in), as /proc/PID/syscall shows them."""


def _controlling_tty() -> None:
    """In the child: a session of its own whose controlling terminal is the pty on stdin (as a login shell has)."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """The console on a pty: ``type`` a line, read the ``screen``."""

    def __init__(self, args: list[str]) -> None:
        self._master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                                     preexec_fn=_controlling_tty, close_fds=True)
        os.close(slave)
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: the console exited and the pty closed
                return
            if not chunk:
                return
            with self._lock:
                self._raw.extend(chunk)

    @property
    def screen(self) -> str:
        with self._lock:
            text = self._raw.decode("utf-8", "replace")
        return ANSI_RE.sub("", CLEARED_LINE_RE.sub("", text)).replace("\r", "")

    def type(self, line: str) -> None:
        os.write(self._master, line.encode() + b"\n")

    def ctrl_c(self) -> None:
        """Press Ctrl-C once the console waits at its prompt. CPython's readline loop checks signals only when its
        select() is interrupted: a SIGINT that lands between drawing the prompt and entering select() waits for the
        next key press. A person never notices (the window is microseconds, and they press again); a test that
        presses right after the prompt appears can hit it on a loaded machine, so it waits for the kernel to report
        the console's main thread in select() on stdin alone (nfds 1)."""
        wait_until(self._waiting_on_stdin, timeout=60, interval=0.05, what="the console to wait at its prompt")
        os.write(self._master, b"\x03")

    def _waiting_on_stdin(self) -> bool:
        try:
            fields = Path(f"/proc/{self.proc.pid}/syscall").read_text().split()
        except OSError:
            return False
        return len(fields) > 1 and fields[0] in SELECT_SYSCALLS.get(platform.machine(), ()) and fields[1] == "0x1"

    def wait_exit(self, timeout: float, what: str) -> None:
        """Wait for the console to exit; if it does not, fail with the screen and where each of its threads is."""
        try:
            wait_until(lambda: self.proc.poll() is not None, timeout=timeout, what=what)
        except TimeoutError:
            os.kill(self.proc.pid, signal.SIGUSR1)  # faulthandler: every thread's stack on the console's stderr
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: "most recent call first" in self.screen, timeout=10, what="the stacks")
            raise AssertionError(f"timed out waiting for {what}:\n{self.screen[-6000:]}") from None

    def wait_for(self, pattern: str, timeout: float, *, after: int = 0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the console exited ({self.proc.returncode}):\n{self.screen[-3000:]}")
            return re.compile(pattern).search(self.screen, after)

        try:
            return wait_until(found, timeout=timeout, interval=0.2, what=repr(pattern))  # type: ignore[no-any-return]
        except TimeoutError:
            raise AssertionError(f"{pattern!r} not on the screen:\n{self.screen[-4000:]}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        os.close(self._master)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal([sys.executable, "-m", "edgebot", "sandbox", "--arch", "amd64", "--poll-interval", "0.3"])
    try:
        yield term
    finally:
        term.close()


def test_publish_approve_switch_user_and_ctrl_c(terminal: Terminal) -> None:
    banner = terminal.wait_for(r"bot (http://127\.0\.0\.1:\d+) · secrets from OpenBao at (\S+) · config (\S+)",
                               timeout=300)
    bot_url, vault_url, config_path = banner.group(1), banner.group(2), Path(banner.group(3))
    terminal.wait_for(r"You are @requester", timeout=30)
    config = config_path.read_text()
    assert "vault:secret/data/edgebot/publish#signing_key" in config and "env:EDGEBOT_" not in config.replace(
        "env:EDGEBOT_VAULT_", "").replace("env:EDGEBOT_REDIS_PASSWORD", "")  # each process: its role's Redis user

    terminal.type("/edge publish hello 1.1.0 --registry local")
    queued = terminal.wait_for(r"\(only visible to you\)\n\s+Queued release `(r-(?:[0-9a-f]{16}|[0-9a-f]{6}))`",
                               timeout=60)
    release_id = queued.group(1)
    # the root message appears, then is edited in place as the release moves on
    terminal.wait_for(r"\+ #releases\s+\S+ hello 1\.1\.0 → local, requested by @requester", timeout=120)
    summary = r"✔ @requester hello 1\.1\.0 → local is published to org `acme`\."
    approval = r"\[(\d+): Approve[^\]]*\]"
    outcome = terminal.wait_for(f"{summary}|{approval}", timeout=300, after=queued.end())
    if outcome.group(0).startswith("["):  # approvals are in: a second person approves the card
        terminal.type("/as approver1")
        terminal.wait_for(r"you are now @approver1", timeout=30)
        terminal.type(f"approve {release_id}")
        terminal.wait_for(r"» @approver1 clicks \[Approve", timeout=30)
        outcome = terminal.wait_for(summary, timeout=300, after=outcome.end())
    screen = terminal.screen
    assert re.search(rf"~ #releases\s+✔ hello 1\.1\.0 → local, requested by @requester \(edited\)\n\s+published · "
                     rf"release `{release_id}`", screen[queued.end():]), "the root was redrawn when it changed"
    assert re.search(rf"{release_id} ├\s+✔ @requester hello 1\.1\.0 → local is published", screen)
    assert "service `acme/hello_1.1.0_amd64` (created)" in screen[outcome.start():]

    # another person: the prompt and the signed user change, the bot refuses a visitor by name
    terminal.type("/as visitor")
    terminal.wait_for(r"you are now @visitor \(U0VISITOR", timeout=30)
    mark = len(terminal.screen)
    terminal.type("/edge publish hello 1.1.0 --registry local")
    refused = terminal.wait_for(r"» @visitor in #releases: /edge publish hello 1\.1\.0 --registry local\n"
                                r"\(only visible to you\)\n\s+⛔ You don't have the `publish` permission for `hello`",
                                timeout=60, after=mark)
    assert "@requester, @release-approvers" in terminal.screen[refused.end():]
    terminal.type("thread")
    terminal.wait_for(rf"#releases · thread {release_id}\n✔ hello 1\.1\.0 → local", timeout=30, after=refused.end())
    terminal.type("click 99")
    terminal.wait_for(r"there is no button 99", timeout=30)

    # Ctrl-C: the terminal's SIGINT; everything the console started stops
    terminal.ctrl_c()
    terminal.wait_exit(timeout=180, what="the console to exit after Ctrl-C")
    assert terminal.proc.returncode == 130, terminal.screen[-2000:]
    screen = terminal.screen
    assert "» interrupted" in screen and screen.rstrip().endswith("» stopped")
    for stopped in (bot_url + "/healthz", vault_url + "/v1/sys/health"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(stopped, timeout=5)
    assert not config_path.parent.exists(), "the working directory is removed"
    for secret in (PUSH_PASSWORD, PULL_PASSWORD, EXCHANGE_PASSWORD, SIGNING_SECRET, BOT_TOKEN):
        assert secret not in screen


def _demo(tmp_path: Path, *, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """``sigint_ignored``: started the way a script's background job starts it, with SIGINT ignored (inherited)."""
    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "sandbox.demo"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)},
                            preexec_fn=ignore_sigint if sigint_ignored else None)


def test_make_demo_ends_with_the_final_summary_and_leaves_nothing(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    try:
        out, _ = demo.communicate(timeout=600)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGTERM)
            demo.wait(timeout=120)
    assert demo.returncode == 0, out[-4000:]
    assert re.search(r"secrets in OpenBao at http://127\.0\.0\.1:\d+: .* config \S+ holds only references", out)
    thread = out[out.rindex("#releases · thread r-"):]
    assert re.search(r"✔ hello 1\.1\.0 → local, requested by @requester \(edited\)\n\s+published · release", thread)
    assert "✔ @requester hello 1.1.0 → local is published to org `acme`." in thread
    for arch in ("amd64", "arm64"):
        assert f"service `acme/hello_1.1.0_{arch}` (created)" in thread
    if "the approval card is in the thread" in out:  # approvals are in: the second person's click went through
        assert "@approver1 presses [Approve" in out
    assert out.rstrip().endswith("ended: succeeded")
    for secret in (PUSH_PASSWORD, PULL_PASSWORD, EXCHANGE_PASSWORD, SIGNING_SECRET, BOT_TOKEN):
        assert secret not in out
    assert not list(tmp_path.glob("edgebot-demo-*")), "the demo removed its working directory"


def test_make_demo_interrupted_stops_everything(tmp_path: Path) -> None:
    demo = _demo(tmp_path, sigint_ignored=True)  # Ctrl-C works even then: the demo installs its own handler
    assert demo.stdout is not None
    seen: list[str] = []
    try:
        for line in demo.stdout:  # Ctrl-C once the release is queued: it runs for seconds after the bot's ack
            seen.append(line)
            if line.startswith("» bot acked in"):
                break
        else:
            raise AssertionError("".join(seen[-50:]))
        vault_url = re.search(r"secrets in OpenBao at (\S+):", "".join(seen)).group(1)  # type: ignore[union-attr]
        os.kill(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=180)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=60)
    assert demo.returncode == 130, "".join(seen) + rest
    assert "interrupted: stopping everything" in rest
    with pytest.raises(httpx.HTTPError):
        httpx.get(vault_url + "/v1/sys/health", timeout=5)
    assert not list(tmp_path.glob("edgebot-demo-*")), "the demo removed its working directory"
