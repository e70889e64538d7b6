"""How many image worker processes the launcher starts: by the cores, within a share of the machine's memory."""

from __future__ import annotations

import pytest

from process_launch import processes
from process_launch.processes import IMAGE_PROCESS_BASELINE_MB, IMAGE_WORKER_MEMORY_SHARE, image_worker_concurrency

GiB = 1 << 30


def test_a_machine_with_memory_to_spare_gets_one_process_a_core() -> None:
    assert image_worker_concurrency({}, 2, 64 * GiB) == "2"
    assert image_worker_concurrency({}, 4, None) == "4"  # memory unknown: the cores alone


@pytest.mark.parametrize(
    ("memory", "budget_mb", "expected"),
    [
        (1 * GiB, None, 1),  # 512 MiB / (128 + 384) MiB
        (2 * GiB, None, 2),
        (4 * GiB, "64", 8),  # the cores bound it first
        (8 * GiB, "1024", 3),
        (256 << 20, None, 1),  # never none at all
    ],
)
def test_a_small_machine_gets_only_what_its_memory_holds_at_each_processs_worst(
    memory: int, budget_mb: str | None, expected: int
) -> None:
    env = {} if budget_mb is None else {"IMAGE_DECODE_BUDGET_MB": budget_mb}
    count = int(image_worker_concurrency(env, 8, memory))
    assert count == expected
    worst = (IMAGE_PROCESS_BASELINE_MB + int(budget_mb or 384)) << 20
    assert count == 1 or count * worst <= IMAGE_WORKER_MEMORY_SHARE * memory


def test_worker_concurrency_wins_when_set() -> None:
    assert image_worker_concurrency({"WORKER_CONCURRENCY": "40"}, 2, 1 * GiB) == "40"


def test_a_malformed_budget_stops_the_start_naming_it() -> None:
    with pytest.raises(SystemExit, match="IMAGE_DECODE_BUDGET_MB"):
        image_worker_concurrency({"IMAGE_DECODE_BUDGET_MB": "big"}, 2, 4 * GiB)


def test_the_worker_is_started_with_the_derived_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(processes, "machine_memory", lambda: 2 * GiB)
    argv = processes.commands({})["worker"]
    assert argv[argv.index("--concurrency") + 1] == "2"


def test_the_machines_memory_is_known_here() -> None:
    memory = processes.machine_memory()
    assert memory is None or memory > 64 << 20
