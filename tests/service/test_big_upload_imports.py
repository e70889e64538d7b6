"""Big uploads: answered once validated, their rows written by the import task, exactly once.

The unit tests call the functions on this run's database with every message recorded; the end-to-end
test lowers the threshold of the running service's API, so that a small CSV takes the import path
through the real worker.
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import func, select
from support.api import csv_of, upload, wait_final
from support.images import jpeg_bytes
from support.loopback import wait_until

from intake import quotas
from intake.csv_input import ProductRow
from lifecycle import creation
from models import Image, Product, ProductImage, Request, RequestImport, db


def rows_of(products: int, urls_each: int) -> list[ProductRow]:
    tag = uuid.uuid4().hex[:8]
    return [
        ProductRow(n + 1, f"P{n}", tuple(f"http://127.0.0.2:9/{tag}/{n}-{k}.jpg" for k in range(urls_each)), n + 2)
        for n in range(products)
    ]


def counts(request_id: uuid.UUID) -> dict[str, int]:
    found = {
        "products": db.session.scalar(select(func.count(Product.id)).where(Product.request_id == request_id)),
        "images": db.session.scalar(select(func.count(Image.id)).where(Image.request_id == request_id)),
        "links": db.session.scalar(
            select(func.count(ProductImage.id))
            .join(Product, Product.id == ProductImage.product_id)
            .where(Product.request_id == request_id)
        ),
        "imports": db.session.scalar(
            select(func.count()).select_from(RequestImport).where(RequestImport.request_id == request_id)
        ),
    }
    db.session.commit()
    return found


@pytest.fixture
def quiet_db(quiet_service, clean_quiet_tables, sent) -> Iterator[None]:
    with quiet_service.app.app_context():
        try:
            yield
        finally:
            db.session.remove()


@pytest.mark.usefixtures("quiet_db")
def test_a_big_upload_is_stored_whole_and_written_out_once_by_the_import():
    rows = rows_of(4, 3)
    created = creation.create_request(rows, creation.UploadOptions(), import_after_urls=11)
    assert created.importing and (created.products, created.images) == (4, 12)
    assert counts(created.id) == {"products": 0, "images": 0, "links": 0, "imports": 1}
    assert db.session.get(Request, created.id).importing is True
    db.session.commit()

    assert creation.import_rows(created.id) is True
    assert counts(created.id) == {"products": 4, "images": 12, "links": 12, "imports": 0}
    request = db.session.get(Request, created.id)
    assert request.importing is False and request.total_images == 12
    stored = db.session.scalars(select(Image.source_url).where(Image.request_id == created.id).order_by(Image.id)).all()
    assert stored == [url for row in rows for url in row.image_urls]
    db.session.commit()

    assert creation.import_rows(created.id) is False  # a redelivered import changes nothing
    assert counts(created.id) == {"products": 4, "images": 12, "links": 12, "imports": 0}


def test_two_imports_of_one_request_at_once_write_it_once(quiet_service, clean_quiet_tables, sent):
    with quiet_service.app.app_context():
        created = creation.create_request(rows_of(300, 10), creation.UploadOptions(), import_after_urls=1)
        db.session.remove()
    start = threading.Barrier(2)
    results: list[bool] = []

    def run_import() -> None:
        with quiet_service.app.app_context():
            start.wait()
            results.append(creation.import_rows(created.id))
            db.session.remove()

    threads = [threading.Thread(target=run_import) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False, True]
    with quiet_service.app.app_context():
        assert counts(created.id) == {"products": 300, "images": 3000, "links": 3000, "imports": 0}
        db.session.remove()


@pytest.mark.usefixtures("quiet_db")
def test_an_upload_at_the_threshold_is_written_before_the_answer():
    created = creation.create_request(rows_of(4, 3), creation.UploadOptions(), import_after_urls=12)
    assert not created.importing
    assert counts(created.id) == {"products": 4, "images": 12, "links": 12, "imports": 0}


@pytest.mark.usefixtures("quiet_db")
def test_rows_survive_their_encoding_exactly():
    rows = [
        ProductRow(7, 'Name, with "quotes" and ünïcode', ("http://127.0.0.2:9/a.jpg", "http://127.0.0.2:9/b.jpg"), 3),
        ProductRow(10**12, "x" * 500, ("http://127.0.0.2:9/a.jpg",), 4),
    ]
    assert creation.decode_rows(creation.encode_rows(rows)) == rows


@pytest.mark.usefixtures("quiet_db")
def test_each_rows_record_survives_the_encoding_and_older_encodings_still_decode():
    rows = [ProductRow(7, "N", ("http://127.0.0.2:9/a.jpg",), 3, 'x,007,N,"http://127.0.0.2:9/a.jpg",\n')]
    assert [row.source_record for row in creation.decode_rows(creation.encode_rows(rows))] == [
        'x,007,N,"http://127.0.0.2:9/a.jpg",\n'
    ]
    # As encode_rows wrote them before it kept each row's record: four fields.
    older = zlib.compress(json.dumps([[7, "N", ["http://127.0.0.2:9/a.jpg"], 3]]).encode())
    assert creation.decode_rows(older) == [ProductRow(7, "N", ("http://127.0.0.2:9/a.jpg",), 3)]
    assert creation.decode_rows(older)[0].source_record is None


@pytest.mark.usefixtures("quiet_db")
def test_an_import_whose_message_was_lost_is_sent_again_and_a_fresh_one_is_not():
    lost = creation.create_request(rows_of(2, 2), creation.UploadOptions(), import_after_urls=1)
    assert creation.imports_to_resend(60) == []
    assert creation.imports_to_resend(0) == [lost.id]
    assert creation.imports_to_resend(60) == []  # marked sent again: not re-sent at every sweep


@pytest.mark.usefixtures("quiet_db")
def test_images_being_imported_count_against_the_callers_quota():
    owner = "a" * 64
    creation.create_request(rows_of(3, 2), creation.UploadOptions(owner_key_hash=owner), import_after_urls=1)
    creation.create_request(rows_of(1, 2), creation.UploadOptions(owner_key_hash=owner))
    assert quotas.active_image_count(owner) == 8
    assert quotas.active_image_count("b" * 64) == 0


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables", "import_every_upload")
def test_an_imported_upload_is_processed_like_any_other(service, source_server, receiver):
    image = jpeg_bytes((64, 48))
    tag = uuid.uuid4().hex[:8]
    paths = [f"/imports/{tag}/{n}.jpg" for n in range(6)]
    for path in paths:
        source_server.route(path, lambda r: r.send(200, image, {"Content-Type": "image/jpeg"}))
    urls = [source_server.url(path) for path in paths]
    rows = [(1, "A", urls[:3]), (2, "B", urls[3:] + urls[:1])]

    created = upload(service.base_url, csv_of(rows), webhook_url=receiver.url)
    assert created.status_code == 202, created.text
    body = created.json()
    assert (body["status"], body["products"], body["images"]) == ("PENDING", 2, 7)

    status = wait_final(service.base_url, body["request_id"])
    assert status["status"] == "COMPLETED"
    assert status["importing"] is False
    assert status["progress"]["completed_images"] == 7
    assert [[image["input_url"] for image in product["images"]] for product in status["products"]] == [
        urls[:3],
        urls[3:] + urls[:1],
    ]
    output = requests.get(status["output_csv_url"], timeout=10)
    assert output.status_code == 200 and len(output.text.strip().splitlines()) == 3
    assert wait_until(lambda: len(receiver.deliveries()) == 1, 30)


@pytest.mark.integration
@pytest.mark.usefixtures("clean_tables", "import_every_upload")
def test_a_refused_big_upload_writes_nothing(service):
    rows = [(1, "A", ["http://127.0.0.2:9/a.jpg", "http://127.0.0.2:9/b.jpg"]), (2, "B", ["not a url"])]
    refused = upload(service.base_url, csv_of(rows))
    assert refused.status_code == 422, refused.text
    with service.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Request)) == 0
        assert db.session.scalar(select(func.count()).select_from(RequestImport)) == 0
        db.session.remove()


def test_the_import_task_is_routed_to_the_queue_the_image_worker_serves():
    import launcher
    from queueing import broker, task_names

    assert broker.TASK_ROUTES[task_names.IMPORT_TASK]["queue"] == broker.IMPORTS_QUEUE
    worker = launcher.commands({})["worker"]
    assert broker.IMPORTS_QUEUE in worker[worker.index("--queues") + 1].split(",")
