"""Two workers finishing at the same moment: each request gets one final status and one webhook."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
import requests
from sqlalchemy import func, select
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes
from support.loopback import wait_until
from support.services import WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

REQUESTS = 40


def test_many_one_image_requests_on_two_workers_each_webhook_once(service, source_server, receiver):
    second = WorkerProcess(service.env, service.instance / f"second-worker-{uuid.uuid4().hex[:6]}.log")
    try:
        image = jpeg_bytes((64, 64))
        request_ids = []
        for n in range(REQUESTS):
            path = f"/race/{uuid.uuid4().hex}/{n}.jpg"
            source_server.route(path, respond(200, image, {"Content-Type": "image/jpeg"}))
            # Two products naming the same URL, plus a second URL: the last two images of a request
            # finish on different worker processes at about the same time.
            other = f"/race/{uuid.uuid4().hex}/{n}-b.jpg"
            source_server.route(other, respond(200, image, {"Content-Type": "image/jpeg"}))
            urls = [source_server.url(path), source_server.url(other)]
            answer = upload(service.base_url, csv_of([(1, "A", urls[:1]), (2, "B", urls)]), webhook_url=receiver.url)
            assert answer.status_code == 202, answer.text
            request_ids.append(answer.json()["request_id"])

        finals = [wait_final(service.base_url, request_id)["status"] for request_id in request_ids]
        assert finals == ["COMPLETED"] * REQUESTS
        wait_until(lambda: len(receiver.deliveries()) >= REQUESTS, 60)
        time.sleep(2)  # anything sent twice would arrive by now

        deliveries = receiver.deliveries()
        per_request = Counter(json.loads(d["body"])["data"]["request_id"] for d in deliveries)
        assert per_request == dict.fromkeys(request_ids, 1)
        assert len({d["headers"]["webhook-id"] for d in deliveries}) == REQUESTS
        with service.app.app_context():
            from models import WebhookEvent, db

            events = db.session.execute(
                select(WebhookEvent.request_id, func.count()).group_by(WebhookEvent.request_id)
            ).all()
            db.session.remove()
        assert sorted(count for _, count in events) == [1] * REQUESTS
        for request_id in request_ids[:3]:
            log = requests.get(f"{service.base_url}/api/requests/{request_id}/webhook-deliveries", timeout=10).json()
            assert [len(e["attempts"]) for e in log["events"]] == [1]
    finally:
        second.stop()
