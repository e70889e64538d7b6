"""Status pages carry an ETag that moves with every change, answer 304 to it, and are built once per version."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests
from support.api import csv_of, image_ids_of, upload
from support.services import ApiServer

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")


@pytest.fixture
def quiet_api(quiet_service) -> Iterator[str]:
    from app import create_app

    server = ApiServer()
    server.start(create_app({**quiet_service.overrides, "public_base_url": server.base_url}))
    yield server.base_url
    server.stop()


@contextlib.contextmanager
def seen_by_the_api(app):
    """A change made as a worker makes it, and then seen by the API (on PostgreSQL its notice takes a few ms):
    a poll sent the same instant could still be answered from what the API knew."""
    versions = app.extensions["request_versions"]
    before = versions.mark()
    yield
    deadline = time.monotonic() + 5
    while versions.listening() and versions.mark() == before and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_status_page_is_revalidated_with_its_etag(quiet_service, quiet_api):
    from lifecycle import claims
    from models import db

    urls = ["http://127.0.0.2:9/a.jpg", "http://127.0.0.2:9/b.jpg"]
    request_id = upload(quiet_api, csv_of([(1, "A", urls)])).json()["request_id"]
    url = f"{quiet_api}/api/status/{request_id}"

    first = requests.get(url, timeout=10)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('"')
    again = requests.get(url, timeout=10)
    assert (again.headers["ETag"], again.content) == (etag, first.content)  # the same version, served again
    unchanged = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert (unchanged.status_code, unchanged.content, unchanged.headers["ETag"]) == (304, b"", etag)
    other_page = requests.get(url + "?per_page=1", headers={"If-None-Match": etag}, timeout=10)
    assert other_page.status_code == 200  # another page is another resource

    with quiet_service.app.app_context(), seen_by_the_api(quiet_service.app):
        first_image = image_ids_of(uuid.UUID(request_id))[0]
        assert claims.claim_image(first_image, "t1", 5, quiet_api) is not None
        db.session.remove()
    claimed = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert claimed.status_code == 200 and claimed.headers["ETag"] != etag
    assert claimed.json()["products"][0]["images"][0]["status"] == "PROCESSING"  # an image's change shows

    with quiet_service.app.app_context(), seen_by_the_api(quiet_service.app):
        claims.complete_image(first_image, f"{request_id}/{first_image}.jpg", quiet_api)
        db.session.remove()
    # Still PROCESSING: the page may lag by STATUS_MAX_LAG_S, under the older version's ETag.
    lagging = requests.get(url, headers={"If-None-Match": claimed.headers["ETag"]}, timeout=10)
    assert lagging.status_code in (200, 304)
    if lagging.status_code == 200:
        assert lagging.json()["progress"]["completed_images"] == 1
    time.sleep(0.6)
    done = requests.get(url, headers={"If-None-Match": claimed.headers["ETag"]}, timeout=10)
    assert done.status_code == 200 and done.json()["progress"]["completed_images"] == 1

    with quiet_service.app.app_context(), seen_by_the_api(quiet_service.app):
        claims.fail_image(image_ids_of(uuid.UUID(request_id))[1], "http_404", "gone", quiet_api)
        db.session.remove()
    final = requests.get(url, headers={"If-None-Match": done.headers["ETag"]}, timeout=10)
    assert final.status_code == 200 and final.json()["status"] == "COMPLETED_WITH_ERRORS"  # at once, no lag


def page(etag: str, status: str = "PROCESSING") -> tuple[str, str, Callable[[], bytes]]:
    return etag, status, lambda: f"{etag}:{status}".encode()


def test_a_running_request_is_served_a_recent_render_but_never_a_stale_status(monkeypatch):
    from reading.page_cache import RenderedPages

    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    pages = RenderedPages(max_lag_s=0.5)
    key = ("r", 1, 100)
    assert pages.serve(key, *page("v1")).body == b"v1:PROCESSING"
    clock[0] += 0.4
    assert pages.serve(key, *page("v2")).etag == "v1"  # within the lag: the recent render, its own ETag
    clock[0] += 0.2
    assert pages.serve(key, *page("v2")).body == b"v2:PROCESSING"  # past it: the current version
    clock[0] += 0.1
    assert pages.serve(key, *page("v3", "COMPLETED")).body == b"v3:COMPLETED"  # a new status shows at once
    assert pages.serve(key, *page("v4", "COMPLETED")).etag == "v4"  # a final request never lags
    assert pages.serve(key, *page("v5", "PROCESSING")).etag == "v5"  # nor does a status going back
    assert pages.serve(("r", 2, 100), *page("v5")).etag == "v5"  # each page on its own


def test_concurrent_polls_of_a_new_version_render_it_once():
    from reading.page_cache import RenderedPages

    pages = RenderedPages(max_lag_s=0)
    renders = []
    gate = threading.Event()

    def render() -> bytes:
        renders.append(1)
        gate.wait(5)
        return b"body"

    threads = [threading.Thread(target=pages.serve, args=(("r", 1, 100), "v1", "PROCESSING", render)) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert len(renders) == 1
