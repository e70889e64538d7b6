"""Status pages carry an ETag that moves with every change, answer 304 to it, and are built once per version."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from conftest import ApiServer
from integration_support import csv_of, image_ids_of, upload

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")


@pytest.fixture
def quiet_api(quiet_service) -> Iterator[str]:
    from app import create_app

    server = ApiServer()
    server.start(create_app({**quiet_service.overrides, "public_base_url": server.base_url}))
    yield server.base_url
    server.stop()


def test_a_status_page_is_revalidated_with_its_etag(quiet_service, quiet_api):
    import request_state
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

    with quiet_service.app.app_context():
        first_image = image_ids_of(uuid.UUID(request_id))[0]
        assert request_state.claim_image(first_image, "t1", 5, quiet_api) is not None
        db.session.remove()
    claimed = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert claimed.status_code == 200 and claimed.headers["ETag"] != etag
    assert claimed.json()["products"][0]["images"][0]["status"] == "PROCESSING"  # an image's change shows

    with quiet_service.app.app_context():
        request_state.complete_image(first_image, f"{request_id}/{first_image}.jpg", quiet_api)
        db.session.remove()
    done = requests.get(url, headers={"If-None-Match": claimed.headers["ETag"]}, timeout=10)
    assert done.status_code == 200 and done.json()["progress"]["completed_images"] == 1
