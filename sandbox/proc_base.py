"""What every launcher in ``sandbox/processes.py`` shares: free ports, spawning with logs, readiness waits, stopping.

Each real part runs as a child process in its own session (so a stop reaches the whole process group) with its output
in a log file in its own directory. When the test run that started it is SIGKILLed, the child gets a signal too
(``PR_SET_PDEATHSIG``), so a crashed run does not leave a Redis or a dockerd behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

PR_SET_PDEATHSIG = 1
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
except (OSError, AttributeError):  # not Linux/glibc: children simply outlive a killed parent
    _prctl = None


class StartFailed(RuntimeError):
    """A real part did not start (or a setup command failed); the message ends with the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago on ``host`` (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_ready(predicate: Callable[[], object], *, timeout: float, what: str, log: Path | None = None,
               proc: subprocess.Popen[bytes] | None = None, interval: float = 0.1) -> None:
    """Poll ``predicate`` until it is truthy. Raises :class:`StartFailed` with the log tail on timeout or exit."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        if proc is not None and proc.poll() is not None:
            reason = f"{what} exited with status {proc.returncode} before it was ready"
            break
        try:
            if predicate():
                return
        except Exception as exc:  # not up yet: connection refused, TLS not ready...
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            reason = f"{what} was not ready within {timeout:.0f} s" + (f" (last error: {last_error})" if last_error
                                                                        else "")
            break
        time.sleep(interval)
    tail = log_tail(log)
    raise StartFailed(f"{reason}\n--- last lines of {log} ---\n{tail}" if tail else reason)


def _child_setup(death_signal: int) -> Callable[[], None] | None:
    """``preexec_fn`` that asks the kernel to signal the child when its parent dies.

    PDEATHSIG fires when the *thread* that forked exits, so it is only set for children started from the main thread
    (fixtures, the demo); a child started from a short-lived thread would otherwise die with that thread.
    """
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl

    def setup() -> None:
        prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)

    return setup


def spawn(args: Sequence[str], log: Path, *, death_signal: int = signal.SIGKILL,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` in a new session with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        try:
            return subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_child_setup(death_signal), env=env)
        except FileNotFoundError as exc:
            raise StartFailed(f"{args[0]} is not installed (scripts/install-system-deps.sh installs it)") from exc


def stop_process(proc: subprocess.Popen[bytes] | None, *, timeout: float = 10,
                 sig: int = signal.SIGTERM) -> None:
    """Signal the child's process group, wait, SIGKILL it if it lingers. A child that already died is fine."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # children of the group that outlived the leader (a crashed parent's helpers) get no second chance
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run(args: Sequence[str], *, what: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a setup command; with ``check`` a failure raises :class:`StartFailed` with its stderr."""
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if check and proc.returncode:
        raise StartFailed(f"{what or ' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Managed:
    """start()/stop() plus a context manager. ``start`` undoes a half-done start, so nothing leaks on failure."""

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
