"""Test images made with Pillow, and image sources that answer slowly."""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

import numpy as np
from PIL import Image


def jpeg_bytes(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (200, 40, 40), **save: Any) -> bytes:
    """A JPEG with some detail in it; ``save`` goes to Pillow (``exif=``, ``comment=``...)."""
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 16):  # some detail, so it compresses like a photo rather than a flat field
        for y in range(0, size[1], 16):
            image.putpixel((x, y), ((x * 7) % 256, (y * 3) % 256, (x + y) % 256))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, **save)
    return out.getvalue()


def png_with_alpha(size: tuple[int, int] = (300, 200)) -> bytes:
    """A PNG whose left half is opaque blue and right half transparent."""
    image = Image.new("RGBA", size, (0, 0, 255, 0))
    for x in range(size[0] // 2):
        for y in range(size[1]):
            image.putpixel((x, y), (0, 0, 255, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def noise_bytes(size: tuple[int, int], fmt: str) -> bytes:
    """Coloured noise (so that every quality shows), saved as ``fmt``."""
    pixels = np.random.default_rng(size[0] * 100 + size[1]).integers(0, 256, (size[1], size[0], 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


class SlowImages:
    """Images on 127.0.0.2 served with a little latency, so that work overlaps and faults land mid-request.

    Each has bytes of its own, so that each is encoded and stored (equal bytes would share one output).
    """

    def __init__(self, server, count: int, delay_s: float = 0.15, prefix: str = "storage-faults") -> None:
        base = f"/{prefix}/{uuid.uuid4().hex}"
        self.urls = []
        self.images: dict[str, bytes] = {}
        for n in range(count):
            path = f"{base}/{n}.jpg"
            self.images[path] = jpeg_bytes((96, 64), comment=f"image {n}".encode())
            server.route(path, self._handle)
            self.urls.append(server.url(path))
        self.delay_s = delay_s

    def _handle(self, request) -> None:
        time.sleep(self.delay_s)
        request.send(200, self.images[request.path.split("?")[0]], {"Content-Type": "image/jpeg"})
