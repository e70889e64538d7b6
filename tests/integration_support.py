"""Helpers for tests that drive the running service over HTTP."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import requests
from loopback_servers import LoopbackHTTPServer, RequestHandler
from PIL import Image

FINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"}


def jpeg_bytes(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (200, 40, 40), **save: Any) -> bytes:
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 16):  # some detail, so it compresses like a photo rather than a flat field
        for y in range(0, size[1], 16):
            image.putpixel((x, y), ((x * 7) % 256, (y * 3) % 256, (x + y) % 256))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, **save)
    return out.getvalue()


def png_with_alpha(size: tuple[int, int] = (300, 200)) -> bytes:
    image = Image.new("RGBA", size, (0, 0, 255, 0))
    for x in range(size[0] // 2):
        for y in range(size[1]):
            image.putpixel((x, y), (0, 0, 255, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def csv_of(rows: list[tuple[int, str, list[str]]]) -> bytes:
    lines = ["S. No.,Product Name,Input Image Urls"]
    for serial, name, urls in rows:
        lines.append(f'{serial},{name},"{",".join(urls)}"')
    return ("\n".join(lines) + "\n").encode()


def upload(base_url: str, csv_bytes: bytes, headers: dict[str, str] | None = None, **fields: str) -> requests.Response:
    return requests.post(
        f"{base_url}/api/upload",
        files={"file": ("products.csv", csv_bytes, "text/csv")},
        data=fields,
        headers=headers or {},
        timeout=30,
    )


def wait_final(base_url: str, request_id: str, timeout_s: float = 90, headers: dict | None = None) -> dict[str, Any]:
    """Poll the status API until the request is final; fail with the last answer otherwise."""
    deadline = time.monotonic() + timeout_s
    answer: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = requests.get(f"{base_url}/api/status/{request_id}", headers=headers or {}, timeout=10)
        assert response.status_code == 200, response.text
        answer = response.json()
        if answer["status"] in FINAL:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} not final after {timeout_s}s: {json.dumps(answer)[:2000]}")


class WebhookReceiver:
    """A webhook endpoint on loopback that records deliveries and answers from a script."""

    def __init__(self, server: LoopbackHTTPServer, path: str) -> None:
        self.server = server
        self.path = path
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        server.route(path, self._handle)

    @property
    def url(self) -> str:
        return self.server.url(self.path)

    def answer_with(self, *statuses: int) -> None:
        """The statuses of the next deliveries, in order; 200 once they run out."""
        with self._lock:
            self.statuses = list(statuses)

    def _handle(self, request: RequestHandler) -> None:
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
        request.send(status, b"{}", {"Content-Type": "application/json"})

    def deliveries(self) -> list[dict[str, Any]]:
        return [
            {"headers": {k.lower(): v for k, v in r.headers.items()}, "body": r.body}
            for r in self.server.requests
            if r.path == self.path and r.method == "POST"
        ]


def image_ids_of(request_id) -> list[int]:
    """The ids of a request's images, in input order (inside an app context)."""
    from sqlalchemy import select

    from models import Image, db

    ids = db.session.scalars(select(Image.id).where(Image.request_id == request_id).order_by(Image.id)).all()
    db.session.commit()
    return list(ids)
