"""docs/BENCHMARKS.md is written section by section: each benchmark replaces its own ``## …`` section (or appends
it) and leaves the others as the last run of their benchmark left them."""

from __future__ import annotations

import re
from pathlib import Path

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
