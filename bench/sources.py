"""What the service talks to during the bench, on 127.0.0.2: photos served at a chosen latency, and a
webhook receiver that notes when each delivery arrived.

One threaded HTTP/1.1 server (keep-alive capable) does both. A photo URL says its latency and photo:
``/l<milliseconds>/<photo index>/<name>``. Every URL serves bytes of its own, as a real catalog does: the
cached photo with its name stamped in (a JPEG comment segment, a PNG text chunk), same pixels, so the
service's reuse of equal bytes never stands in for an encode. A name that starts with ``same-`` serves the
photo's bytes as they are, for the case that measures reuse itself.
"""

from __future__ import annotations

import json
import socketserver
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from photos import Photo

HOST = "127.0.0.2"
HOOK_PATH = "/hook"
#: Names that serve the photo's own bytes (equal bytes under many URLs: the reuse case).
SAME_BYTES = "same-"


def stamped(body: bytes, name: str) -> bytes:
    """``body`` with ``name`` written into it where no decoder looks: a JPEG COM segment right after SOI, or a
    PNG tEXt chunk right after IHDR. The pixels are the same; the bytes, and so their SHA-256, are the name's."""
    text = name.encode("utf-8", "replace")[:1000]
    if body[:2] == b"\xff\xd8":
        return body[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + body[2:]
    if body[:8] == b"\x89PNG\r\n\x1a\n":
        ihdr_end = 8 + 8 + 13 + 4
        data = b"Comment\x00" + text
        chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
        return body[:ihdr_end] + chunk + body[ihdr_end:]
    raise ValueError("only JPEG and PNG photos are stamped")


@dataclass(frozen=True)
class Source:
    url: str
    size: int  #: bytes served
    photo: int  #: index into the photos


@dataclass(frozen=True)
class Delivery:
    arrived_at: float  #: wall clock (time.time()), to compare with the database's timestamps
    body: dict


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        parts = self.path.split("/")
        try:
            latency_ms, index, name = int(parts[1].removeprefix("l")), int(parts[2]), parts[3]
            body, content_type = self.server.owner.bodies[index]
        except (IndexError, ValueError):
            self._send(404, b"")
            return
        if not name.startswith(SAME_BYTES):
            body = stamped(body, name)
        time.sleep(latency_ms / 1000)
        self._send(200, body, content_type)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        arrived = time.time()
        if not self.path.startswith(HOOK_PATH):
            self._send(404, b"")
            return
        self._send(200, b"")
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {"unparsed": body[:200].decode(errors="replace")}
        self.server.owner.record(Delivery(arrived, parsed))

    def _send(self, status: int, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, owner: SourceServer) -> None:
        self.owner = owner
        super().__init__((owner.host, 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-answer (a worker stopped at the end of a group) is no error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks for the host's name by reverse DNS: skip it, bind only.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.owner.host, self.server_address[1]


class SourceServer:
    """The photo server and webhook receiver; a context manager."""

    def __init__(self, photos: list[Photo], host: str = HOST) -> None:
        self.photos = photos
        self.host = host
        self.bodies = [
            (photo.path.read_bytes(), "image/jpeg" if photo.spec.format == "JPEG" else "image/png") for photo in photos
        ]
        self.deliveries: list[Delivery] = []
        self._arrived = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SourceServer:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sources", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_port

    def sources(
        self, count: int, latency_s: float, tag: str, first_photo: int = 0, same_bytes: bool = False
    ) -> list[Source]:
        """``count`` distinct URLs cycling over the photos, each answered after ``latency_s``, each with bytes of
        its own (``same_bytes``: the photos' own bytes, equal under every URL of a photo)."""
        latency_ms = round(latency_s * 1000)
        prefix = SAME_BYTES if same_bytes else ""
        chosen = []
        for n in range(count):
            index = (first_photo + n) % len(self.photos)
            extension = "jpg" if self.photos[index].spec.format == "JPEG" else "png"
            name = f"{prefix}{tag}-{n}.{extension}"
            size = len(self.bodies[index][0]) if same_bytes else len(stamped(self.bodies[index][0], name))
            url = f"http://{self.host}:{self.port}/l{latency_ms}/{index}/{name}"
            chosen.append(Source(url, size, index))
        return chosen

    def hook_url(self) -> str:
        return f"http://{self.host}:{self.port}{HOOK_PATH}"

    def record(self, delivery: Delivery) -> None:
        with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()

    def wait_delivery(self, request_id: str, timeout_s: float) -> Delivery | None:
        """The first webhook naming ``request_id``, waiting up to ``timeout_s`` for it."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while True:
                for delivery in self.deliveries:
                    if delivery.body.get("data", {}).get("request_id") == request_id:
                        return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._arrived.wait(remaining)
