"""Webhook attempts in flight are bounded per tenant and per receiving host, and re-sends are spaced.

Called directly on this run's database: a tenant or host at its bound gets nothing more handed out,
its events stay due, and another tenant's events go out at once.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import update
from support.api import image_ids_of

from delivery import outbox
from intake.csv_input import ProductRow
from lifecycle import claims, creation
from models import DeliveryStatus, WebhookEvent, db, utcnow

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

PER_TENANT, PER_HOST = 2, 3
LEASE = timedelta(seconds=60)
TENANT_A, TENANT_B, TENANT_C, TENANT_D = "a" * 64, "b" * 64, "c" * 64, "d" * 64


@pytest.fixture(autouse=True)
def bounds(quiet_service, monkeypatch) -> None:
    """Two attempts in flight per tenant, three per host, a 10 s re-send cooldown, for every test here."""
    settings = dataclasses.replace(
        quiet_service.app.config["SETTINGS"],
        webhook_retry_schedule=(0, 5, 300),
        webhook_max_per_tenant=PER_TENANT,
        webhook_max_per_host=PER_HOST,
        webhook_resend_cooldown_s=10.0,
    )
    monkeypatch.setitem(quiet_service.app.config, "SETTINGS", settings)


def finished(base_url: str, owner: str | None, url: str) -> str:
    """A one-image request of ``owner``, completed; returns its webhook event's id, due and not queued."""
    rows = [ProductRow(1, "P", (f"http://127.0.0.2:9/{uuid.uuid4().hex}.jpg",), 2)]
    options = creation.UploadOptions(webhook_url=url, owner_key_hash=owner)
    request_id = creation.create_request(rows, options).id
    image_id = image_ids_of(request_id)[0]
    assert claims.claim_image(image_id, f"task-{image_id}", 5, base_url) is not None
    assert claims.complete_image(image_id, f"{request_id}/{image_id}.jpg", base_url)
    event = db.session.scalars(db.select(WebhookEvent).where(WebhookEvent.request_id == request_id)).one()
    # As if its message had been lost long ago: only the bounds decide whether it goes out.
    event.queued_at, event.next_attempt_at = None, utcnow() - timedelta(seconds=1)
    event_id = event.id
    db.session.commit()
    return event_id


def row(event_id: str) -> WebhookEvent:
    db.session.expire_all()
    found = db.session.get(WebhookEvent, event_id)
    db.session.commit()
    return found


def still_due(event_id: str) -> bool:
    event = row(event_id)
    return (
        event.status == DeliveryStatus.PENDING
        and event.attempts_made == 0
        and event.queued_at is None
        and event.next_attempt_at <= utcnow()
    )


def record(work: outbox.AttemptWork, status_code: int | None = 200) -> str:
    return outbox.record_attempt(work, status_code=status_code, error=None, duration_ms=5, at=utcnow())


def test_a_tenant_at_its_bound_waits_while_another_tenant_goes_at_once(base_url, sent):
    a1, a2, a3 = (finished(base_url, TENANT_A, f"http://hooks-a.example/{n}") for n in range(3))
    b1 = finished(base_url, TENANT_B, "http://hooks-b.example/1")
    first, second = outbox.claim_attempt(a1, LEASE), outbox.claim_attempt(a2, LEASE)
    assert first is not None and second is not None

    assert outbox.claim_attempt(a3, LEASE) is None
    assert still_due(a3)
    assert outbox.claim_attempt(b1, LEASE) is not None

    # An attempt of the tenant ends, failed or not: its waiting event may go.
    assert record(first, 500) == DeliveryStatus.PENDING
    assert row(a1).in_flight_until is None
    third = outbox.claim_attempt(a3, LEASE)
    assert third is not None and third.attempt == 1


def test_a_receiving_host_at_its_bound_waits_for_every_tenant(base_url, sent):
    shared = [finished(base_url, owner, "http://shared.example/hook") for owner in (TENANT_A, TENANT_B, TENANT_C)]
    c2 = finished(base_url, TENANT_C, "http://SHARED.example:8080/other")
    elsewhere = finished(base_url, TENANT_D, "http://elsewhere.example/hook")
    works = [outbox.claim_attempt(event_id, LEASE) for event_id in shared]
    assert None not in works

    # Tenant C has one attempt in flight of its two; the host has all three of its own taken.
    assert outbox.claim_attempt(c2, LEASE) is None
    assert still_due(c2)
    assert outbox.claim_attempt(elsewhere, LEASE) is not None

    record(works[0])
    assert outbox.claim_attempt(c2, LEASE) is not None


def test_the_open_service_is_one_tenant(base_url, sent):
    open_events = [finished(base_url, None, f"http://hooks-{n}.example/") for n in range(3)]
    keyed = finished(base_url, TENANT_A, "http://hooks-a.example/")

    assert [outbox.claim_attempt(e, LEASE) is not None for e in open_events] == [True, True, False]
    assert outbox.claim_attempt(keyed, LEASE) is not None


def test_the_tick_hands_each_tenant_only_the_room_it_has(base_url, sent):
    a_events = [finished(base_url, TENANT_A, f"http://hooks-a{n}.example/") for n in range(5)]
    b_event = finished(base_url, TENANT_B, "http://hooks-b.example/")
    open_event = finished(base_url, None, "http://hooks-open.example/")

    taken = outbox.take_due_events(lost_after_s=60)

    # Oldest due first within the tenant; the others stay due, unqueued.
    assert sorted(taken) == sorted([*a_events[:2], b_event, open_event])
    assert all(still_due(e) for e in a_events[2:])
    # Handed to the broker and not yet claimed, they still count: nothing more for tenant A.
    assert outbox.take_due_events(lost_after_s=60) == []
    works = [outbox.claim_attempt(e, LEASE) for e in a_events[:2]]
    assert outbox.take_due_events(lost_after_s=60) == []

    record(works[0], 500)
    assert outbox.take_due_events(lost_after_s=60) == [a_events[2]]


def test_the_tick_leaves_out_a_full_host_and_not_the_hosts_beside_it(base_url, sent):
    busy = [finished(base_url, owner, "http://shared.example/") for owner in (TENANT_A, TENANT_B, TENANT_C)]
    for event_id in busy:
        assert outbox.claim_attempt(event_id, LEASE) is not None
    waiting = finished(base_url, TENANT_D, "http://shared.example/")
    other = finished(base_url, TENANT_D, "http://other.example/")

    assert outbox.take_due_events(lost_after_s=60) == [other]
    assert still_due(waiting)


def test_an_attempt_whose_worker_died_holds_its_room_until_its_lease_ends(base_url, sent):
    a1, a2, a3 = (finished(base_url, TENANT_A, f"http://hooks-a.example/{n}") for n in range(3))
    assert outbox.claim_attempt(a1, LEASE) is not None
    assert outbox.claim_attempt(a2, LEASE) is not None
    assert outbox.claim_attempt(a3, LEASE) is None

    db.session.execute(
        update(WebhookEvent).where(WebhookEvent.id == a1).values(in_flight_until=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()

    assert outbox.claim_attempt(a3, LEASE) is not None


def test_a_re_send_within_the_cooldown_is_refused_with_the_time_left(base_url, sent):
    event_id = finished(base_url, TENANT_A, "http://hooks-a.example/")
    request_id = row(event_id).request_id
    assert outbox.reopen_last_event(request_id) == event_id

    with pytest.raises(outbox.ResendTooSoon) as refused:
        outbox.reopen_last_event(request_id)
    assert 9 < refused.value.retry_after_s <= 10
    assert row(event_id).attempts_allowed == 3  # the refused one granted nothing

    db.session.execute(
        update(WebhookEvent).where(WebhookEvent.id == event_id).values(resent_at=utcnow() - timedelta(seconds=11))
    )
    db.session.commit()
    assert outbox.reopen_last_event(request_id) == event_id


def test_claims_racing_for_the_last_room_never_pass_the_bound(quiet_service, base_url, sent):
    events = [finished(base_url, TENANT_A, f"http://hooks-{n}.example/") for n in range(6)]
    start = threading.Barrier(len(events))

    def claim(event_id: str) -> bool:
        with quiet_service.app.app_context():
            try:
                start.wait()
                return outbox.claim_attempt(event_id, LEASE) is not None
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        claimed = list(pool.map(claim, events))

    assert sum(claimed) == PER_TENANT
    assert sum(still_due(e) for e in events) == len(events) - PER_TENANT
