"""What one image may cost a worker, through the service: the format's longest side, the decode budget."""

from __future__ import annotations

import io
import struct
import uuid

import pytest
import requests
from PIL import Image
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import noise_bytes

pytestmark = [pytest.mark.integration]


def progressive_cmyk_jpeg_claiming(width: int, height: int) -> bytes:
    """A real small progressive CMYK JPEG whose SOF2 header is rewritten to claim width x height."""
    out = io.BytesIO()
    Image.new("CMYK", (64, 48), (10, 20, 30, 40)).save(out, "JPEG", progressive=True)
    data = bytearray(out.getvalue())
    sof = data.find(b"\xff\xc2")
    assert sof > 0
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def only_image(service, source_server, body: bytes, media_type: str, **fields: str) -> dict:
    """Upload one product of one image served with ``body`` and wait for the request's end: that image's answer."""
    path = f"/memory/{uuid.uuid4().hex}/source"
    source_server.route(path, respond(200, body, {"Content-Type": media_type}))
    created = upload(service.base_url, csv_of([(1, "SKU1", [source_server.url(path)])]), **fields)
    assert created.status_code == 202, created.text
    status = wait_final(service.base_url, created.json()["request_id"], timeout_s=90)
    return status["products"][0]["images"][0]


def test_a_webp_wider_than_webp_holds_is_shrunk_to_fit(service, source_server) -> None:
    image = only_image(service, source_server, noise_bytes((16_400, 8), "PNG"), "image/png", format="webp")

    assert image["status"] == "COMPLETED" and image["error"] is None, image
    assert (image["width"], image["height"]) == (16_383, 8)
    with Image.open(io.BytesIO(requests.get(image["output_url"], timeout=10).content)) as out:
        assert out.format == "WEBP" and out.size == (16_383, 8)


def test_a_source_past_the_decode_budget_fails_image_too_large(service, source_server) -> None:
    # 36 MP (below the service's MAX_IMAGE_PIXELS) of progressive CMYK: 12 bytes a pixel to decode.
    image = only_image(service, source_server, progressive_cmyk_jpeg_claiming(6000, 6000), "image/jpeg")

    assert image["status"] == "FAILED", image
    assert image["error"]["code"] == "image_too_large", image
    assert "IMAGE_DECODE_BUDGET_MB" in image["error"]["message"] and "384 MiB" in image["error"]["message"]
    assert image["attempts"] == 1  # final at once: retrying would not make it smaller
