"""Faults struck at the real processes mid-request; every check is made from outside.

Each test: start the service's processes on the suite's own PostgreSQL and Redis, upload a request
whose images are served slowly, strike, and then check that the request completes, every image
once, one output file each, and the webhook arrived once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest
import requests
import sqlalchemy
from harness import kill_tree_of, wait_for
from invariants import not_completed, require_completed
from scenario import IMAGES, check_complete, deliveries_for, progress, start_request, wait_final, wait_progress
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


def test_redis_restarted_mid_request(service, database, redis_server, slow_source, receiver, report):
    service.start_all()
    request_id, urls = start_request(service, slow_source, receiver)
    report["finished_before_fault"] = wait_progress(service, request_id, IMAGES // 4)

    redis_server.stop()
    time.sleep(2)
    redis_server.start()
    restarted_at = time.monotonic()

    check_complete(service, database, slow_source, receiver, request_id, urls, report)
    report["fault"] = "Redis killed and restarted empty (no persistence): every queued message lost"
    report["recovery_s"] = round(time.monotonic() - restarted_at, 1)


def test_postgres_restarted_mid_request(service, database, postgres, slow_source, receiver, report):
    service.start_all()
    request_id, urls = start_request(service, slow_source, receiver)
    report["finished_before_fault"] = wait_progress(service, request_id, IMAGES // 4)

    postgres.stop()
    try:
        ready = requests.get(f"{service.base_url}/readyz", timeout=10)
        status = requests.get(f"{service.base_url}/api/status/{request_id}", timeout=10)
        time.sleep(2)
    finally:
        postgres.start()
    restarted_at = time.monotonic()

    assert ready.status_code == 503
    assert "database" in ready.json()["error"]["message"]
    assert status.status_code == 503 and status.json()["error"]["code"] == "database_unavailable"
    wait_for(lambda: requests.get(f"{service.base_url}/readyz", timeout=10).status_code == 200, 30, "ready again")
    check_complete(service, database, slow_source, receiver, request_id, urls, report)
    report["fault"] = "PostgreSQL stopped (fast) for 2 s and started again"
    report["readyz_while_down"] = ready.status_code
    report["recovery_s"] = round(time.monotonic() - restarted_at, 1)


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


def test_upload_while_the_broker_is_down(service, database, redis_server, slow_source, receiver, report):
    service.start_all()
    redis_server.stop()
    try:
        started = time.monotonic()
        request_id, urls = start_request(service, slow_source, receiver, images=20)
        report["upload_answer_s"] = round(time.monotonic() - started, 2)
        ready = requests.get(f"{service.base_url}/readyz", timeout=10)
        assert ready.status_code == 503 and "broker" in ready.json()["error"]["message"]
        assert progress(service, request_id)["status"] == "PENDING"
    finally:
        redis_server.start()
    back_at = time.monotonic()

    check_complete(service, database, slow_source, receiver, request_id, urls, report)
    report["fault"] = "upload with Redis down, Redis started afterwards"
    report["recovery_s"] = round(time.monotonic() - back_at, 1)


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


def test_redis_restarted_under_steady_traffic(service, database, redis_server, slow_source, receiver, report):
    """Tenant A's big request runs while tenant B's small ones arrive every second, more than the workers keep
    up with, so the queue is never empty; Redis dies and comes back empty. A's request finishes while the
    traffic goes on, and every one of B's too."""
    tenant_a, tenant_b = "tenant-a-key", "tenant-b-key"
    service.env["API_KEYS"] = f"{tenant_a},{tenant_b}"
    # Long enough that the lost images do not count as stale before the traffic has refilled the queue:
    # what recovers them must be the count, not the age.
    service.env["STALE_IMAGE_AFTER_S"] = "30"
    service.api_key = tenant_a
    service.start_all()
    # Half the usual request: the traffic gives it half the workers, and the test waits for all of B's after it.
    big_images = IMAGES // 2
    big_id, big_urls = start_request(service, slow_source, receiver, images=big_images)
    small_source = type(slow_source)(slow_source.server, delay_s=0.55)
    small: list[tuple[str, list[str]]] = []
    stop = threading.Event()

    def upload_every_second() -> None:
        while not stop.is_set():
            urls = small_source.urls(4)
            try:
                answer = upload(
                    service.base_url,
                    csv_of([(1, "SMALL", urls)]),
                    headers={"Authorization": f"Bearer {tenant_b}"},
                    webhook_url=receiver.url,
                )
                if answer.status_code == 202:
                    small.append((answer.json()["request_id"], urls))
            except requests.RequestException:
                pass
            stop.wait(1.0)

    traffic = threading.Thread(target=upload_every_second, daemon=True)
    traffic.start()
    try:
        report["finished_before_fault"] = wait_progress(service, big_id, big_images // 4)
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
        restarted_at = time.monotonic()
        # Under steady traffic, not once it stops: that is what recovery must not wait for.
        wait_final(service, big_id, timeout_s=120)
        report["big_final_under_traffic_s"] = round(time.monotonic() - restarted_at, 1)
        assert traffic.is_alive()
    finally:
        stop.set()
        traffic.join(timeout=30)

    assert len(small) >= 8
    check_complete(service, database, slow_source, receiver, big_id, big_urls, report)
    service.api_key = tenant_b
    for request_id, _ in small:
        status = wait_final(service, request_id, timeout_s=240)["status"]
        require_completed(database, request_id, status)
        assert status == "COMPLETED"
    hits = [slow_source.downloads([url]) for url in big_urls] + [
        small_source.downloads([url]) for _, urls in small for url in urls
    ]
    assert hits == [1] * len(hits), "every image downloaded exactly once"
    report["fault"] = "Redis killed and restarted empty while small uploads kept the queue busy"
    report["small_requests"] = len(small)


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
