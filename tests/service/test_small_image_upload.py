"""A one-pixel image (smaller than the SSIM window) through the service: quality=auto completes it with a score."""

from __future__ import annotations

import io
import uuid

import pytest
import requests
from PIL import Image
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import noise_bytes


@pytest.mark.integration
def test_a_one_pixel_png_with_quality_auto_completes_with_a_score(service, source_server) -> None:
    path = f"/small/{uuid.uuid4().hex}/pixel.png"
    source_server.route(path, respond(200, noise_bytes((1, 1), "PNG"), {"Content-Type": "image/png"}))

    created = upload(service.base_url, csv_of([(1, "SKU1", [source_server.url(path)])]), quality="auto")
    assert created.status_code == 202, created.text
    status = wait_final(service.base_url, created.json()["request_id"], timeout_s=60)

    assert status["status"] == "COMPLETED", status
    image = status["products"][0]["images"][0]
    assert image["status"] == "COMPLETED" and image["error"] is None, image
    assert image["quality"] is not None and 0 < image["score"] <= 1, image
    with Image.open(io.BytesIO(requests.get(image["output_url"], timeout=10).content)) as out:
        assert out.format == "JPEG" and out.size == (1, 1)
