"""What one caller can cost: images in flight per key, concurrent fetches per source host."""

from __future__ import annotations

import uuid

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.deployments import SideDeployment
from support.handlers import InFlight
from support.images import jpeg_bytes
from support.services import ApiServer

pytestmark = [pytest.mark.integration]

KEY_A, KEY_B = "tenant-a-" + uuid.uuid4().hex, "tenant-b-" + uuid.uuid4().hex


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def unfetched(n: int) -> list[str]:
    """URLs the test never lets a worker reach: their images stay PENDING."""
    return [f"http://127.0.0.2:9/{uuid.uuid4().hex}.jpg" for _ in range(n)]


def row_counts(service) -> dict[str, int]:
    from models import db

    with service.app.app_context():
        counts = {
            table.name: db.session.scalar(db.select(db.func.count()).select_from(table))
            for table in db.metadata.sorted_tables
        }
        db.session.remove()
    return counts


def assert_quota_exceeded(response: requests.Response, active: int, requested: int, limit: int) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"] == [{"active": active, "requested": requested, "limit": limit}]
    assert f"{active}" in error["message"] and f"{requested}" in error["message"] and f"{limit}" in error["message"]


def finish_every_image(quiet_service) -> None:
    """Complete the images of the quiet database's requests, as a worker would."""
    from lifecycle import claims
    from models import Image, db

    with quiet_service.app.app_context():
        ids = db.session.scalars(db.select(Image.id)).all()
        db.session.commit()
        for image_id in ids:
            claims.claim_image(image_id, f"t{image_id}", 5, "http://127.0.0.1")
            claims.complete_image(image_id, f"x/{image_id}.jpg", "http://127.0.0.1")
        db.session.remove()


@pytest.mark.usefixtures("clean_quiet_tables")
def test_an_upload_past_the_keys_active_image_limit_is_refused(quiet_service):
    # No worker reads the quiet service's broker: every image stays in flight until finished here.
    server = ApiServer.serving(**{**quiet_service.overrides, "api_keys": (KEY_A, KEY_B)}, max_active_images_per_key=3)
    try:
        base = server.base_url
        # Finished images are not in flight: a completed request of 3 costs nothing afterwards.
        assert upload(base, csv_of([(1, "A", unfetched(3))]), headers=bearer(KEY_A)).status_code == 202
        finish_every_image(quiet_service)

        assert upload(base, csv_of([(1, "A", unfetched(2))]), headers=bearer(KEY_A)).status_code == 202
        before = row_counts(quiet_service)
        assert_quota_exceeded(upload(base, csv_of([(1, "A", unfetched(2))]), headers=bearer(KEY_A)), 2, 2, 3)
        assert row_counts(quiet_service) == before  # nothing written

        # A URL named twice is one image, as the workers see it.
        [twice] = unfetched(1)
        assert upload(base, csv_of([(1, "A", [twice]), (2, "B", [twice])]), headers=bearer(KEY_A)).status_code == 202
        assert_quota_exceeded(upload(base, csv_of([(1, "A", unfetched(1))]), headers=bearer(KEY_A)), 3, 1, 3)
        # The limit is per key: another tenant still has all of its own.
        assert upload(base, csv_of([(1, "B", unfetched(3))]), headers=bearer(KEY_B)).status_code == 202
        assert_quota_exceeded(upload(base, csv_of([(1, "B", unfetched(1))]), headers=bearer(KEY_B)), 3, 1, 3)
    finally:
        server.stop()


@pytest.mark.usefixtures("clean_quiet_tables")
def test_open_service_shares_one_active_image_limit_and_zero_means_unlimited(quiet_service):
    limited = ApiServer.serving(**quiet_service.overrides, max_active_images_per_key=2)
    unlimited = ApiServer.serving(**quiet_service.overrides, max_active_images_per_key=0)
    try:
        assert upload(limited.base_url, csv_of([(1, "A", unfetched(2))])).status_code == 202
        assert_quota_exceeded(upload(limited.base_url, csv_of([(1, "A", unfetched(1))])), 2, 1, 2)
        assert upload(unlimited.base_url, csv_of([(1, "A", unfetched(5))])).status_code == 202
    finally:
        limited.stop()
        unlimited.stop()


@pytest.fixture
def own_deployment(service, backing_services, tmp_path, monkeypatch):
    """An API and a worker of 4 processes with FETCH_MAX_PER_HOST=2, on a database and queue of their own."""
    deployment = SideDeployment(service, backing_services, tmp_path, "slots", monkeypatch, FETCH_MAX_PER_HOST="2")
    try:
        deployment.start_worker(concurrency=4)
        yield deployment.start_api()
    finally:
        deployment.close()


def test_no_more_than_fetch_max_per_host_downloads_from_one_host_at_once(own_deployment, source_server):
    source = InFlight(jpeg_bytes((64, 48)), seconds=0.3)
    prefix = f"/{uuid.uuid4().hex}"
    for n in range(12):
        source_server.route(f"{prefix}/{n}.jpg", source)
    urls = [source_server.url(f"{prefix}/{n}.jpg") for n in range(12)]
    created = upload(own_deployment, csv_of([(1, "A", urls[:6]), (2, "B", urls[6:])]))
    assert created.status_code == 202, created.text

    status = wait_final(own_deployment, created.json()["request_id"], timeout_s=60)

    assert status["status"] == "COMPLETED", status
    assert source.served == 12
    # Four worker processes would have had four downloads going at once; the slots allow two.
    assert source.peak == 2
