"""The failed rows CSV over HTTP with a real worker: the uploaded rows of the products with a failed image,
as uploaded, ready to fix and upload again; ``409 not_ready`` until the request is final."""

from __future__ import annotations

import threading
import uuid

import pytest
import requests
from support.api import upload, wait_final
from support.images import jpeg_bytes
from support.loopback import serve

from intake.csv_input import ProductRow
from lifecycle import creation
from models import db

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

BOM = b"\xef\xbb\xbf"


def missing(source_server) -> str:
    return source_server.url(f"/failed-rows/{uuid.uuid4().hex}/missing.jpg")  # the server's default: 404


def failed_rows(service, request_id: str) -> requests.Response:
    return requests.get(f"{service.base_url}/api/requests/{request_id}/failed-rows.csv", timeout=10)


def test_the_rows_of_products_with_a_failed_image_come_back_as_uploaded(service, source_server):
    image, gone = serve(source_server, jpeg_bytes((64, 48))), missing(source_server)
    header = 'Handle,"S. No.",Product Name,Input Image Urls,Variant Price'
    records = [
        f"mug,007,Mug,{image},1.50",  # every image completed: not listed
        f'shirt,008," Shirt, red ","{image},{gone}","1,50"',  # one image of two failed
        f"cap,009,=HYPERLINK(1),{gone},-2",  # a formula cell, neutralised as in the output CSV
    ]
    uploaded = BOM + "".join(line + "\r\n" for line in [header, *records]).encode()

    created = upload(service.base_url, uploaded)
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]
    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED_WITH_ERRORS"

    answer = failed_rows(service, request_id)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert answer.headers["Content-Disposition"] == f'attachment; filename="{request_id}-failed-rows.csv"'
    assert answer.content == (
        BOM
        + (
            f'{header}\r\nshirt,008," Shirt, red ","{image},{gone}","1,50"\r\ncap,009,\'=HYPERLINK(1),{gone},\'-2\r\n'
        ).encode()
    )

    again = upload(service.base_url, answer.content)  # ready to upload again once fixed, and as it is
    assert again.status_code == 202, again.text
    assert again.json()["products"] == 2


def test_a_request_with_no_failures_gives_the_header_alone(service, source_server):
    image = serve(source_server, jpeg_bytes((64, 48)))
    created = upload(service.base_url, f"S. No.,Product Name,Input Image Urls\n1,Mug,{image}\n".encode())
    request_id = created.json()["request_id"]
    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED"

    answer = failed_rows(service, request_id)
    assert answer.status_code == 200, answer.text
    assert answer.text == "S. No.,Product Name,Input Image Urls\n"


def test_a_request_stored_before_the_records_were_kept_gives_the_contracts_three_columns(service, source_server):
    image, gone = serve(source_server, jpeg_bytes((64, 48))), missing(source_server)
    with service.app.app_context():
        rows = [ProductRow(7, "Kept", (image,), 2), ProductRow(8, "=Old", (image, gone), 3)]
        request_id = str(creation.create_request(rows, creation.UploadOptions()).id)
        db.session.remove()
    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED_WITH_ERRORS"

    answer = failed_rows(service, request_id)
    assert answer.text == f'S. No.,Product Name,Input Image Urls\r\n8,\'=Old,"{image},{gone}"\r\n'


def test_until_the_request_is_final_the_answer_is_409_not_ready(service, source_server):
    gate = threading.Event()

    def held(request) -> None:
        gate.wait(10)
        request.send(200, jpeg_bytes((64, 48)), {"Content-Type": "image/jpeg"})

    image = serve(source_server, held)
    created = upload(service.base_url, f"S. No.,Product Name,Input Image Urls\n1,Mug,{image}\n".encode())
    request_id = created.json()["request_id"]
    try:
        early = failed_rows(service, request_id)
    finally:
        gate.set()
    assert early.status_code == 409, early.text
    assert early.json()["error"]["code"] == "not_ready"
    wait_final(service.base_url, request_id)
    assert failed_rows(service, request_id).status_code == 200

    unknown = failed_rows(service, str(uuid.uuid4()))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "request_not_found"
