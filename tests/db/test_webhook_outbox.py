"""The webhook outbox's schedule, leases and outcomes, called directly on this run's database.

Events come from finishing a request with a ``webhook_url``; the delivery task that would be sent
after the commit is recorded instead, so no webhook is ever sent.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from support.api import image_ids_of

from delivery import outbox
from intake.csv_input import ProductRow
from lifecycle import claims, creation
from models import DeliveryStatus, Request, RequestStatus, WebhookAttempt, WebhookEvent, db, utcnow
from reading import webhook_log
from reading.answers import timestamp

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

SCHEDULE = (0, 5, 300)
WEBHOOK_URL = "http://127.0.0.2:9/hook"
LEASE = timedelta(seconds=60)


@pytest.fixture(autouse=True)
def retry_schedule(quiet_service, monkeypatch) -> None:
    """The retry schedule (0, 5, 300) for every test here."""
    settings = dataclasses.replace(quiet_service.app.config["SETTINGS"], webhook_retry_schedule=SCHEDULE)
    monkeypatch.setitem(quiet_service.app.config, "SETTINGS", settings)


def finished_request(base_url: str, *, failed: bool = False) -> tuple[uuid.UUID, str]:
    """A one-image request, finished; returns its id and its webhook event's id."""
    rows = [ProductRow(1, "P", (f"http://127.0.0.2:9/{uuid.uuid4().hex}.jpg",), 2)]
    request_id = creation.create_request(rows, creation.UploadOptions(webhook_url=WEBHOOK_URL)).id
    image_id = image_ids_of(request_id)[0]
    assert claims.claim_image(image_id, f"task-{image_id}", 5, base_url) is not None
    if failed:
        assert claims.fail_image(image_id, "fetch_failed", "no answer", base_url)
    else:
        assert claims.complete_image(image_id, f"{request_id}/{image_id}.jpg", base_url)
    event_ids = db.session.scalars(select(WebhookEvent.id).where(WebhookEvent.request_id == request_id)).all()
    db.session.commit()
    assert len(event_ids) == 1
    return request_id, event_ids[0]


def due_event_ids(limit: int = 1000) -> list[str]:
    """Pending events whose next attempt is due, oldest due first, without marking them queued."""
    ids = db.session.scalars(
        select(WebhookEvent.id)
        .where(WebhookEvent.status == DeliveryStatus.PENDING, WebhookEvent.next_attempt_at <= utcnow())
        .order_by(WebhookEvent.next_attempt_at)
        .limit(limit)
    ).all()
    db.session.commit()
    return list(ids)


def seconds_until_next(event_id: str) -> float | None:
    next_at = event(event_id).next_attempt_at
    status = event(event_id).status
    return None if next_at is None or status != DeliveryStatus.PENDING else (next_at - utcnow()).total_seconds()


def event(event_id: str) -> WebhookEvent:
    db.session.expire_all()
    return db.session.get(WebhookEvent, event_id)


def make_due(event_id: str) -> None:
    """As if the event's next attempt time (or its lease) had passed."""
    db.session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(next_attempt_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def attempt_once(event_id: str, status_code: int | None, **outcome) -> str:
    make_due(event_id)
    work = outbox.claim_attempt(event_id, LEASE)
    assert work is not None
    outcome.setdefault("error", None)
    outcome.setdefault("duration_ms", 10)
    return outbox.record_attempt(work, status_code=status_code, at=utcnow(), **outcome)


@pytest.mark.parametrize("failed", [False, True], ids=["completed", "failed"])
def test_finishing_a_request_writes_one_pending_event_with_the_payload(base_url, sent, failed):
    before = utcnow()
    request_id, event_id = finished_request(base_url, failed=failed)

    row = event(event_id)
    assert event_id.startswith("msg_")
    assert (row.request_id, row.type, row.url) == (request_id, "request.completed", WEBHOOK_URL)
    assert (row.status, row.attempts_made, row.attempts_allowed) == (DeliveryStatus.PENDING, 0, len(SCHEDULE))
    assert before - timedelta(seconds=1) <= row.next_attempt_at <= utcnow()
    request = db.session.get(Request, request_id)
    status = RequestStatus.FAILED if failed else RequestStatus.COMPLETED
    assert request.status == status

    payload = json.loads(row.payload)
    assert payload == {
        "type": "request.completed",
        "timestamp": timestamp(request.completed_at),
        "data": {
            "request_id": str(request_id),
            "status": status,
            "progress": {
                "total_images": 1,
                "completed_images": 0 if failed else 1,
                "failed_images": 1 if failed else 0,
                "pending_images": 0,
                "percent": 100.0,
            },
            "output_csv_url": f"{base_url}/api/requests/{request_id}/output.csv",
        },
    }
    # Due at once (the schedule starts at 0), so its delivery is sent after the commit.
    assert sent == [("image_tasks.deliver_webhook", (event_id,))]
    assert event_id in due_event_ids()


def test_event_not_due_at_once_is_left_to_the_sweeper(quiet_service, sent, monkeypatch):
    settings = dataclasses.replace(quiet_service.app.config["SETTINGS"], webhook_retry_schedule=(30, 60))
    monkeypatch.setitem(quiet_service.app.config, "SETTINGS", settings)
    with quiet_service.app.app_context():
        try:
            _, event_id = finished_request(settings.public_base_url)
            row = event(event_id)
            assert row.attempts_allowed == 2
            assert 25 <= seconds_until_next(event_id) <= 30
            assert sent == []
            assert due_event_ids() == []
            assert outbox.claim_attempt(event_id, LEASE) is None
        finally:
            db.session.remove()


def test_claim_attempt_leases_the_event(base_url, sent):
    _, event_id = finished_request(base_url)

    before = utcnow() - timedelta(milliseconds=1)  # SQLite keeps the database clock to the millisecond
    work = outbox.claim_attempt(event_id, LEASE)
    assert work is not None
    assert (work.event_id, work.url, work.attempt) == (event_id, WEBHOOK_URL, 1)
    assert work.payload == event(event_id).payload
    leased = event(event_id)
    assert (leased.status, leased.attempts_made) == (DeliveryStatus.PENDING, 1)
    assert before + LEASE <= leased.next_attempt_at <= utcnow() + LEASE + timedelta(milliseconds=1)

    assert outbox.claim_attempt(event_id, LEASE) is None
    assert event(event_id).attempts_made == 1
    assert event_id not in due_event_ids()

    # A lease that ran out (the worker died mid-attempt) makes the event due again.
    make_due(event_id)
    assert event_id in due_event_ids()
    again = outbox.claim_attempt(event_id, LEASE)
    assert again is not None and again.attempt == 2


def test_success_delivers(base_url, sent):
    _, event_id = finished_request(base_url)
    work = outbox.claim_attempt(event_id, LEASE)

    status = outbox.record_attempt(work, status_code=200, error=None, duration_ms=12, at=utcnow())

    assert status == DeliveryStatus.DELIVERED
    row = event(event_id)
    assert (row.status, row.next_attempt_at, row.attempts_made) == (DeliveryStatus.DELIVERED, None, 1)
    assert seconds_until_next(event_id) is None
    assert outbox.claim_attempt(event_id, LEASE) is None
    assert event_id not in due_event_ids()


def test_server_error_schedules_the_next_attempt_by_the_schedule(base_url, sent):
    _, event_id = finished_request(base_url)
    work = outbox.claim_attempt(event_id, LEASE)

    before = utcnow()
    status = outbox.record_attempt(work, status_code=500, error=None, duration_ms=12, at=before)
    after = utcnow()

    assert status == DeliveryStatus.PENDING
    row = event(event_id)
    assert row.status == DeliveryStatus.PENDING
    # schedule[1] = 5 s, plus up to 10% jitter.
    assert before + timedelta(seconds=5) <= row.next_attempt_at <= after + timedelta(seconds=5.5)
    assert 4 <= seconds_until_next(event_id) <= 5.5
    assert outbox.claim_attempt(event_id, LEASE) is None

    # The second failure waits schedule[2] = 300 s.
    make_due(event_id)
    work = outbox.claim_attempt(event_id, LEASE)
    assert work.attempt == 2
    before = utcnow()
    assert outbox.record_attempt(work, status_code=503, error=None, duration_ms=5, at=before) == "PENDING"
    after = utcnow()
    row = event(event_id)
    assert before + timedelta(seconds=300) <= row.next_attempt_at <= after + timedelta(seconds=330)


def test_give_up_fails_at_once(base_url, sent):
    _, event_id = finished_request(base_url)
    work = outbox.claim_attempt(event_id, LEASE)

    status = outbox.record_attempt(work, status_code=410, error=None, duration_ms=3, at=utcnow(), give_up=True)

    assert status == DeliveryStatus.FAILED
    row = event(event_id)
    assert (row.status, row.next_attempt_at, row.attempts_made, row.attempts_allowed) == (
        DeliveryStatus.FAILED,
        None,
        1,
        len(SCHEDULE),
    )
    assert outbox.claim_attempt(event_id, LEASE) is None


def test_failing_every_allowed_attempt_fails_the_event(base_url, sent):
    _, event_id = finished_request(base_url)

    statuses = [attempt_once(event_id, 500) for _ in SCHEDULE]

    assert statuses == [DeliveryStatus.PENDING, DeliveryStatus.PENDING, DeliveryStatus.FAILED]
    row = event(event_id)
    assert (row.status, row.next_attempt_at, row.attempts_made) == (DeliveryStatus.FAILED, None, 3)
    make_due(event_id)  # even with a time set, a failed event is not attempted again
    assert outbox.claim_attempt(event_id, LEASE) is None
    assert event_id not in due_event_ids()


def test_connection_error_counts_as_a_failed_attempt(base_url, sent):
    _, event_id = finished_request(base_url)

    assert attempt_once(event_id, None, error="connect_failed: refused") == DeliveryStatus.PENDING
    assert event(event_id).next_attempt_at > utcnow()


def test_due_event_ids_lists_pending_events_whose_time_passed(base_url, sent):
    _, due = finished_request(base_url)
    _, future = finished_request(base_url)
    _, delivered = finished_request(base_url)
    _, failed = finished_request(base_url)
    _, leased = finished_request(base_url)
    make_due(due)
    db.session.execute(
        update(WebhookEvent).where(WebhookEvent.id == future).values(next_attempt_at=utcnow() + timedelta(hours=1))
    )
    db.session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id.in_([delivered, failed]))
        .values(next_attempt_at=utcnow() - timedelta(hours=1))
    )
    db.session.execute(update(WebhookEvent).where(WebhookEvent.id == delivered).values(status=DeliveryStatus.DELIVERED))
    db.session.execute(update(WebhookEvent).where(WebhookEvent.id == failed).values(status=DeliveryStatus.FAILED))
    db.session.commit()
    assert outbox.claim_attempt(leased, LEASE) is not None

    ids = due_event_ids()

    assert ids == [due]
    assert due_event_ids(limit=0) == []


def test_due_event_ids_oldest_due_first(base_url, sent):
    events = [finished_request(base_url)[1] for _ in range(3)]
    for minutes, event_id in zip((1, 3, 2), events, strict=True):
        db.session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(next_attempt_at=utcnow() - timedelta(minutes=minutes))
        )
    db.session.commit()

    assert due_event_ids() == [events[1], events[2], events[0]]
    assert due_event_ids(limit=2) == [events[1], events[2]]


def test_reopen_gives_an_exhausted_event_one_more_attempt_due_now(base_url, sent):
    request_id, event_id = finished_request(base_url)
    for _ in SCHEDULE:
        attempt_once(event_id, 500)
    assert event(event_id).status == DeliveryStatus.FAILED

    assert outbox.reopen_last_event(request_id) == event_id

    row = event(event_id)
    assert (row.status, row.attempts_made, row.attempts_allowed) == (DeliveryStatus.PENDING, 3, 4)
    assert row.next_attempt_at <= utcnow()
    assert due_event_ids() == [event_id]
    work = outbox.claim_attempt(event_id, LEASE)
    assert work is not None and work.attempt == 4
    assert outbox.record_attempt(work, status_code=500, error=None, duration_ms=1, at=utcnow()) == "FAILED"
    assert outbox.claim_attempt(event_id, LEASE) is None


def test_reopen_after_give_up_keeps_the_attempts_left(base_url, sent):
    request_id, event_id = finished_request(base_url)
    work = outbox.claim_attempt(event_id, LEASE)
    outbox.record_attempt(work, status_code=410, error=None, duration_ms=3, at=utcnow(), give_up=True)

    assert outbox.reopen_last_event(request_id) == event_id

    row = event(event_id)
    assert (row.status, row.attempts_made, row.attempts_allowed) == (DeliveryStatus.PENDING, 1, len(SCHEDULE))
    assert event_id in due_event_ids()
    work = outbox.claim_attempt(event_id, LEASE)
    assert work.attempt == 2
    assert outbox.record_attempt(work, status_code=204, error=None, duration_ms=1, at=utcnow()) == "DELIVERED"


def test_reopen_without_events_is_none(base_url, sent):
    rows = [ProductRow(1, "P", ("http://127.0.0.2:9/a.jpg",), 2)]
    request_id = creation.create_request(rows, creation.UploadOptions()).id

    assert outbox.reopen_last_event(request_id) is None
    assert outbox.reopen_last_event(uuid.uuid4()) is None
    assert webhook_log.describe_events(request_id) == []


def test_describe_events_lists_attempts_in_order(base_url, sent):
    request_id, event_id = finished_request(base_url)
    outcomes = [
        {"status_code": 500, "error": None, "duration_ms": 120},
        {"status_code": None, "error": "read_timeout: no answer in 3 s", "duration_ms": 3001},
        {"status_code": 200, "error": None, "duration_ms": 15},
    ]
    times = []
    for outcome in outcomes:
        make_due(event_id)
        work = outbox.claim_attempt(event_id, LEASE)
        times.append(utcnow())
        outbox.record_attempt(work, at=times[-1], **outcome)
    _, other_event = finished_request(base_url)

    described = webhook_log.describe_events(request_id)

    row = event(event_id)
    assert described == [
        {
            "webhook_id": event_id,
            "type": "request.completed",
            "url": WEBHOOK_URL,
            "status": DeliveryStatus.DELIVERED,
            "created_at": timestamp(row.created_at),
            "next_attempt_at": None,
            "attempts": [
                {"attempt": n, "at": timestamp(at), **outcome}
                for n, (at, outcome) in enumerate(zip(times, outcomes, strict=True), start=1)
            ],
        }
    ]
    stored = db.session.scalars(select(WebhookAttempt.event_id)).all()
    db.session.commit()
    assert sorted(stored) == [event_id] * 3
    assert other_event not in {e["webhook_id"] for e in described}


def test_late_failure_does_not_undo_a_delivery(base_url, sent):
    _, event_id = finished_request(base_url)
    assert attempt_once(event_id, 500) == DeliveryStatus.PENDING
    make_due(event_id)
    slow = outbox.claim_attempt(event_id, LEASE)
    make_due(event_id)  # the slow attempt's lease runs out while it is still waiting for an answer
    fast = outbox.claim_attempt(event_id, LEASE)
    assert (slow.attempt, fast.attempt) == (2, 3)
    assert outbox.record_attempt(fast, status_code=200, error=None, duration_ms=5, at=utcnow()) == "DELIVERED"

    outbox.record_attempt(slow, status_code=500, error=None, duration_ms=70_000, at=utcnow())

    row = event(event_id)
    assert (row.status, row.next_attempt_at) == (DeliveryStatus.DELIVERED, None)


def test_an_event_already_queued_is_not_sent_again_unless_its_message_was_lost(base_url, sent):
    _, event_id = finished_request(base_url)
    assert sent == [("image_tasks.deliver_webhook", (event_id,))]
    make_due(event_id)
    # Sent when its request finished: every tick until a worker claims it leaves it alone.
    assert outbox.take_due_events(lost_after_s=60) == []
    assert outbox.take_due_events(lost_after_s=60) == []
    db.session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(queued_at=utcnow() - timedelta(minutes=2))
    )
    db.session.commit()
    assert outbox.take_due_events(lost_after_s=60) == [event_id]
    assert outbox.take_due_events(lost_after_s=60) == []


def test_a_claimed_attempt_that_fails_is_queued_again_once_due(base_url, sent):
    _, event_id = finished_request(base_url)
    assert attempt_once(event_id, 500) == "PENDING"
    assert outbox.take_due_events(lost_after_s=60) == []  # due in 5 s, not yet
    make_due(event_id)
    assert outbox.take_due_events(lost_after_s=60) == [event_id]
    assert outbox.take_due_events(lost_after_s=60) == []
