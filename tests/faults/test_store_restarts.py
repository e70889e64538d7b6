"""The stores restarted under a request: Redis and PostgreSQL mid-request, Redis under steady traffic, and an
upload while the broker is down; every check is made from outside, as in ``test_faults.py``.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from harness import wait_for
from invariants import require_completed
from scenario import IMAGES, check_complete, progress, start_request, wait_final, wait_progress
from support.api import csv_of, upload

pytestmark = pytest.mark.timeout(240)


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
