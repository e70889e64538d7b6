"""The HTTP API seen as a client: upload a CSV, wait for a request to be final, follow its event stream."""

from __future__ import annotations

import json
import time
from typing import Any

import requests

FINAL = {"COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED", "CANCELLED"}


def csv_of(rows: list[tuple[int, str, list[str]]]) -> bytes:
    """An upload CSV of (serial, product name, image URLs) rows."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    for serial, name, urls in rows:
        lines.append(f'{serial},{name},"{",".join(urls)}"')
    return ("\n".join(lines) + "\n").encode()


def upload(base_url: str, csv_bytes: bytes, headers: dict[str, str] | None = None, **fields: str) -> requests.Response:
    """POST the CSV to ``/api/upload`` with the given form fields."""
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


def image_ids_of(request_id) -> list[int]:
    """The ids of a request's images, in input order (inside an app context)."""
    from sqlalchemy import select

    from models import Image, db

    ids = db.session.scalars(select(Image.id).where(Image.request_id == request_id).order_by(Image.id)).all()
    db.session.commit()
    return list(ids)


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
