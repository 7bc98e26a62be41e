"""docs/BENCHMARKS.md is written section by section: one benchmark never erases another's results."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import HEADER, write_section


def test_a_section_is_replaced_in_place_and_the_others_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    write_section("## Ack\n\nold ack\n", path)
    write_section("## Soak\n\nsoak numbers\n", path)
    write_section("## Ack\n\nnew ack\n", path)
    text = path.read_text()
    assert text.startswith(HEADER)
    assert "new ack" in text and "old ack" not in text and "soak numbers" in text
    assert text.index("## Ack") < text.index("## Soak"), "a replaced section keeps its place"


def test_a_section_must_start_with_its_heading(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_section("no heading\n", tmp_path / "BENCHMARKS.md")
