"""The smoke run per arch (issue 14): its catalog table and the bounded result a build worker reports.

    [services.hello.smoke]
    command = ["/bin/busybox", "wget", "--help"]   # run in each built image, as its exact command (the entrypoint)
    timeout = 30                                    # seconds; then the container is killed and the release fails

The build worker (workers/smoke_run.py) runs the command in each image it built, for the image's platform (under QEMU
where the arch is not native), with no network and the ``smoke_*`` settings' limits, before the push. Exit 0 passes:
the exit code and the last output lines travel in the build report (bounded by :func:`bounded`: a build worker runs
untrusted Dockerfiles) and go on the approval card next to the digest. Anything else fails the release before the
push, with those lines in the thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgebot.errors import ConfigError, refuse_unknown_keys

COMMAND_MAX_ARGS, ARG_MAX, TIMEOUT_MAX = 64, 1000, 3600
LINE_MAX, LINES_MAX = 300, 50
"""Bounds on what a build report's smoke result may carry (an honest one stays inside them)."""


@dataclass(frozen=True)
class SmokeConfig:
    command: tuple[str, ...]
    timeout: float = 30.0

    def shown(self) -> str:
        """The command as one line, for messages (catalog text: trusted, still escaped where it is shown)."""
        return " ".join(self.command)


def parse_smoke(table: Any, where: str) -> SmokeConfig | None:
    """``[services.X.smoke]`` → :class:`SmokeConfig` (None when absent), with a message naming the fix."""
    if table is None:
        return None
    example = 'e.g. command = ["/bin/app", "--self-test"], timeout = 30'
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table with a command: {example}")
    refuse_unknown_keys(table, f"[{where}]", {"command", "timeout"})
    command = table.get("command")
    if (not isinstance(command, list) or not command or len(command) > COMMAND_MAX_ARGS
            or not all(isinstance(a, str) and a and len(a) <= ARG_MAX for a in command)):
        raise ConfigError(f"{where}.command must be a non-empty list of strings, the program first ({example}); "
                          "it runs without a shell: write [\"/bin/sh\", \"-c\", \"…\"] for one")
    timeout = table.get("timeout", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= TIMEOUT_MAX:
        raise ConfigError(f"{where}.timeout must be a number of seconds between 1 and {TIMEOUT_MAX} ({example})")
    return SmokeConfig(command=tuple(command), timeout=float(timeout))


@dataclass(frozen=True)
class SmokeResult:
    """What one smoke run showed: the exit code (None: killed at the timeout) and its last output lines."""

    command: str
    exit_code: int | None
    tail: tuple[str, ...] = ()
    timeout: float = 0.0

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def to_report(self) -> dict[str, Any]:
        return {"command": self.command, "exit_code": self.exit_code, "tail": list(self.tail),
                "timeout": self.timeout}


def bounded(raw: Any, lines: int) -> SmokeResult | None:
    """A build report's ``smoke`` value (untrusted: a build worker's claim) as a :class:`SmokeResult` of bounded size
    and plain types, or None when it is absent or not of that form."""
    if not isinstance(raw, dict) or not raw:
        return None
    code = raw.get("exit_code")
    if not (code is None or (isinstance(code, int) and not isinstance(code, bool))):
        return None
    tail = raw.get("tail")
    tail = [str(t)[:LINE_MAX] for t in tail] if isinstance(tail, list) else []
    timeout = raw.get("timeout")
    return SmokeResult(command=str(raw.get("command", ""))[:LINE_MAX],
                       exit_code=None if code is None else max(-(2**31), min(2**31, code)),
                       tail=tuple(tail[-max(1, min(lines, LINES_MAX)):]),
                       timeout=float(timeout) if isinstance(timeout, (int, float)) else 0.0)
