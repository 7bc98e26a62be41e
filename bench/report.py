"""docs/BENCHMARKS.md is written section by section: each benchmark replaces its own ``## …`` section (or appends
it) and leaves the others as the last run of their benchmark left them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PATH = ROOT / "docs" / "BENCHMARKS.md"
HEADER = """# Benchmarks

Each section is written by its own benchmark (`make bench`: ack latency, pipeline overhead, rollout scale, Slack
burst; `make soak`: the soak run), with the machine and date it ran on. Shared, noisy machines: read the ratios
against the baseline measured in the same run, not the absolute numbers. `make test` runs a smoke version only.
"""


def write_section(text: str, path: Path = PATH) -> None:
    """``text`` starts with its ``## heading`` line; that section is replaced, or appended when it is new."""
    heading = text.splitlines()[0]
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with '## ': {heading!r}")
    current = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    body = text.rstrip("\n") + "\n\n"
    updated = pattern.sub(lambda _: body, current) if pattern.search(current) else current.rstrip("\n") + "\n\n" + body
    path.write_text(updated.rstrip("\n") + "\n")


def save_results(name: str, results: dict[str, Any]) -> None:
    """``bench/out/<name>.json`` (all a smoke run leaves behind), and the same JSON on stdout."""
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


def write_measured(text: str, command: str, machine: str) -> None:
    """Write section ``text`` stamped with the command that measured it, the machine and today's date."""
    write_section(text.rstrip("\n") + f"\n\nMeasured by `{command}` on {machine}, {time.strftime('%Y-%m-%d')}.\n")
