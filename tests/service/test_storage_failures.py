"""Storage that fails mid-request: retried with back-off, then ``storage_error``; never stuck.

Driven as an operator meets it: an object store on loopback stopped and started again under a
running request, and a storage folder that turns read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.deployments import SideDeployment
from support.images import SlowImages
from support.loopback import wait_until
from support.s3 import MotoS3

pytestmark = pytest.mark.integration

BUCKET = "catalog-media"


def deliveries_for(receiver, request_id: str) -> list[dict]:
    return [d for d in receiver.deliveries() if json.loads(d["body"])["data"]["request_id"] == request_id]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """The folder and every folder in it refuse every write, for root too (immutable inodes), as a full or
    read-only disk would."""
    folder.mkdir(parents=True, exist_ok=True)
    folders = [folder, *(path for path in folder.rglob("*") if path.is_dir())]
    for each in folders:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(each)], check=True)
        else:
            each.chmod(0o555)
    try:
        yield
    finally:
        for each in folders:
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(each)], check=True)
            else:
                each.chmod(0o755)


@pytest.mark.usefixtures("clean_tables")
def test_a_read_only_storage_folder_fails_images_with_storage_error_and_finishes(service, source_server, receiver):
    images = SlowImages(source_server, 3, delay_s=0)
    with read_only(Path(service.instance) / "media"):
        created = upload(service.base_url, csv_of([(1, "A", images.urls)]), webhook_url=receiver.url)
        assert created.status_code == 202, created.text
        request_id = created.json()["request_id"]
        status = wait_final(service.base_url, request_id, timeout_s=90)

    assert status["status"] == "FAILED"
    errors = [image["error"] for product in status["products"] for image in product["images"]]
    assert [error["code"] for error in errors] == ["storage_error"] * 3
    assert all("could not be stored after 3 tries" in error["message"] for error in errors)
    wait_until(lambda: len(deliveries_for(receiver, request_id)) >= 1, 30)
    time.sleep(2)  # a second delivery would have arrived by now
    assert len(deliveries_for(receiver, request_id)) == 1


@pytest.fixture
def s3_deployment(service, backing_services, tmp_path, monkeypatch):
    """A worker and an API storing in a moto S3 server on loopback, on a database and queue of their own."""
    moto = MotoS3(BUCKET).start()
    for name, value in MotoS3.CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    moto.create_bucket()
    deployment = SideDeployment(
        service, backing_services, tmp_path, "s3", monkeypatch, **moto.settings(), STORAGE_MAX_RETRIES="6"
    )
    try:
        # As the service runs: the maintenance worker's tick re-queues a retry once its back-off is over.
        deployment.start_celery()
        yield deployment.start_api(), moto
    finally:
        deployment.close()
        moto.stop()


def test_an_object_store_stopped_mid_request_and_started_again_loses_no_image(s3_deployment, source_server):
    base_url, moto = s3_deployment
    images = SlowImages(source_server, 30)
    rows = [(n + 1, f"SKU{n}", images.urls[n * 3 : n * 3 + 3]) for n in range(10)]
    created = upload(base_url, csv_of(rows))
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]

    def finished() -> int:
        progress = requests.get(f"{base_url}/api/status/{request_id}?per_page=1", timeout=10).json()["progress"]
        return progress["completed_images"] + progress["failed_images"]

    wait_until(lambda: finished() >= 5, 60)
    moto.stop()
    time.sleep(3)
    moto.start()

    status = wait_final(base_url, request_id, timeout_s=120)
    assert status["status"] == "COMPLETED", json.dumps(status)[:2000]
    outputs = [image["output_url"] for product in status["products"] for image in product["images"]]
    assert len(outputs) == 30 and all(url.startswith(f"{moto.endpoint}/{BUCKET}/") for url in outputs)
    client = moto.client()
    for url in outputs:
        stored = client.get_object(Bucket=BUCKET, Key=moto.key_of(url))["Body"].read()
        assert stored[:2] == b"\xff\xd8"


@pytest.mark.usefixtures("clean_tables")
def test_the_sweep_removes_a_temporary_file_left_by_a_killed_writer(service):
    from lifecycle import housekeeping
    from models import db

    folder = service.instance / "media" / str(uuid.uuid4())
    folder.mkdir(parents=True)
    orphan, kept = folder / ".tmp-killed.jpg", folder / "7.jpg"
    orphan.write_bytes(b"half an image")
    kept.write_bytes(b"an image")
    old = time.time() - 3600
    os.utime(orphan, (old, old))

    def swept() -> bool:
        # The maintenance worker's own sweep may come first (then this one finds the sweep lease held).
        with service.app.app_context():
            housekeeping.sweep(service.app.config["SETTINGS"])
            db.session.remove()
        return not orphan.exists()

    assert wait_until(swept, 30)
    assert not orphan.exists() and kept.read_bytes() == b"an image"
