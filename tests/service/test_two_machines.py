"""Two image workers as on two machines: each in a folder of its own, sharing only PostgreSQL, Redis and S3.

Each worker runs from, and has as its INSTANCE_DIR, a temporary folder of its own; the webhook and
maintenance workers, beat and the API have a third. Nothing but the database, the broker (and its
Redis) and the object store (moto, on loopback) is common to them. One request of 40 images served from 127.0.0.2 with
0.1 s of latency is done by both workers together: the image rows name the Celery task that did each
image (``claimed_by``) and each worker's log names the tasks it ran, so every image is traced to one
worker.

The filesystem broker lives in the INSTANCE_DIR and SQLite is a file: two folders sharing no disk
cannot share them, so this runs on PostgreSQL and Redis only (TEST_DATABASE_URL and TEST_BROKER_URL).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.api import csv_of, upload, wait_final
from support.backing import TEST_BROKER_URL, TEST_DATABASE_URL, SeparateDatabase
from support.deployments import isolated_broker
from support.images import SlowImages
from support.loopback import wait_until
from support.s3 import MotoS3
from support.services import ApiServer, WorkerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (TEST_DATABASE_URL and TEST_BROKER_URL),
        reason="machines that share no disk share PostgreSQL and Redis: needs TEST_DATABASE_URL and TEST_BROKER_URL",
    ),
]

IMAGES = 40
# Celery's line for a batch that returned, all of it completed: ``Task image_tasks.process_image[<id>] succeeded
# in 0.1s: 'completed:8'`` (``'completed'`` for a batch of one).
COMPLETED_TASK = re.compile(
    r"Task image_tasks\.process_image\[([0-9a-f-]{36})\] succeeded in [0-9.e-]+s: 'completed(?::[0-9]+)?'"
)


def completed_tasks(log_path: Path) -> set[str]:
    """The ids of the image tasks this worker ran to ``completed``, from its log."""
    return set(COMPLETED_TASK.findall(log_path.read_text(errors="replace")))


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def two_machines(service, backing_services, tmp_path, monkeypatch):
    """Workers on machines "a" and "b", webhook and maintenance workers, beat and API on machine "c"; S3 storage."""
    moto = MotoS3(f"two-machines-{uuid.uuid4().hex[:8]}").start()
    moto.create_bucket()
    folders = {name: tmp_path / f"machine-{name}" for name in "abc"}
    logs = tmp_path / "logs"
    for folder in [*folders.values(), logs]:
        folder.mkdir()
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    database = SeparateDatabase(backing_services, migrations)
    api = ApiServer()
    # What every machine is given alike: the database, the broker (queues of this test's own: a key prefix
    # in the shared Redis, a virtual host on RabbitMQ), the storage, the public origin and the webhook
    # secret (from the service's env).
    shared = {
        **service.env,
        **moto.settings(),
        "DATABASE_URL": database.url,
        "PUBLIC_BASE_URL": api.base_url,
        "PORT": str(api.server.server_port),
    }
    vhost = isolated_broker(shared, service.env, "two-machines")
    on = {name: {**shared, "INSTANCE_DIR": str(folder)} for name, folder in folders.items()}
    for name, value in on["c"].items():
        monkeypatch.setenv(name, value)
    processes: dict[str, WorkerProcess] = {}
    try:
        for name in "ab":
            processes[name] = WorkerProcess(
                on[name], logs / f"worker-{name}.log", name=f"machine-{name}", cwd=folders[name]
            )
        for kind in ("webhooks", "maintenance"):
            processes[kind] = WorkerProcess(
                on["c"], logs / f"{kind}.log", name=f"machine-c-{kind}", kind=kind, cwd=folders["c"]
            )
        processes["beat"] = WorkerProcess(on["c"], logs / "beat.log", kind="beat", cwd=folders["c"])
        from app import create_app

        api.start(create_app())
        yield {"base_url": api.base_url, "app": api.server.app, "moto": moto, "folders": folders, "workers": processes}
    finally:
        if api.thread is not None:
            api.stop()
        # All at once: each waits for its own warm shutdown.
        with ThreadPoolExecutor(max_workers=len(processes) or 1) as pool:
            list(pool.map(WorkerProcess.stop, processes.values()))
        moto.stop()
        database.drop()
        if vhost is not None:
            vhost.drop()
        service.send_with_own_celery()


def test_two_workers_in_folders_of_their_own_share_one_request(two_machines, source_server, receiver):
    base_url, moto, folders = two_machines["base_url"], two_machines["moto"], two_machines["folders"]
    workers = two_machines["workers"]
    images = SlowImages(source_server, IMAGES, delay_s=0.1, prefix="two-machines")
    rows = [(n + 1, f"SKU{n}", images.urls[n * 4 : n * 4 + 4]) for n in range(IMAGES // 4)]
    started = time.monotonic()
    created = upload(base_url, csv_of(rows), webhook_url=receiver.url)
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]

    status = wait_final(base_url, request_id, timeout_s=45)
    took = time.monotonic() - started
    assert status["status"] == "COMPLETED", json.dumps(status)[:2000]
    assert status["progress"]["completed_images"] == IMAGES
    statuses = [image["status"] for product in status["products"] for image in product["images"]]
    assert statuses == ["COMPLETED"] * IMAGES

    # Every output is an object in the bucket, a JPEG, and the bucket holds nothing else.
    outputs = [image["output_url"] for product in status["products"] for image in product["images"]]
    keys = [moto.key_of(url) for url in outputs]
    client = moto.client()
    listed = client.list_objects_v2(Bucket=moto.bucket)
    assert sorted(item["Key"] for item in listed.get("Contents", [])) == sorted(keys)
    for key in keys:
        assert client.get_object(Bucket=moto.bucket, Key=key)["Body"].read()[:2] == b"\xff\xd8"

    # Each image row names the task that completed it; exactly one worker's log ran that task.
    from sqlalchemy import select

    from models import Image, db

    with two_machines["app"].app_context():
        rows_done = db.session.execute(
            select(Image.id, Image.status, Image.claimed_by).where(Image.request_id == uuid.UUID(request_id))
        ).all()
        db.session.commit()
    assert len(rows_done) == IMAGES and {row.status for row in rows_done} == {"COMPLETED"}
    task_ids = {row.claimed_by for row in rows_done}
    images_of = Counter(row.claimed_by for row in rows_done)
    # A task's "succeeded" line is logged after it recorded its image, so it may trail the final status.
    wait_until(lambda: task_ids <= completed_tasks(workers["a"].log_path) | completed_tasks(workers["b"].log_path), 10)
    by_worker = {name: completed_tasks(workers[name].log_path) & task_ids for name in "ab"}
    assert not by_worker["a"] & by_worker["b"], "a task ran to completion on both workers"
    assert by_worker["a"] | by_worker["b"] == task_ids
    shares = {name: sum(images_of[task] for task in done) for name, done in by_worker.items()}
    assert min(shares.values()) >= 5, f"both workers take part: {shares}"
    assert all(source_server.hits(urlsplit(url).path) >= 1 for url in images.urls)

    # The webhook is sent once, by the webhook worker on machine "c".
    wait_until(lambda: len(deliveries_for(receiver, request_id)) >= 1, 15)
    time.sleep(1)
    assert len(deliveries_for(receiver, request_id)) == 1

    # Nothing was written under either worker's media folder, nor anywhere else in its folder: the
    # outputs went to S3 only, the queue and the per-host download slots live in Redis.
    for name in "ab":
        media = folders[name] / "media"
        assert not media.exists() or files_under(media) == [], f"machine {name}: {files_under(media)}"
        assert files_under(folders[name]) == [], f"machine {name} wrote {files_under(folders[name])}"
    print(f"two machines: {IMAGES} images final in {took:.1f}s, shares {shares}")


def deliveries_for(receiver, request_id: str) -> list[dict]:
    return [d for d in receiver.deliveries() if json.loads(d["body"])["data"]["request_id"] == request_id]
