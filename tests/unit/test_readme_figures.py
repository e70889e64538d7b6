"""What the README says about memory and quality=auto is what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config import DEFAULT_IMAGE_DECODE_BUDGET_MB, Settings
from imaging import budget, quality_search
from process_launch import processes

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(title: str) -> str:
    """The README's section under ``title`` (a ``##`` or ``###`` heading), up to the next heading of its level."""
    match = re.search(rf"^(#+) {re.escape(title)}\n(.*?)(?=^\1 )", README, re.S | re.M)
    assert match, f"no section {title!r} in the README"
    return match.group(2)


def setting_row(name: str) -> list[str]:
    row = next(line for line in README.splitlines() if line.startswith(f"| `{name}` |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_quality_auto_claims_no_more_than_its_extra_steps_reach() -> None:
    text = " ".join(section("Perceptual quality: `quality=auto`").split())
    assert quality_search.AUTO_EXTRA_ENCODES == 2
    assert "goes up a step (twice at most, to 95)" in text
    assert "whenever any quality can" not in text
    assert "might have met it" in text  # says when the stored score stays below the target


def test_the_settings_table_gives_the_memory_settings_defaults(tmp_path) -> None:
    defaults = Settings.from_env({"INSTANCE_DIR": str(tmp_path)})
    assert setting_row("IMAGE_DECODE_BUDGET_MB")[1] == f"`{DEFAULT_IMAGE_DECODE_BUDGET_MB}`"
    assert DEFAULT_IMAGE_DECODE_BUDGET_MB << 20 == defaults.image_decode_budget_bytes == budget.DEFAULT_BUDGET
    assert setting_row("STATUS_CACHE_BYTES")[1] == f"`{defaults.status_cache_bytes}` (32 MiB)"


def test_the_memory_section_gives_the_launchers_sizing_and_the_worst_case() -> None:
    text = " ".join(section("Memory").split())
    share, per_core = processes.IMAGE_WORKER_MEMORY_SHARE, processes.IMAGE_PROCESSES_PER_CORE
    baseline = processes.IMAGE_PROCESS_BASELINE_MB
    assert f"min({per_core} x cores, {share} x memory / ({baseline} MiB + IMAGE_DECODE_BUDGET_MB))" in text
    assert f"{baseline + DEFAULT_IMAGE_DECODE_BUDGET_MB} MiB by default" in text
    assert f"processes x ({baseline} MiB + `IMAGE_DECODE_BUDGET_MB`)" in text
    assert "a page over a quarter of the cache (8 MiB) is never kept but streamed" in text


@pytest.mark.parametrize(
    ("output_format", "fixed", "auto"), [("jpeg", "JPEG 0.5", "JPEG 6"), ("webp", "WebP 8", "WebP 22")]
)
def test_the_memory_table_gives_the_encoders_figures(output_format: str, fixed: str, auto: str) -> None:
    text = section("Memory")
    assert f"{budget.ENCODER_BYTES_PER_PIXEL[output_format, False]:g}" == fixed.split()[1]
    assert f"{budget.ENCODER_BYTES_PER_PIXEL[output_format, True]:g}" == auto.split()[1]
    assert fixed in text and auto in text
    assert f"AVIF {budget.ENCODER_BYTES_PER_PIXEL['avif', False]:g}" in text
