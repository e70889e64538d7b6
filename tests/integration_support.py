"""Helpers for tests that drive the running service over HTTP."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
from typing import Any

import requests
from loopback_servers import LoopbackHTTPServer, RequestHandler
from PIL import Image

FINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELLED"}


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


class MotoS3:
    """A moto S3 server on 127.0.0.1 for one bucket; ``stop`` then ``start`` again keeps its port.

    Every moto server of the test process shares one in-process backend, which also keeps the objects
    across a restart: a bucket name of the test's own keeps tests from seeing each other's objects.
    """

    CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    REGION = "us-east-1"

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.REGION,
            aws_access_key_id=self.CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self) -> None:
        self.client().create_bucket(Bucket=self.bucket)

    def settings(self) -> dict[str, str]:
        """The environment that points the service's S3 storage at this server."""
        return {
            **self.CREDENTIALS,
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_REGION": self.REGION,
        }

    def key_of(self, output_url: str) -> str:
        """The object key an output URL names; fails if the URL is not one of this bucket's."""
        prefix = f"{self.endpoint}/{self.bucket}/"
        assert output_url.startswith(prefix), output_url
        return output_url[len(prefix) :]


class EventStream:
    """A text/event-stream answer read frame by frame: each event, comment and ``retry:`` as it arrives."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, read_timeout_s: float = 30) -> None:
        self.response = requests.get(url, headers=headers or {}, stream=True, timeout=(5, read_timeout_s))
        self._lines = self.response.iter_lines(chunk_size=1024)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.response.close()

    def frames(self):
        """Each frame as a dict: ``event``, ``id``, ``data`` (parsed JSON), ``retry``, ``comment``, ``at``."""
        frame: dict[str, Any] = {}
        for raw in self._lines:
            line = raw.decode()
            if line:
                field, _, value = line.partition(":")
                frame.setdefault(field or "comment", value.removeprefix(" "))
                continue
            if frame:
                if "data" in frame:
                    frame["data"] = json.loads(frame["data"])
                frame["at"] = time.monotonic()
                yield frame
            frame = {}

    def events(self):
        """Only the events (``progress``, ``final``), in order."""
        return (frame for frame in self.frames() if "event" in frame)
