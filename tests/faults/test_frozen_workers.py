"""A worker that stops and wakes up must not undo another's work.

A second image worker runs as another machine runs it (``launcher.py worker``); once it holds images, its
whole process group gets SIGSTOP (a machine paused, a VM migrated, a process swapped out) for longer than
the stale threshold, so that the sweeper gives its images to the other worker, and then SIGCONT while the
take-overs are still under way. Its time limits passed while it was stopped: its soft limit strikes the
moment it wakes, and whatever it then writes must not count. Checked from outside: the request ends
COMPLETED, each image has one output and storage holds nothing else, nothing changes once the request is
final (not even after the woken worker's time limits have run out), and the webhook is delivered once.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from harness import ServiceProcess, wait_for
from invariants import (
    changes_between,
    completion_problems,
    fail_on,
    files_in,
    output_problems,
    outputs_of,
    snapshot,
)
from scenario import deliveries_for, start_request, wait_final, wait_progress

pytestmark = pytest.mark.timeout(180)

IMAGES = 48
STALE_S = 15
HARD_S = 10
#: Short limits that nest as config.py requires (soft < hard < visibility timeout, hard < stale), and a
#: fetch deadline past the freeze: what strikes the woken worker is its soft time limit, as in production.
FROZEN_SETTINGS = {
    "STALE_IMAGE_AFTER_S": str(STALE_S),
    "TASK_SOFT_TIME_LIMIT_S": "8",
    "TASK_TIME_LIMIT_S": str(HARD_S),
    "BROKER_VISIBILITY_TIMEOUT_S": "60",
    "SWEEP_INTERVAL_S": "1",
    "FETCH_READ_TIMEOUT_S": "10",
    "FETCH_TOTAL_TIMEOUT_S": "60",
}
#: The first download of each image, and every later one: a take-over is still downloading for that long.
FIRST_DOWNLOAD_S = 1.5
TAKE_OVER_DOWNLOAD_S = 4.0
STALLED_STORE = Path(__file__).parent / "stalled_store"


@pytest.fixture
def frozen_service(service):
    service.env.update(FROZEN_SETTINGS)
    return service


@pytest.fixture
def slow_again_source(slow_source):
    slow_source.delay_s = FIRST_DOWNLOAD_S
    slow_source.again_delay_s = TAKE_OVER_DOWNLOAD_S
    return slow_source


def held_by(database: sqlalchemy.Engine, request_id: str, tasks: set[str]) -> dict[int, str]:
    """The request's images being processed by one of ``tasks``: image id -> task id."""
    with database.connect() as connection:
        rows = connection.execute(
            sqlalchemy.text("SELECT id, claimed_by FROM images WHERE request_id = :id AND status = 'PROCESSING'"),
            {"id": request_id},
        ).all()
    return {image_id: task for image_id, task in rows if task in tasks}


def frozen_in_a_transaction(database) -> int:
    """Sessions left in a transaction (so maybe holding row locks) for over half a second: a frozen process's."""
    with database.connect() as connection:
        return connection.execute(
            sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%' AND state_change < now() - interval '0.5 seconds'"
            )
        ).scalar()


def freeze_while_holding(worker: ServiceProcess, database, request_id: str, report: dict) -> dict[int, str]:
    """SIGSTOP the worker's process group at a moment it holds images; the images it held, frozen.

    Not in the middle of a transaction: the rows it locked would hold every other worker's writes to its
    request, and the sweep, until it woke (a liveness matter, not this test's; counted in the report).
    """
    deadline = time.monotonic() + 60
    report["refrozen_out_of_a_transaction"] = 0
    while time.monotonic() < deadline:
        if held_by(database, request_id, worker.image_tasks()):
            worker.freeze()
            time.sleep(0.6)
            held = held_by(database, request_id, worker.image_tasks())
            in_transaction = frozen_in_a_transaction(database)
            if held and not in_transaction:
                return held
            report["refrozen_out_of_a_transaction"] += bool(in_transaction)
            worker.thaw()  # it finished them just before it stopped, or stopped in a transaction: again
        time.sleep(0.1)
    raise AssertionError(f"{worker.name} never held an image of {request_id}:\n{worker.log()[-3000:]}")


def wait_taken_over(database, frozen: dict[int, str], timeout_s: float = 60) -> dict[int, str]:
    """Wait until the sweeper released every frozen image and another task claimed each; their states then."""

    def states() -> dict[int, str] | None:
        with database.connect() as connection:
            rows = connection.execute(
                sqlalchemy.text("SELECT id, status, claimed_by, requeues FROM images WHERE id = ANY(:ids)"),
                {"ids": list(frozen)},
            ).all()
        taken = {
            row.id: row.status
            for row in rows
            if row.requeues > 0 and (row.status != "PENDING" and row.claimed_by != frozen[row.id])
        }
        return taken if len(taken) == len(frozen) else None

    return wait_for(states, timeout_s, f"images {sorted(frozen)} to be taken over", interval_s=0.1)


@dataclass(frozen=True)
class Woken:
    """A worker continued after a freeze: when, and the images (and their tasks) it held while frozen."""

    worker: ServiceProcess
    frozen: dict[int, str]
    at: float


def outcomes_of(worker: ServiceProcess, frozen: dict[int, str]) -> dict[int, str]:
    """What the worker's log says its task of each frozen image returned or raised ("?" if nothing yet)."""
    log = worker.log()
    found = {}
    for image_id, task in frozen.items():
        ended = re.findall(rf"process_image\[{task}\] (succeeded in [0-9.]+s: .*|raised .*)", log)
        found[image_id] = ended[-1][:200] if ended else "?"
    return found


def check_nothing_undone(
    service, database, receiver, request_id: str, urls: list[str], woken: Woken, report: dict
) -> None:
    """COMPLETED, one output each and nothing else stored, nothing changed after final, one webhook: every
    check made, and every problem told at once."""
    answer = wait_final(service, request_id)
    media = Path(service.env["INSTANCE_DIR"]) / "media"
    at_final = snapshot(database, request_id, files_in(media))
    final_after_wake_s = time.monotonic() - woken.at
    problems = completion_problems(database, request_id, answer["status"])
    outputs = outputs_of(database, request_id, files_in(media))
    problems += output_problems(outputs, len(urls))
    # Whatever the woken worker still had to do is over once each of its frozen tasks has ended, which its
    # hard time limit, even counted from its waking (as if its clock had stood still), bounds.
    deadline = woken.at + HARD_S + 2
    while "?" in outcomes_of(woken.worker, woken.frozen).values() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    problems += changes_between(at_final, snapshot(database, request_id, files_in(media)))
    deadline = time.monotonic() + 30
    while not deliveries_for(receiver, request_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    deliveries = deliveries_for(receiver, request_id)
    if len(deliveries) != 1:
        problems.append(f"{len(deliveries)} deliveries of the webhook")
    report.update(
        images=len(urls),
        final_after_wake_s=round(final_after_wake_s, 1),
        outputs=len(outputs.pointed_at),
        output_rows_without_object=outputs.unstored_rows,
        webhook_deliveries=len(deliveries),
        woken_worker_outcomes=sorted(outcomes_of(woken.worker, woken.frozen).values()),
    )
    fail_on(problems)


def test_a_frozen_worker_wakes_after_its_images_were_taken_over(
    frozen_service, database, slow_again_source, receiver, report
):
    service = frozen_service
    service.start_all()
    second = service.start_role("second-worker")
    request_id, urls = start_request(service, slow_again_source, receiver, images=IMAGES)
    wait_progress(service, request_id, 4)

    frozen = freeze_while_holding(second, database, request_id, report)
    frozen_at = time.monotonic()
    at_thaw = wait_taken_over(database, frozen)
    second.thaw()
    woken = Woken(second, frozen, time.monotonic())

    report.update(
        fault=f"second worker's process group stopped while it held {len(frozen)} images, continued once"
        " the sweeper had given them to the other worker",
        frozen_images=len(frozen),
        frozen_s=round(woken.at - frozen_at, 1),
        taken_over_at_thaw=sorted(at_thaw.values()),
    )
    check_nothing_undone(service, database, receiver, request_id, urls, woken, report)


# Where the frozen worker stands in its store, and the limits it wakes with.
STALLS = {
    # The object not written yet. Its clock stood still while it was stopped (a paused VM): no time limit
    # strikes as it wakes (its limits outlast the freeze, so the pool's parent, whose timer thread may run
    # before the woken task, does not kill it), and it stores the object and records it, late.
    "late_store": {
        "FAULT_STALL_STORE_AT": "before_write",
        "TASK_SOFT_TIME_LIMIT_S": "40",
        "TASK_TIME_LIMIT_S": "45",
        "STALE_IMAGE_AFTER_S": "50",
    },
    # The object written, the store not returned: the soft time limit strikes there as it wakes.
    "time_limit_after_the_write": {"FAULT_STALL_STORE_AT": "after_write", "FAULT_STALL_STORE_LINGER_S": "30"},
}


@pytest.mark.parametrize("stall", list(STALLS))
def test_a_worker_frozen_in_the_middle_of_a_store(
    frozen_service, database, slow_again_source, receiver, report, tmp_path, stall
):
    service = frozen_service
    service.start_all()
    marker = tmp_path / "stalled-store"
    python_path = os.pathsep.join(filter(None, [str(STALLED_STORE), service.env.get("PYTHONPATH")]))
    # One pool process, the one that stalls: no other is frozen at a moment of its own, maybe in a transaction.
    second = service.start_role(
        "stalling-worker",
        PYTHONPATH=python_path,
        FAULT_STALL_STORE=str(marker),
        WORKER_CONCURRENCY="1",
        **STALLS[stall],
    )
    request_id, urls = start_request(service, slow_again_source, receiver, images=24)

    wait_for(marker.exists, 60, "the stalling worker to start a store")
    wait_for(lambda: marker.read_text().endswith("\n"), 5, "the stalled store's key")
    second.freeze()
    frozen_at = time.monotonic()
    stalled_key = marker.read_text().split()[1]
    frozen = held_by(database, request_id, second.image_tasks())
    assert frozen, f"the stalling worker held no image when frozen:\n{second.log()[-3000:]}"
    time.sleep(0.6)
    assert not frozen_in_a_transaction(database), "the stalling worker was frozen in a transaction"
    at_thaw = wait_taken_over(database, frozen)
    second.thaw()
    woken = Woken(second, frozen, time.monotonic())

    report.update(
        fault=f"worker stopped in the middle of a store ({stall}), continued once its images were taken over",
        frozen_images=len(frozen),
        frozen_s=round(woken.at - frozen_at, 1),
        taken_over_at_thaw=sorted(at_thaw.values()),
    )
    check_nothing_undone(service, database, receiver, request_id, urls, woken, report)
    media = Path(service.env["INSTANCE_DIR"]) / "media"
    pointed_at = {key for _, key in outputs_of(database, request_id, files_in(media)).pointed_at.values()}
    report["late_object"] = "the variant's own" if stalled_key in pointed_at else "removed"
    if STALLS[stall]["FAULT_STALL_STORE_AT"] == "before_write":
        assert f"stored {stalled_key}" in marker.read_text(), "the woken worker never finished its late store"
