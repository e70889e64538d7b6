"""What the page needs from the API: the uploaded file's name, the products with failed images only, and
a wrong file named for what it is."""

from __future__ import annotations

import uuid

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]


def _status(service, request_id: str, query: str = "") -> requests.Response:
    return requests.get(service.url(f"/api/status/{request_id}{query}"), timeout=10)


def test_the_uploaded_file_name_is_kept_for_the_status_and_the_list(service, source_server):
    source_server.route("/name/ok.jpg", respond(200, jpeg_bytes((32, 32)), {"Content-Type": "image/jpeg"}))
    data = csv_of([(1, "Shoe", [source_server.url("/name/ok.jpg")])])
    named = requests.post(
        service.url("/api/upload"),
        files={"file": ("exports/2026/spring\u202e catalog.csv", data, "text/csv")},
        timeout=30,
    ).json()["request_id"]
    # A plain form field, as curl -F 'file=<products.csv' sends it: no file name.
    unnamed = requests.post(service.url("/api/upload"), files={"file": (None, data)}, timeout=30).json()["request_id"]

    assert wait_final(service.base_url, named)["file_name"] == "spring catalog.csv"  # no folder, no bidi override
    assert wait_final(service.base_url, unnamed)["file_name"] is None
    listed = requests.get(service.url("/api/requests"), timeout=10).json()["requests"]
    assert {item["request_id"]: item["file_name"] for item in listed} == {named: "spring catalog.csv", unnamed: None}


def test_image_status_lists_only_the_products_with_such_images(service, source_server):
    ok = source_server.url("/filter/ok.jpg")
    source_server.route("/filter/ok.jpg", respond(200, jpeg_bytes((32, 32)), {"Content-Type": "image/jpeg"}))
    gone = [source_server.url(f"/filter/{uuid.uuid4().hex}.jpg") for _ in range(3)]
    rows = [(n + 1, f"SKU{n + 1}", [ok]) for n in range(12)]
    for position, url in zip((1, 6, 11), gone, strict=True):
        rows[position] = (position + 1, f"SKU{position + 1}", [ok, url])
    request_id = upload(service.base_url, csv_of(rows)).json()["request_id"]
    everything = wait_final(service.base_url, request_id)
    assert everything["status"] == "COMPLETED_WITH_ERRORS"

    first = _status(service, request_id, "?image_status=FAILED&per_page=2")
    second = _status(service, request_id, "?image_status=failed&per_page=2&page=2")

    assert first.status_code == second.status_code == 200
    assert first.json()["pagination"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2}
    names = [p["product_name"] for answer in (first, second) for p in answer.json()["products"]]
    assert names == ["SKU2", "SKU7", "SKU12"]
    for product in first.json()["products"]:  # each product whole: its completed image too
        assert [image["status"] for image in product["images"]] == ["COMPLETED", "FAILED"]
    assert first.headers["ETag"] != _status(service, request_id, "?per_page=2").headers["ETag"]
    default = _status(service, request_id).json()
    assert default["pagination"]["total"] == 12 and len(default["products"]) == 12
    none_cancelled = _status(service, request_id, "?image_status=CANCELLED").json()
    assert none_cancelled["products"] == [] and none_cancelled["pagination"]["total"] == 0


def test_an_unknown_image_status_is_refused(service, source_server):
    source_server.route("/filter/one.jpg", respond(200, jpeg_bytes((32, 32)), {"Content-Type": "image/jpeg"}))
    request_id = upload(service.base_url, csv_of([(1, "A", [source_server.url("/filter/one.jpg")])])).json()[
        "request_id"
    ]

    refused = _status(service, request_id, "?image_status=BROKEN")

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_image_status"


def test_an_image_uploaded_as_the_csv_is_named_for_what_it_is(service):
    answer = requests.post(
        service.url("/api/upload"), files={"file": ("photo.csv", jpeg_bytes((16, 16)), "text/csv")}, timeout=30
    )

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "csv_not_utf8"
    assert error["message"].startswith("This looks like a JPEG image, not a CSV file.")
