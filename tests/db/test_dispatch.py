"""The dispatcher: a window of queued images, shared fairly, and lost messages told from slow ones.

Called directly on this run's database; every message is recorded instead of sent.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from intake.csv_input import ProductRow
from lifecycle import claims, creation, leases
from models import Image, ImageStatus, db, utcnow
from queueing import dispatch

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")


@pytest.fixture(autouse=True)
def window_of_depth(monkeypatch) -> None:
    """These tests size the window by ``depth`` alone; the one that follows the work in progress is below."""
    monkeypatch.setattr(dispatch, "MIN_QUEUED", 10**6)


def new_request(images: int, owner: str | None = None) -> uuid.UUID:
    tag = uuid.uuid4().hex[:8]
    rows = [ProductRow(n + 1, f"P{n}", (f"http://127.0.0.2:9/{tag}/{n}.jpg",), n + 2) for n in range(images)]
    return creation.create_request(rows, creation.UploadOptions(owner_key_hash=owner)).id


def request_of(image_ids: list[int]) -> Counter:
    rows = db.session.execute(select(Image.request_id).where(Image.id.in_(image_ids))).scalars().all()
    db.session.commit()
    return Counter(rows)


def sent_ids(sent) -> list[int]:
    return [args[0] for name, args in sent if name == "image_tasks.process_image"]


def test_the_window_holds_at_most_depth_queued_images(base_url, sent):
    new_request(50)
    assert dispatch.fill_queue(8) == 8
    assert dispatch.fill_queue(8) == 0  # full: nothing more until a slot frees
    assert len(set(sent_ids(sent))) == 8
    queued = db.session.scalars(select(Image).where(Image.queued_at.is_not(None))).all()
    assert sorted(i.id for i in queued) == sorted(sent_ids(sent))
    assert all(i.status == ImageStatus.PENDING for i in queued)
    db.session.commit()
    # Claiming takes an image out of the queue, but it is still in flight: the window is the queue.
    first = sent_ids(sent)[0]
    assert claims.claim_image(first, "t1", 5, base_url) is not None
    assert dispatch.fill_queue(8) == 1
    assert dispatch.queue_state() == dispatch.QueueState(queued=8, processing=1)


def test_a_small_request_does_not_wait_behind_a_big_ones_backlog(base_url, sent):
    big = new_request(500)
    dispatch.fill_queue(10)
    assert request_of(sent_ids(sent)) == {big: 10}
    small = new_request(5)
    for image_id in sent_ids(sent)[:4]:  # four of the big request's images start
        claims.claim_image(image_id, f"t{image_id}", 5, base_url)
    sent.clear()
    assert dispatch.fill_queue(10) == 4
    assert request_of(sent_ids(sent)) == {small: 4}


def test_two_tenants_share_the_window_equally(base_url, sent):
    first = new_request(100, owner="a" * 64)
    new_request(30, owner="b" * 64)
    second_b = new_request(30, owner="b" * 64)
    dispatch.fill_queue(12)
    by_request = request_of(sent_ids(sent))
    assert by_request[first] == 6
    assert sum(by_request.values()) == 12
    assert by_request[second_b] == 3  # tenant b's half, shared by its two requests


def test_images_whose_publish_failed_wait_for_the_next_fill(base_url, monkeypatch):
    from queueing import broker

    new_request(5)
    monkeypatch.setattr(broker, "send", lambda *args, **kwargs: False)
    assert dispatch.fill_queue(10) == 0
    assert db.session.scalars(select(Image.id).where(Image.queued_at.is_not(None))).all() == []
    db.session.commit()


def age_queue(by: timedelta) -> None:
    db.session.execute(update(Image).where(Image.queued_at.is_not(None)).values(queued_at=utcnow() - by))
    db.session.commit()


def test_lost_messages_are_told_by_the_brokers_count_under_load(base_url, sent):
    new_request(20)
    dispatch.fill_queue(10)
    age_queue(timedelta(seconds=30))
    # The broker holds all ten: a busy queue, nothing lost, however long they have waited.
    assert dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=10) == []
    # The broker restarted empty and has three new messages since: the seven oldest are lost.
    lost = dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=3)
    assert len(lost) == 7
    released = db.session.scalars(select(Image).where(Image.id.in_(lost))).all()
    assert all((i.status, i.queued_at, i.requeues) == (ImageStatus.PENDING, None, 1) for i in released)
    db.session.commit()
    # Released once: an overlapping sweep finds nothing more.
    assert dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=3) == []
    sent.clear()
    assert sorted(sent_ids(sent)) == []
    assert dispatch.fill_queue(10) == 7


def test_messages_just_published_are_not_taken_for_lost(base_url, sent):
    new_request(5)
    dispatch.fill_queue(10)
    assert dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=0) == []


def test_without_a_count_from_the_broker_only_the_backstop_releases(base_url, sent):
    new_request(5)
    dispatch.fill_queue(10)
    age_queue(timedelta(seconds=60))
    assert dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=None) == []
    age_queue(timedelta(seconds=600))
    assert len(dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=None)) == 5


def test_one_sweep_at_a_time(base_url):
    assert leases.try_acquire("sweep", "first", ttl_s=60)
    assert not leases.try_acquire("sweep", "second", ttl_s=60)
    leases.release("sweep", "second")  # not the holder: no effect
    assert not leases.try_acquire("sweep", "second", ttl_s=60)
    leases.release("sweep", "first")
    assert leases.try_acquire("sweep", "second", ttl_s=60)
    assert leases.try_acquire("other", "third", ttl_s=60)


def test_an_expired_lease_can_be_taken_over(base_url):
    assert leases.try_acquire("sweep", "crashed", ttl_s=0.2)
    import time

    time.sleep(0.5)
    assert leases.try_acquire("sweep", "next", ttl_s=60)


def test_an_image_whose_message_was_lost_keeps_its_place_in_line(base_url, sent):
    first = new_request(10)
    dispatch.fill_queue(4)
    age_queue(timedelta(seconds=30))
    later = [new_request(4) for _ in range(3)]
    lost = dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=0)
    assert len(lost) == 4
    sent.clear()
    assert dispatch.fill_queue(4) == 4
    # Re-queued before the newer requests get their share: they were let in first.
    assert sorted(sent_ids(sent)) == sorted(lost)
    assert request_of(sent_ids(sent)) == {first: 4}
    assert all(request_id not in request_of(sent_ids(sent)) for request_id in later)


def test_the_window_follows_the_images_in_progress(base_url, sent, monkeypatch):
    monkeypatch.setattr(dispatch, "MIN_QUEUED", 4)
    new_request(100)
    assert dispatch.fill_queue(64) == 4  # nothing in progress: a few, so idle workers start at once
    for image_id in sent_ids(sent):
        claims.claim_image(image_id, f"t{image_id}", 5, base_url)
    assert dispatch.fill_queue(64) == 4  # four in progress: about one waiting each
    for image_id in sent_ids(sent)[4:]:
        claims.claim_image(image_id, f"t{image_id}", 5, base_url)
    assert dispatch.fill_queue(64) == 8
    assert dispatch.queue_state() == dispatch.QueueState(queued=8, processing=8)
    assert dispatch.fill_queue(6) == 0  # never past depth


def test_a_worker_refills_only_once_a_quarter_of_the_window_is_free(base_url, sent):
    new_request(100)
    assert dispatch.fill_queue(16) == 16
    claimed = sent_ids(sent)[:3]
    for image_id in claimed:
        claims.claim_image(image_id, f"t{image_id}", 5, base_url)
    assert dispatch.fill_queue(16, lazy=True) == 0  # 3 of 16 free: not worth a dispatcher's pass yet
    claims.claim_image(sent_ids(sent)[3], "t-fourth", 5, base_url)
    assert dispatch.fill_queue(16, lazy=True) == 4  # a quarter free: refilled to the brim
    assert dispatch.queue_state() == dispatch.QueueState(queued=16, processing=4)


def test_a_lazy_refill_leaves_the_window_to_a_dispatcher_at_work(quiet_service, base_url, sent):
    from sqlalchemy import text

    if db.engine.dialect.name != "postgresql":
        pytest.skip("the dispatcher's advisory lock is PostgreSQL's; SQLite's write lock serialises them")
    new_request(40)
    with db.engine.connect() as other:
        other.execute(text("SELECT pg_advisory_lock(:id)"), {"id": dispatch._DISPATCH_LOCK_ID})
        try:
            assert dispatch.fill_queue(16, lazy=True) == 0
        finally:
            other.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": dispatch._DISPATCH_LOCK_ID})
            other.commit()
    assert dispatch.fill_queue(16, lazy=True) == 16


def test_a_released_image_waits_out_its_back_off(base_url, sent):
    new_request(1)
    [image_id] = dispatch.take_images_to_queue(10)
    age_queue(timedelta(seconds=30))
    assert dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=0) == [image_id]
    assert dispatch.take_images_to_queue(10) == [image_id]  # released, it goes again at once
    # Its next start fails for a moment: it is given back with an hour's back-off, released or not.
    assert claims.claim_image(image_id, "t0", 5, base_url) is not None
    assert claims.schedule_retry(image_id, "t0", 3600, "http_503", "busy")
    assert dispatch.take_images_to_queue(10) == []
    db.session.execute(update(Image).where(Image.id == image_id).values(not_before=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert dispatch.take_images_to_queue(10) == [image_id]


def test_released_images_take_only_their_tenants_share(base_url, sent):
    lost_tenant = new_request(12, owner="a" * 64)
    assert dispatch.fill_queue(12) == 12
    age_queue(timedelta(seconds=30))
    assert len(dispatch.release_lost_images(stale_after_s=300, grace_s=5, broker_holds=0)) == 12
    other = new_request(12, owner="b" * 64)
    sent.clear()
    assert dispatch.fill_queue(12) == 12
    assert request_of(sent_ids(sent)) == {lost_tenant: 6, other: 6}


def test_a_tenants_load_counts_its_requests_with_nothing_left_waiting(base_url, sent):
    busy = new_request(6, owner="a" * 64)
    assert dispatch.fill_queue(6) == 6  # all of it in flight: nothing of it waits any more
    more_of_a = new_request(20, owner="a" * 64)
    tenant_b = new_request(20, owner="b" * 64)
    sent.clear()
    assert dispatch.fill_queue(18) == 12
    # Tenant a already has six in flight: b's first six slots even them out, then they alternate.
    assert request_of(sent_ids(sent)) == {tenant_b: 9, more_of_a: 3}
    assert busy not in request_of(sent_ids(sent))
