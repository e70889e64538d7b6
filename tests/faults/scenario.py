"""The scenario every fault strikes, a request under way, and the checks made from outside once it is final."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests
import sqlalchemy
from harness import wait_for
from invariants import engine_of, not_completed, require_completed
from support.api import csv_of, upload
from support.images import jpeg_bytes
from support.loopback import LoopbackHTTPServer, RequestHandler

IMAGES = 200
FINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"}


def start_request(service, slow_source, receiver, images: int = IMAGES) -> tuple[str, list[str]]:
    urls = slow_source.urls(images)
    rows = [(n + 1, f"SKU{n + 1}", urls[n : n + 4]) for n in range(0, images, 4)]
    started = time.monotonic()
    response = upload(service.base_url, csv_of(rows), headers=service.auth, webhook_url=receiver.url)
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 10
    return response.json()["request_id"], urls


def progress(service, request_id: str) -> dict:
    return requests.get(
        f"{service.base_url}/api/status/{request_id}?per_page=1", headers=service.auth, timeout=10
    ).json()


def wait_progress(service, request_id: str, at_least: int, timeout_s: float = 60) -> int:
    def done() -> int | None:
        p = progress(service, request_id)["progress"]
        finished = p["completed_images"] + p["failed_images"]
        return finished if finished >= at_least else None

    return wait_for(done, timeout_s, f"{at_least} images of {request_id} to finish")


def wait_final(service, request_id: str, timeout_s: float = 150) -> dict:
    """The request's status once it is final; on a time-out, a failure naming its images not COMPLETED."""
    last: dict = {}

    def final() -> dict | None:
        try:
            last["answer"] = progress(service, request_id)
        except requests.RequestException:
            return None
        return last["answer"] if last["answer"].get("status") in FINAL else None

    try:
        return wait_for(final, timeout_s, f"request {request_id} to be final", interval_s=0.5)
    except AssertionError as timed_out:
        database = engine_of(service.env)
        try:
            unfinished = not_completed(database, request_id)
        finally:
            database.dispose()
        status = last.get("answer", {}).get("status")
        pytest.fail(f"{timed_out} (last seen {status}); {unfinished}", pytrace=False)


def check_complete(service, database, slow_source, receiver, request_id: str, urls: list[str], report) -> None:
    """The invariants: completed, every image once, one output file each, one webhook."""
    answer = wait_final(service, request_id)
    require_completed(database, request_id, answer["status"])
    assert answer["status"] == "COMPLETED", answer
    assert answer["progress"]["completed_images"] == len(urls)
    with database.connect() as connection:
        statuses = Counter(
            connection.execute(
                sqlalchemy.text("SELECT status FROM images WHERE request_id = :id"), {"id": request_id}
            ).scalars()
        )
        events = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM webhook_events WHERE request_id = :id"), {"id": request_id}
        ).scalar()
        attempts = connection.execute(
            sqlalchemy.text("SELECT sum(attempts), sum(requeues) FROM images WHERE request_id = :id"),
            {"id": request_id},
        ).one()
        output_keys = (
            connection.execute(
                sqlalchemy.text("SELECT output_key FROM images WHERE request_id = :id"), {"id": request_id}
            )
            .scalars()
            .all()
        )
    assert statuses == {"COMPLETED": len(urls)}
    assert events == 1
    # Each image has bytes of its own: one output of its own, stored whole.
    media = Path(service.env["INSTANCE_DIR"]) / "media"
    outputs = sorted({media / key for key in output_keys if key and (media / key).is_file()})
    leftovers = sorted(media.glob("objects/*/.tmp-*"))
    assert len(outputs) == len(urls)
    wait_for(lambda: len(deliveries_for(receiver, request_id)) >= 1, 30, "the webhook")
    time.sleep(2)  # a second delivery would arrive by now
    deliveries = deliveries_for(receiver, request_id)
    assert len(deliveries) == 1, f"{len(deliveries)} deliveries"
    report.update(
        images=len(urls),
        completed=statuses["COMPLETED"],
        output_files=len(outputs),
        temporary_files_left=len(leftovers),
        downloads=slow_source.downloads(urls),
        task_attempts=int(attempts[0]),
        sweeper_requeues=int(attempts[1]),
        webhook_events=events,
        webhook_deliveries=len(deliveries),
    )


def deliveries_for(receiver, request_id: str) -> list[dict]:
    return [d for d in receiver.deliveries() if json.loads(d["body"])["data"]["request_id"] == request_id]


class SlowSource:
    """Images served from 127.0.0.2 with a delay each, so that there is time to strike mid-request.

    Each has bytes of its own, so that each is encoded and stored (equal bytes would share one output).
    ``again_delay_s``, when set, is the delay of every download of an image after its first: a take-over
    of an image is then still under way for that long.
    """

    def __init__(self, server: LoopbackHTTPServer, delay_s: float, again_delay_s: float | None = None) -> None:
        self.server = server
        self.delay_s = delay_s
        self.again_delay_s = again_delay_s
        self.images: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()

    def urls(self, count: int) -> list[str]:
        prefix = f"/slow/{uuid.uuid4().hex}"
        paths = [f"{prefix}/{n}.jpg" for n in range(count)]
        for n, path in enumerate(paths):
            self.images[path] = jpeg_bytes((320, 240), comment=f"image {n}".encode())
            self.server.route(path, self._handle)
        return [self.server.url(path) for path in paths]

    def _handle(self, request: RequestHandler) -> None:
        path = request.path.split("?")[0]
        with self._lock:
            self.hits[request.path] = self.hits.get(request.path, 0) + 1
            again = self.hits[request.path] > 1 and self.again_delay_s is not None
        time.sleep(self.again_delay_s if again else self.delay_s)
        request.send(200, self.images[path], {"Content-Type": "image/jpeg"})

    def downloads(self, urls: list[str]) -> int:
        with self._lock:
            return sum(self.hits.get(url.split(str(self.server.port), 1)[1], 0) for url in urls)
