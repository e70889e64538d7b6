"""A slow client reading a big output CSV holds no lock: other requests keep finishing.

On the default SQLite database this once stalled every worker until "database is locked".
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

PRODUCTS = 10_000


class SlowReader(threading.Thread):
    """Reads a response at about 1 KiB/s through a small receive buffer, as a client on a bad line would."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.parts = urlsplit(url)
        self.received = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((self.parts.hostname, self.parts.port))
            sock.sendall(f"GET {self.parts.path} HTTP/1.1\r\nHost: {self.parts.netloc}\r\n\r\n".encode())
            while not self.stop.is_set():
                chunk = sock.recv(1024)
                if not chunk:
                    return
                self.received += len(chunk)
                time.sleep(1)


def test_a_slow_csv_download_does_not_stall_other_requests(service, source_server):
    image = jpeg_bytes((48, 32))
    shared = []
    for n in range(5):
        path = f"/slow-reader/{uuid.uuid4().hex}/{n}.jpg"
        source_server.route(path, respond(200, image, {"Content-Type": "image/jpeg"}))
        shared.append(source_server.url(path))
    # 10,000 products naming the same five URLs: five images, an output CSV of several MB.
    big = upload(service.base_url, csv_of([(n + 1, f"SKU{n + 1}", shared) for n in range(PRODUCTS)]))
    assert big.status_code == 202, big.text
    big_id = big.json()["request_id"]
    assert wait_final(service.base_url, big_id)["status"] == "COMPLETED"

    reader = SlowReader(service.url(f"/api/requests/{big_id}/output.csv"))
    reader.start()
    try:
        time.sleep(3)  # the response is under way and its sender blocked on the slow reader
        assert reader.is_alive() and 0 < reader.received < 64 * 1024
        others = []
        for n in range(3):
            path = f"/slow-reader/{uuid.uuid4().hex}/other-{n}.jpg"
            source_server.route(path, respond(200, image, {"Content-Type": "image/jpeg"}))
            others.append(source_server.url(path))
        started = time.monotonic()
        other = upload(service.base_url, csv_of([(1, "OTHER", others)]))
        assert other.status_code == 202, other.text
        assert wait_final(service.base_url, other.json()["request_id"], timeout_s=25)["status"] == "COMPLETED"
        print(
            f"\n[slow reader] the other request finished in {time.monotonic() - started:.1f} s "
            f"while the reader had {reader.received} bytes"
        )
        assert reader.is_alive()  # still reading: the download was open the whole time
    finally:
        reader.stop.set()
