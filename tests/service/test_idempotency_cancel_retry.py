"""The catalog team's loop over HTTP, with a real worker: idempotent uploads, cancel, re-run the failures.

Fetches are counted at the image server, so "not fetched again" is what the source saw.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid

import pytest
import requests
from sqlalchemy import func, select
from support.api import csv_of, image_ids_of, upload, wait_final
from support.images import jpeg_bytes
from support.loopback import wait_until

from lifecycle import control, creation
from models import IdempotencyKey, Image, ImageStatus, Request, RequestStatus, db

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

IMAGE = jpeg_bytes((96, 64))


class Source:
    """Images at paths of their own; each answers 200, 404 or slowly, as the test says, and counts its fetches."""

    def __init__(self, server, count: int, delay_s: float = 0.0) -> None:
        self.server = server
        self.delay_s = delay_s
        base = f"/workflow/{uuid.uuid4().hex}"
        self.paths = [f"{base}/{n}.jpg" for n in range(count)]
        self.broken: set[str] = set()
        self.fetched_at: dict[str, list[float]] = {path: [] for path in self.paths}
        self._lock = threading.Lock()
        for path in self.paths:
            server.route(path, self._handle)

    @property
    def urls(self) -> list[str]:
        return [self.server.url(path) for path in self.paths]

    def fetches(self, index: int) -> int:
        with self._lock:
            return len(self.fetched_at[self.paths[index]])

    def total_fetches(self) -> int:
        with self._lock:
            return sum(len(times) for times in self.fetched_at.values())

    def _handle(self, request) -> None:
        path = request.path.split("?")[0]
        with self._lock:
            self.fetched_at[path].append(time.monotonic())
            broken = path in self.broken
        if self.delay_s:
            time.sleep(self.delay_s)
        if broken:
            request.send(404, b"gone", {"Content-Type": "text/plain"})
        else:
            request.send(200, IMAGE, {"Content-Type": "image/jpeg"})


def request_count(service) -> int:
    with service.app.app_context():
        count = db.session.scalar(select(func.count()).select_from(Request))
        db.session.remove()
    return count


def final_events(receiver) -> list[tuple[str, dict]]:
    return [(d["headers"]["webhook-id"], json.loads(d["body"])) for d in receiver.deliveries()]


# --- idempotent uploads ---------------------------------------------------------------------------


def test_the_same_key_and_body_twice_make_one_request_and_the_second_answer_is_the_first(service, source_server):
    source = Source(source_server, 2)
    body = csv_of([(1, "A", source.urls)])
    key = {"Idempotency-Key": f"catalog-{uuid.uuid4()}"}

    first = upload(service.base_url, body, headers=key, quality="60")
    second = upload(service.base_url, body, headers=key, quality="60")

    assert first.status_code == 202, first.text
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    wait_final(service.base_url, first.json()["request_id"])
    assert request_count(service) == 1
    assert [source.fetches(0), source.fetches(1)] == [1, 1]


def test_a_success_and_its_replay_ask_for_no_wait(service, source_server):
    """Retry-After belongs to the answers that ask the caller to wait (429, 503), not to a success."""
    source = Source(source_server, 1)
    body = csv_of([(1, "A", source.urls)])
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = upload(service.base_url, body, headers=key)
    replay = upload(service.base_url, body, headers=key)
    status = requests.get(first.headers["Location"], timeout=10)

    assert [first.status_code, replay.status_code, status.status_code] == [202, 200, 200], replay.text
    for answer in (first, replay, status):
        assert "Retry-After" not in answer.headers, dict(answer.headers)
        assert "X-RateLimit-Remaining" in answer.headers  # the limits are still told
    wait_final(service.base_url, first.json()["request_id"])


def test_the_same_key_with_another_file_or_other_options_is_refused(service, source_server):
    source = Source(source_server, 2)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = upload(service.base_url, csv_of([(1, "A", source.urls)]), headers=key)
    assert first.status_code == 202, first.text

    other_file = upload(service.base_url, csv_of([(1, "A", source.urls[:1])]), headers=key)
    other_options = upload(service.base_url, csv_of([(1, "A", source.urls)]), headers=key, quality="80")

    for refused in (other_file, other_options):
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "idempotency_key_reused"
    assert request_count(service) == 1


def test_two_uploads_at_once_with_one_key_make_one_request(service, source_server):
    source = Source(source_server, 3)
    body = csv_of([(1, "A", source.urls[:2]), (2, "B", source.urls[2:])])
    key = {"Idempotency-Key": str(uuid.uuid4())}
    start = threading.Barrier(2)
    answers: list[requests.Response] = []

    def send() -> None:
        start.wait()
        answers.append(upload(service.base_url, body, headers=key))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(answer.status_code for answer in answers) == [200, 202], [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    wait_final(service.base_url, answers[0].json()["request_id"])
    assert request_count(service) == 1
    assert source.total_fetches() == 3


def test_a_key_is_forgotten_after_its_time_to_live(service, source_server, monkeypatch):
    settings = service.app.config["SETTINGS"]
    monkeypatch.setitem(service.app.config, "SETTINGS", dataclasses.replace(settings, idempotency_key_ttl_s=1.0))
    source = Source(source_server, 1)
    body = csv_of([(1, "A", source.urls)])
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = upload(service.base_url, body, headers=key)
    time.sleep(1.5)
    again = upload(service.base_url, body, headers=key)

    assert (first.status_code, again.status_code) == (202, 202), again.text
    assert again.json()["request_id"] != first.json()["request_id"]
    with service.app.app_context():
        kept = db.session.scalars(select(IdempotencyKey.request_id)).all()
        db.session.remove()
    assert [str(request_id) for request_id in kept] == [again.json()["request_id"]]


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "a\tb"], ids=["empty", "too-long", "non-ascii", "tab"])
def test_a_key_that_cannot_be_one_is_refused_and_nothing_is_stored(service, source_server, key):
    source = Source(source_server, 1)
    answer = requests.post(
        f"{service.base_url}/api/upload",
        files={"file": ("p.csv", csv_of([(1, "A", source.urls)]), "text/csv")},
        headers={"Idempotency-Key": key.encode("utf-8")},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_idempotency_key"
    assert request_count(service) == 0


def test_a_refused_upload_stores_no_key_and_the_fixed_upload_may_use_it(service, source_server):
    source = Source(source_server, 1)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    bad = upload(service.base_url, b"S. No.,Product Name\n1,A\n", headers=key)
    good = upload(service.base_url, csv_of([(1, "A", source.urls)]), headers=key)
    assert (bad.status_code, good.status_code) == (422, 202), good.text


# --- cancel ---------------------------------------------------------------------------------------


IMAGES_TO_CANCEL = 48


def test_a_cancel_midway_stops_the_fetches_and_sends_one_webhook(service, source_server, receiver):
    # Three times what the workers hold at once (two batches running, two queued): some never start.
    source = Source(source_server, IMAGES_TO_CANCEL, delay_s=0.4)
    created = upload(
        service.base_url,
        csv_of([(n + 1, f"P{n}", [url]) for n, url in enumerate(source.urls)]),
        webhook_url=receiver.url,
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]
    status_url = created.json()["status_url"]
    assert wait_until(lambda: requests.get(status_url, timeout=5).json()["progress"]["completed_images"] >= 2, 30)

    cancel = requests.post(f"{service.base_url}/api/requests/{request_id}/cancel", timeout=10)
    cancel_seen = time.monotonic()

    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "CANCELLED"
    time.sleep(3)  # what was in flight has finished, and anything wrongly sent would have been fetched
    with service.app.app_context():
        started = {
            image_id: attempts
            for image_id, attempts in db.session.execute(
                select(Image.id, Image.attempts).where(Image.request_id == uuid.UUID(request_id))
            ).all()
        }
        db.session.remove()
    ids = image_ids_of_request(service, request_id)
    fetched_after = [n for n, path in enumerate(source.paths) if any(t > cancel_seen for t in source.fetched_at[path])]
    # Only an image a worker had already taken may still be fetched; none waiting in line is.
    assert all(started[ids[n]] > 0 for n in fetched_after), (fetched_after, started)
    never_started = [n for n in range(IMAGES_TO_CANCEL) if started[ids[n]] == 0]
    assert never_started and all(source.fetches(n) == 0 for n in never_started)

    status = requests.get(status_url, timeout=5).json()
    assert status["status"] == "CANCELLED"
    progress = status["progress"]
    assert progress["completed_images"] + progress["failed_images"] + progress["cancelled_images"] == IMAGES_TO_CANCEL
    assert progress["cancelled_images"] >= len(never_started) and progress["pending_images"] == 0
    states = [image["status"] for product in status["products"] for image in product["images"]]
    assert set(states) <= {"COMPLETED", "CANCELLED"}
    assert states.count("CANCELLED") == progress["cancelled_images"]

    output = requests.get(f"{service.base_url}/api/requests/{request_id}/output.csv", timeout=10)
    assert output.status_code == 200
    outputs = [line.rsplit(",", 1)[-1] for line in output.text.splitlines()[1:]]
    assert [bool(cell) for cell in outputs] == [state == "COMPLETED" for state in states]
    for product in status["products"]:
        for image in product["images"]:
            if image["status"] == "CANCELLED":
                assert image["output_url"] is None

    assert wait_until(lambda: len(receiver.deliveries()) >= 1, 20)
    time.sleep(1.5)
    events = final_events(receiver)
    assert len(events) == 1
    assert events[0][1]["type"] == "request.cancelled"
    assert events[0][1]["data"]["status"] == "CANCELLED"
    again = requests.post(f"{service.base_url}/api/requests/{request_id}/cancel", timeout=10)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_final"


def image_ids_of_request(service, request_id: str) -> list[int]:
    with service.app.app_context():
        ids = image_ids_of(uuid.UUID(request_id))
        db.session.remove()
    return ids


def test_an_output_finished_after_the_cancel_is_dropped_not_kept(service, source_server):
    source = Source(source_server, 1, delay_s=1.5)
    created = upload(service.base_url, csv_of([(1, "A", source.urls)]))
    request_id = created.json()["request_id"]
    assert wait_until(lambda: source.fetches(0) == 1, 20)

    cancel = requests.post(f"{service.base_url}/api/requests/{request_id}/cancel", timeout=10)

    assert cancel.status_code == 200, cancel.text
    [image_id] = image_ids_of_request(service, request_id)
    output = service.instance / "media" / request_id / f"{image_id}.jpg"
    time.sleep(3)  # the download ends, the worker encodes and stores it, then finds the image cancelled
    assert not output.exists(), sorted(p.name for p in output.parent.glob("*")) if output.parent.exists() else []
    status = requests.get(f"{service.base_url}/api/status/{request_id}", timeout=5).json()
    assert status["status"] == "CANCELLED"
    assert status["products"][0]["images"][0]["status"] == "CANCELLED"


def test_cancel_answers_404_for_an_unknown_request(service):
    answer = requests.post(f"{service.base_url}/api/requests/{uuid.uuid4()}/cancel", timeout=10)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "request_not_found"


# --- retry ----------------------------------------------------------------------------------------


def test_a_retry_after_the_source_is_fixed_fetches_only_the_failed_images(service, source_server, receiver):
    source = Source(source_server, 4)
    source.broken = {source.paths[1], source.paths[3]}
    created = upload(
        service.base_url, csv_of([(1, "A", source.urls[:2]), (2, "B", source.urls[2:])]), webhook_url=receiver.url
    )
    request_id = created.json()["request_id"]
    first = wait_final(service.base_url, request_id)
    assert first["status"] == "COMPLETED_WITH_ERRORS"
    first_outputs = [image["output_url"] for product in first["products"] for image in product["images"]]
    assert wait_until(lambda: len(receiver.deliveries()) == 1, 20)
    source.broken = set()

    retried = requests.post(f"{service.base_url}/api/requests/{request_id}/retry", timeout=10)

    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "PROCESSING" and retried.json()["retried_images"] == 2
    second = wait_final(service.base_url, request_id)
    assert second["status"] == "COMPLETED"
    assert second["progress"]["completed_images"] == 4 and second["progress"]["failed_images"] == 0
    second_outputs = [image["output_url"] for product in second["products"] for image in product["images"]]
    assert second_outputs[0] == first_outputs[0] and second_outputs[2] == first_outputs[2]
    assert all(second_outputs)
    assert [source.fetches(n) for n in range(4)] == [1, 2, 1, 2]

    assert wait_until(lambda: len(receiver.deliveries()) == 2, 20)
    events = final_events(receiver)
    assert events[0][0] != events[1][0]
    assert [body["data"]["status"] for _, body in events] == ["COMPLETED_WITH_ERRORS", "COMPLETED"]
    log = requests.get(f"{service.base_url}/api/requests/{request_id}/webhook-deliveries", timeout=10).json()
    assert len(log["events"]) == 2

    output = requests.get(f"{service.base_url}/api/requests/{request_id}/output.csv", timeout=10).text
    rows = output.splitlines()[1:]
    assert [row.rsplit(",", 2)[-2:] for row in rows] == [
        [f'"{second_outputs[0]}', f'{second_outputs[1]}"'],
        [f'"{second_outputs[2]}', f'{second_outputs[3]}"'],
    ]


def test_a_retry_can_be_narrowed_to_error_codes(service, source_server):
    source = Source(source_server, 2)
    source.broken = {source.paths[0]}
    junk = f"/workflow/{uuid.uuid4().hex}/junk.jpg"
    source_server.route(junk, lambda r: r.send(200, b"not an image", {"Content-Type": "image/jpeg"}))
    urls = [source.urls[0], source_server.url(junk), source.urls[1]]
    request_id = upload(service.base_url, csv_of([(1, "A", urls)])).json()["request_id"]
    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED_WITH_ERRORS"
    source.broken = set()

    retried = requests.post(
        f"{service.base_url}/api/requests/{request_id}/retry", json={"error_codes": ["http_404"]}, timeout=10
    )

    assert retried.status_code == 202, retried.text
    assert retried.json()["retried_images"] == 1
    final = wait_final(service.base_url, request_id)
    errors = [image["error"] and image["error"]["code"] for image in final["products"][0]["images"]]
    assert errors == [None, "not_an_image", None]
    assert final["status"] == "COMPLETED_WITH_ERRORS"
    nothing = requests.post(
        f"{service.base_url}/api/requests/{request_id}/retry", json={"error_codes": ["http_404"]}, timeout=10
    )
    assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "nothing_to_retry"


def test_retry_is_refused_while_running_when_complete_and_when_cancelled(service, source_server):
    slow = Source(source_server, 4, delay_s=0.5)
    running = upload(service.base_url, csv_of([(1, "A", slow.urls)])).json()["request_id"]
    answer = requests.post(f"{service.base_url}/api/requests/{running}/retry", timeout=10)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "not_final"
    requests.post(f"{service.base_url}/api/requests/{running}/cancel", timeout=10)
    answer = requests.post(f"{service.base_url}/api/requests/{running}/retry", timeout=10)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "request_cancelled"

    fine = Source(source_server, 1)
    done = upload(service.base_url, csv_of([(1, "A", fine.urls)])).json()["request_id"]
    assert wait_final(service.base_url, done)["status"] == "COMPLETED"
    answer = requests.post(f"{service.base_url}/api/requests/{done}/retry", timeout=10)
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "nothing_to_retry"


@pytest.mark.parametrize(
    "body",
    [b"[1]", b"{", b'{"error_codes": "http_404"}', b'{"error_codes": []}', b'{"error_codes": ["Bad Code"]}'],
    ids=["list", "broken", "string", "empty", "bad-code"],
)
def test_a_retry_body_that_is_not_a_list_of_codes_is_refused(service, body):
    answer = requests.post(
        f"{service.base_url}/api/requests/{uuid.uuid4()}/retry",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] in {"invalid_json", "invalid_error_codes"}


# --- the state changes themselves -----------------------------------------------------------------


def test_a_cancel_before_the_import_makes_the_imported_images_cancelled(service):
    from intake.csv_input import ProductRow

    rows = [ProductRow(1, "A", ("http://127.0.0.2:9/a.jpg", "http://127.0.0.2:9/b.jpg"), 2)]
    with service.app.app_context():
        created = creation.create_request(rows, creation.UploadOptions(), import_after_urls=1)
        assert control.cancel_request(created.id, service.base_url)
        assert creation.import_rows(created.id)
        request = db.session.get(Request, created.id)
        statuses = db.session.scalars(select(Image.status).where(Image.request_id == created.id)).all()
        assert (request.status, request.cancelled_images, request.importing) == (RequestStatus.CANCELLED, 2, False)
        assert statuses == [ImageStatus.CANCELLED, ImageStatus.CANCELLED]
        assert not control.cancel_request(created.id, service.base_url)
        db.session.remove()
