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


def test_the_cross_arch_and_rollout_sections_render_from_their_results() -> None:
    from bench import cross_arch, rollout_scale

    spread = {"min": 1.0, "median": 2.0, "max": 3.0}
    cross = {"parallelism": {"rounds": 3, "loops": 10, "amd64_s": spread, "arm64_s": spread, "wall_s": spread,
                             "ratio": spread, "ideal": spread},
             "registry_cache": {"rounds": 3, "loops": 10, "cold_s": spread, "rebuild_s": spread, "ratio": 0.4},
             "machine": "x86_64 Linux, 2 CPUs"}
    text = cross_arch.report_section(cross)
    assert text.startswith(cross_arch.SECTION) and "| rebuild ÷ cold (medians) | 0.4× |" in text
    size = {"nodes": 1000, "payload_mb": 1.2, "exchange_requests_per_interval": 1.0, "fetching_poll_cpu_ms": spread,
            "cached_poll_cpu_ms": spread, "baseline_decode_cpu_ms": spread, "fetching_ratio": 1.5,
            "cached_ratio": 1.1, "wrong_counts": 0, "rollouts": 3, "poll_interval_s": 3.0, "intervals": 6,
            "samples_per_arm": 9, "counts": {"total": 990}, "left_out_by_node_policy": 10}
    rendered = rollout_scale.report_section({"sizes": [size]})
    assert "| 1,000 (1.2 MB) | 1.0 |" in rendered and "1.5× / 1.1×" in rendered
    assert not rollout_scale.failed({"sizes": [size]})
    assert rollout_scale.failed({"sizes": [{**size, "wrong_counts": 1}]})
