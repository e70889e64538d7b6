"""Faults struck at the real processes mid-request; every check is made from outside.

Each test: start the service's processes on the suite's own PostgreSQL and Redis, upload a request
whose images are served slowly, strike, and then check that the request completes, every image
once, one output file each, and the webhook arrived once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests
import sqlalchemy
from harness import kill_tree_of, wait_for
from invariants import not_completed, require_completed
from scenario import IMAGES, check_complete, deliveries_for, start_request, wait_final, wait_progress
from support.api import csv_of, upload

pytestmark = pytest.mark.timeout(240)


# Every fault below strikes the same scenario (a request under way) and is judged by the same checks,
# so the tests share their shape and differ in the fault alone.
def test_worker_killed_mid_request(service, database, slow_source, receiver, report):
    service.start_all()
    request_id, urls = start_request(service, slow_source, receiver)
    report["finished_before_kill"] = wait_progress(service, request_id, IMAGES // 4)

    service.processes["worker"].kill_group()
    killed_at = time.monotonic()
    service.start_worker("worker-2")

    check_complete(service, database, slow_source, receiver, request_id, urls, report)
    report["fault"] = "SIGKILL of the worker and its pool"
    report["recovery_s"] = round(time.monotonic() - killed_at, 1)


def test_webhook_receiver_fails_then_accepts(service, database, slow_source, receiver, report):
    service.start_all()
    receiver.answer_with(500, 500, 503)
    # The last answer takes a second: the receiver has seen the attempt well before the worker records it.
    receiver.answer_delay_s = 1.0
    request_id, _ = start_request(service, slow_source, receiver, images=8)

    wait_final(service, request_id)
    wait_for(lambda: len(deliveries_for(receiver, request_id)) >= 4, 60, "four delivery attempts")
    log = delivery_log_once_answered(service, request_id)

    deliveries = deliveries_for(receiver, request_id)
    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1
    assert len({d["headers"]["webhook-timestamp"] for d in deliveries}) >= 2  # a fresh timestamp per attempt
    assert len(log["events"]) == 1
    event = log["events"][0]
    assert event["status"] == "DELIVERED"
    assert [a["status_code"] for a in event["attempts"]] == [500, 500, 503, 200]
    report.update(
        fault="receiver answers 500, 500, 503, then 200",
        events=1,
        attempts=len(event["attempts"]),
        deliveries=len(deliveries),
    )


def delivery_log_once_answered(service, request_id: str, timeout_s: float = 15) -> dict:
    """The request's webhook deliveries once its event is no longer PENDING (or the last seen after the time-out).

    The receiver sees an attempt as it arrives, before the worker has its answer and records it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        url = f"{service.base_url}/api/requests/{request_id}/webhook-deliveries"
        log = requests.get(url, timeout=10).json()
        if time.monotonic() > deadline or any(event["status"] != "PENDING" for event in log["events"]):
            return log
        time.sleep(0.2)


def test_every_process_of_make_run_killed(service, database, slow_source, receiver, report):
    launcher = service.start_launcher()
    request_id, urls = start_request(service, slow_source, receiver)
    report["finished_before_kill"] = wait_progress(service, request_id, IMAGES // 4)

    killed = kill_tree_of(launcher.process.pid)
    launcher.process.wait(timeout=20)
    wait_for(lambda: not service.answers(), 10, "the API to be gone")
    killed_at = time.monotonic()
    service.start_launcher()

    check_complete(service, database, slow_source, receiver, request_id, urls, report)
    report["fault"] = f"SIGKILL of all {len(killed)} processes of the launcher (API, worker, beat)"
    report["recovery_s"] = round(time.monotonic() - killed_at, 1)


def test_poison_image_fails_after_bounded_attempts(service, database, loopback_server, receiver, report):
    """An image whose processing kills its worker process every time ends FAILED, not in a loop."""
    service.start_all()
    worker = service.processes["worker"]
    requests_seen = []

    def kill_the_worker_processing_it(request):
        requests_seen.append(time.monotonic())
        children = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True)
        for pid in children.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
        request.close_connection = True

    path = f"/poison/{time.monotonic_ns()}.jpg"
    loopback_server.route(path, kill_the_worker_processing_it)
    response = upload(service.base_url, csv_of([(1, "POISON", [loopback_server.url(path)])]), webhook_url=receiver.url)
    request_id = response.json()["request_id"]

    answer = wait_final(service, request_id, timeout_s=120)

    image = answer["products"][0]["images"][0]
    max_attempts = int(service.env.get("IMAGE_MAX_ATTEMPTS", "5"))
    told = not_completed(database, request_id)
    assert answer["status"] == "FAILED", f"request {answer['status']}; {told}"
    assert image["error"]["code"] == "too_many_attempts", told
    assert image["attempts"] == max_attempts, told
    assert len(requests_seen) == max_attempts
    wait_for(lambda: len(deliveries_for(receiver, request_id)) == 1, 30, "the webhook")
    assert worker.process.poll() is None  # the worker itself survived every crash of its pool
    report.update(
        fault="every attempt's pool process SIGKILLed (a poison image)",
        attempts=image["attempts"],
        source_requests=len(requests_seen),
        final=answer["status"],
        code=image["error"]["code"],
    )


def test_a_worker_whose_clock_runs_slow_keeps_its_claims(service, database, slow_source, receiver, report):
    """Leases are judged by the database's clock: a worker ten minutes slow is not taken for dead."""
    service.start_api()
    service.start_worker(wrapper=("faketime", "-f", "-600s"))
    service.start_worker("normal-clock")
    service.start_worker("webhooks", kind="webhooks")
    service.start_worker("maintenance", kind="maintenance")
    service.start_beat()
    source = slow_source
    source.delay_s = 0.6
    request_id, urls = start_request(service, source, receiver, images=24)

    answer = wait_final(service, request_id)

    require_completed(database, request_id, answer["status"])
    assert answer["status"] == "COMPLETED"
    assert source.downloads(urls) == len(urls)
    with database.connect() as connection:
        requeues = connection.execute(
            sqlalchemy.text("SELECT sum(requeues), sum(attempts) FROM images WHERE request_id = :id"),
            {"id": request_id},
        ).one()
    assert tuple(requeues) == (0, len(urls))
    report.update(fault="image worker's clock 600 s slow (faketime)", downloads=source.downloads(urls))
