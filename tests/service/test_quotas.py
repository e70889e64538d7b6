"""MAX_ACTIVE_IMAGES_PER_KEY over HTTP: uploads racing at the edge, and retries, count against one quota."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.images import jpeg_bytes
from support.loopback import serve

from intake import quotas

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]


def set_quota(service, monkeypatch, limit: int) -> None:
    settings = service.app.config["SETTINGS"]
    monkeypatch.setitem(service.app.config, "SETTINGS", dataclasses.replace(settings, max_active_images_per_key=limit))


def check_quota_refusal(response: requests.Response, active: int, requested: int, limit: int) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "quota_exceeded", body
    assert body["error"]["details"] == [{"active": active, "requested": requested, "limit": limit}]


def test_of_two_uploads_at_once_at_the_quota_edge_exactly_one_is_refused(service, source_server, monkeypatch):
    set_quota(service, monkeypatch, 3)
    # Each upload, having counted what is in flight, waits (up to 3 s) for the other to have counted
    # too: the widest window two uploads can race in. A check that locks the caller's quota lets the
    # second count only once the first has committed, so the first waits in vain and goes on alone.
    both_counted = threading.Barrier(2, timeout=3)
    count = quotas.active_image_count

    def count_then_wait(owner_key_hash):
        active = count(owner_key_hash)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_counted.wait()
        return active

    monkeypatch.setattr(quotas, "active_image_count", count_then_wait)
    # The sources answer only once both uploads are answered: an accepted upload's images stay in
    # flight, rather than finishing before the other upload counts them.
    answered = threading.Event()
    image = jpeg_bytes((40, 30))

    def held_source(request) -> None:
        answered.wait(30)
        request.send(200, image, {"Content-Type": "image/jpeg"})

    csvs = [csv_of([(1, name, [serve(source_server, held_source) for _ in range(2)])]) for name in "AB"]
    answers: list[requests.Response] = []
    start = threading.Barrier(2)

    def send(csv_bytes: bytes) -> None:
        start.wait()
        answers.append(upload(service.base_url, csv_bytes))

    threads = [threading.Thread(target=send, args=(csv_bytes,)) for csv_bytes in csvs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    answered.set()

    assert sorted(answer.status_code for answer in answers) == [202, 429], [answer.text for answer in answers]
    [accepted] = [answer for answer in answers if answer.status_code == 202]
    [refused] = [answer for answer in answers if answer.status_code == 429]
    check_quota_refusal(refused, active=2, requested=2, limit=3)
    listed = requests.get(f"{service.base_url}/api/requests", timeout=10).json()
    assert [r["request_id"] for r in listed["requests"]] == [accepted.json()["request_id"]]
    assert wait_final(service.base_url, accepted.json()["request_id"])["status"] == "COMPLETED"


def test_a_retry_past_the_quota_is_refused_and_changes_nothing(service, source_server, monkeypatch):
    missing = [source_server.url(f"/quota/{uuid.uuid4().hex}/{n}.jpg") for n in range(2)]
    created = upload(service.base_url, csv_of([(1, "A", missing)]))
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]
    assert wait_final(service.base_url, request_id)["status"] == "FAILED"
    set_quota(service, monkeypatch, 1)

    refused = requests.post(f"{service.base_url}/api/requests/{request_id}/retry", timeout=10)

    check_quota_refusal(refused, active=0, requested=2, limit=1)
    status = requests.get(f"{service.base_url}/api/status/{request_id}", timeout=10).json()
    assert (status["status"], status["progress"]["failed_images"]) == ("FAILED", 2)

    # Within the quota, the same retry goes ahead.
    set_quota(service, monkeypatch, 2)
    retried = requests.post(f"{service.base_url}/api/requests/{request_id}/retry", timeout=10)
    assert retried.status_code == 202, retried.text
    assert wait_final(service.base_url, request_id)["status"] == "FAILED"
