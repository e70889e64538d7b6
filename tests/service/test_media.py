"""/media/<key> over HTTP: real outputs are served, nothing else under the storage root is."""

from __future__ import annotations

import uuid

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

DIGEST = "cd" + "0123456789abcdef" * 3 + "0123456789abcd"


def test_media_serves_outputs_and_nothing_else_under_the_storage_root(service, source_server):
    path = f"/{uuid.uuid4().hex}.jpg"
    source_server.route(path, respond(200, jpeg_bytes((64, 48)), {"Content-Type": "image/jpeg"}))
    request_id = upload(service.base_url, csv_of([(1, "A", [source_server.url(path)])])).json()["request_id"]
    status = wait_final(service.base_url, request_id)
    output_url = status["products"][0]["images"][0]["output_url"]
    served = requests.get(output_url, timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "image/jpeg"
    assert served.content.startswith(b"\xff\xd8")

    root = service.app.extensions["storage"].root
    planted = {
        "webhook_secret": b"whsec_not-for-you",
        "service.db": b"SQLite format 3\x00",
        "notes.txt": b"private",
        f"{request_id}/.tmp-abc123.jpg": b"half written",
        f"{request_id}/1.png": b"\x89PNG",
        f"{request_id}/1.jpg.bak": b"old",
        f"{request_id.upper()}/1.jpg": b"\xff\xd8",
        f"objects/cd/{DIGEST}-1.jpg.tmp": b"\xff\xd8",
        f"objects/cd/{DIGEST}.jpg": b"\xff\xd8",
    }
    for name, data in planted.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for name in planted:
        answer = requests.get(service.url(f"/media/{name}"), timeout=10)
        assert answer.status_code == 404, name
        assert answer.json()["error"]["code"] == "not_found"

    # A key of the content-addressed shape is an output, in any of the formats.
    (root / "objects/cd").mkdir(parents=True, exist_ok=True)
    (root / f"objects/cd/{DIGEST}-7.webp").write_bytes(b"RIFF....WEBP")
    webp = requests.get(service.url(f"/media/objects/cd/{DIGEST}-7.webp"), timeout=10)
    assert webp.status_code == 200 and webp.headers["Content-Type"] == "image/webp"
