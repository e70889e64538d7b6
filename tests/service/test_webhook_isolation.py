"""One tenant's hanging webhook receiver costs that tenant time, not everyone's; re-sends are spaced and limited.

Tenant A points its requests at a receiver that accepts the connection and never answers (each attempt
then lasts ``WEBHOOK_TIMEOUT_S``, 3 s here); tenant B's webhook must still arrive at once, and beat's
tick and the sweep must go on running. Two tenants: an API with ``API_KEYS`` beside the session's
workers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from sqlalchemy import select, update
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes
from support.loopback import serve, wait_until
from support.services import ApiServer

from models import DeliveryStatus, IdempotencyKey, WebhookEvent, db, utcnow
from queueing import broker, task_names

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

KEY_A, KEY_B = "tenant-a-" + uuid.uuid4().hex, "tenant-b-" + uuid.uuid4().hex
#: Tenant A's requests whose webhooks hang: more than it may have in flight at once.
HANGING = 6


@pytest.fixture(scope="module")
def keyed_api(service) -> Iterator[str]:
    """An API with two tenants' keys, on the session's database and broker."""
    server = ApiServer.serving(api_keys=(KEY_A, KEY_B))
    yield server.base_url
    server.stop()
    service.send_with_own_celery()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def finished_request(base_url: str, source_server, key: str, webhook_url: str, **headers: str) -> tuple[str, float]:
    """A one-image request of ``key``'s tenant, waited for until final; its id, and when polling first saw
    it final (``time.time()``; the status's own timestamps are to the second)."""
    image = serve(source_server, respond(200, jpeg_bytes(), {"Content-Type": "image/jpeg"}))
    headers = {**bearer(key), **headers}
    created = upload(base_url, csv_of([(1, "Mug", [image])]), headers=headers, webhook_url=webhook_url)
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]
    wait_final(base_url, request_id, headers=bearer(key))
    return request_id, time.time()


@pytest.fixture
def hanging_tenant(service, keyed_api, source_server, silent_receiver) -> Iterator[None]:
    """Tenant A's requests, final, their webhooks attempted against a receiver that never answers."""
    for _ in range(HANGING):
        finished_request(keyed_api, source_server, KEY_A, silent_receiver.url())
    assert wait_until(lambda: silent_receiver.accepted >= 2, 10), "tenant A's attempts never started"
    yield
    # Nothing of tenant A is attempted again, and what hangs ends, before the next test empties the tables.
    with service.app.app_context():
        db.session.execute(
            update(WebhookEvent).where(WebhookEvent.url == silent_receiver.url()).values(status=DeliveryStatus.FAILED)
        )
        db.session.commit()
    silent_receiver.close()
    wait_until(lambda: silent_receiver.open == 0, 10)
    time.sleep(0.5)  # for the attempts cut short to be recorded


def test_a_tenants_hanging_receiver_does_not_hold_up_another_tenants_webhook(
    service, keyed_api, source_server, hanging_tenant, silent_receiver, receiver
):
    _, seen_final = finished_request(keyed_api, source_server, KEY_B, receiver.url)

    assert wait_until(lambda: receiver.arrivals, 30), "tenant B's webhook never arrived"
    assert receiver.arrivals[0] - seen_final < 1.0, f"arrived {receiver.arrivals[0] - seen_final:.1f} s after"
    # Tenant A never had more attempts in flight than it may, and its others stayed due meanwhile.
    assert silent_receiver.most_open <= service.app.config["SETTINGS"].webhook_max_per_tenant < HANGING


def test_the_tick_and_the_sweep_keep_running_while_webhook_attempts_hang(
    service, keyed_api, source_server, hanging_tenant, receiver
):
    # The first attempt fails; the second, due a second later, only the dispatcher's tick sends.
    receiver.answer_with(500)
    finished_request(keyed_api, source_server, KEY_B, receiver.url, **{"Idempotency-Key": uuid.uuid4().hex})

    assert wait_until(lambda: len(receiver.arrivals) >= 2, 30), "tenant B's retry never arrived"
    first, second = receiver.arrivals[:2]
    assert second - first < 3.0, f"the retry due after 1 s came {second - first:.1f} s later"

    # The sweep forgets expired Idempotency-Keys: one made to look two days old goes at its next run.
    with service.app.app_context():
        db.session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(days=2)))
        db.session.commit()

        def forgotten() -> bool:
            left = db.session.scalars(select(IdempotencyKey.id)).all()
            db.session.commit()
            return not left

        deadline = time.monotonic() + 3.0
        while not forgotten() and time.monotonic() < deadline:
            # As beat sends it: thrown away unless a process takes it within a second. A sweep that
            # finds beat's own under way does nothing, so another follows.
            broker.send(task_names.SWEEP_TASK, expires=1.0)
            wait_until(forgotten, 0.5)
        assert forgotten(), "no sweep ran within 3 s"


def test_re_sends_are_spaced_per_request_and_counted_as_uploads(service, keyed_api, source_server, receiver):
    request_ids = [finished_request(keyed_api, source_server, KEY_A, receiver.url)[0] for _ in range(3)]
    assert wait_until(lambda: len(receiver.arrivals) == 3, 30)
    limited = ApiServer.serving(api_keys=(KEY_A, KEY_B), rate_limit_uploads="3/minute", rate_limit_reads="1/minute")
    try:

        def resend(request_id: str) -> requests.Response:
            url = f"{limited.base_url}/api/requests/{request_id}/webhook-deliveries"
            return requests.post(url, headers=bearer(KEY_A), timeout=10)

        first = resend(request_ids[0])
        too_soon = resend(request_ids[0])
        other_request = resend(request_ids[1])
        read = requests.get(f"{limited.base_url}/api/requests", headers=bearer(KEY_A), timeout=10)
        over_the_limit = resend(request_ids[2])
    finally:
        limited.stop()
        service.send_with_own_celery()

    assert first.status_code == 202, first.text
    assert too_soon.status_code == 429, too_soon.text
    assert too_soon.headers["Content-Type"] == "application/json"
    assert too_soon.json()["error"]["code"] == "resend_too_soon"
    # The cooldown's time left, or the rate limit's window if that ends later (the limiter's headers).
    assert int(too_soon.headers["Retry-After"]) >= 1
    # The cooldown is the request's: another request's re-send goes through.
    assert other_request.status_code == 202, other_request.text
    # Re-sends take nothing from the read limit (one a minute here) ...
    assert read.status_code == 200, read.text
    # ... and count as uploads do: the fourth call in a minute is refused.
    assert over_the_limit.status_code == 429, over_the_limit.text
    assert over_the_limit.json()["error"]["code"] == "rate_limited"
    assert int(over_the_limit.headers["Retry-After"]) > 0
    # One more attempt for each re-send accepted, none for the refused ones.
    assert wait_until(lambda: len(receiver.arrivals) == 5, 10)
    time.sleep(1)
    assert len(receiver.arrivals) == 5
