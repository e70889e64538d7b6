"""What the page needs from the API: the uploaded file's name, and a wrong file named for what it is."""

from __future__ import annotations

import pytest
import requests
from support.api import csv_of, wait_final
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


def test_an_image_uploaded_as_the_csv_is_named_for_what_it_is(service):
    answer = requests.post(
        service.url("/api/upload"), files={"file": ("photo.csv", jpeg_bytes((16, 16)), "text/csv")}, timeout=30
    )

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "csv_not_utf8"
    assert error["message"].startswith("This looks like a JPEG image, not a CSV file.")
