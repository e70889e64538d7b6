"""The fan-out of a request to its images goes a chunk at a time, each chunk sending the next."""

from __future__ import annotations

import pytest

import image_tasks
import request_state
from csv_input import ProductRow

pytestmark = pytest.mark.usefixtures("clean_tables")


def test_fan_out_sends_every_active_image_once_in_chunks(service, monkeypatch):
    sent_images: list[int] = []
    chained: list[tuple] = []
    monkeypatch.setattr(image_tasks, "FAN_OUT_CHUNK", 3)
    monkeypatch.setattr(image_tasks.process_image, "delay", lambda image_id: sent_images.append(image_id))
    monkeypatch.setattr(image_tasks.process_request, "delay", lambda *args: chained.append(args))
    rows = [ProductRow(n + 1, f"P{n}", (f"http://127.0.0.2:9/{n}.jpg",), n + 2) for n in range(7)]

    with service.app.app_context():
        created = request_state.create_request(rows, request_state.UploadOptions())
        request_id = str(created.id)
        counts = [image_tasks.process_request.run(request_id)]
        while chained:
            counts.append(image_tasks.process_request.run(*chained.pop()))

    assert counts == [3, 3, 1]
    assert len(sent_images) == 7 and len(set(sent_images)) == 7
    assert sent_images == sorted(sent_images)
