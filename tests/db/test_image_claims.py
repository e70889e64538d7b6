"""Claims and final states of images and requests, called directly on this run's database.

No task is ever sent: requests are written with ``create_request`` (which sends nothing), and the
webhook sent after a request with a ``webhook_url`` finishes is recorded instead of sent.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from intake.csv_input import ProductRow
from lifecycle import claims, creation, finalize, recovery
from models import (
    Image,
    ImageStatus,
    ProductImage,
    Request,
    RequestStatus,
    WebhookEvent,
    db,
    utcnow,
)

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

MAX_ATTEMPTS = 3
WEBHOOK_URL = "http://127.0.0.2:9/hook"


def new_request(*products: tuple[str, ...], webhook_url: str | None = None) -> uuid.UUID:
    """A request whose products name these URLs; returns its id."""
    rows = [ProductRow(n + 1, f"P{n}", urls, n + 2) for n, urls in enumerate(products)]
    created = creation.create_request(rows, creation.UploadOptions(webhook_url=webhook_url))
    return created.id


def url(name: str) -> str:
    return f"http://127.0.0.2:9/{name}.jpg"


def image_ids(request_id: uuid.UUID) -> dict[str, int]:
    rows = db.session.execute(select(Image.source_url, Image.id).where(Image.request_id == request_id)).all()
    db.session.commit()
    return dict(rows)


def image(image_id: int) -> Image:
    db.session.expire_all()
    return db.session.get(Image, image_id)


def request_row(request_id: uuid.UUID) -> Request:
    db.session.expire_all()
    return db.session.get(Request, request_id)


def event_count(request_id: uuid.UUID) -> int:
    count = db.session.scalar(
        select(func.count()).select_from(WebhookEvent).where(WebhookEvent.request_id == request_id)
    )
    db.session.commit()
    return count


def age_images(*ids: int, by: timedelta) -> None:
    db.session.execute(update(Image).where(Image.id.in_(ids)).values(updated_at=utcnow() - by))
    db.session.commit()


def test_pending_image_is_claimed_once_but_a_redelivery_of_the_same_task_takes_it_over(base_url, sent):
    request_id = new_request((url("a"),))
    [image_id] = image_ids(request_id).values()

    work = claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url)

    assert work is not None
    assert (work.image_id, work.request_id, work.source_url, work.attempt) == (image_id, request_id, url("a"), 1)
    assert (work.options.quality, work.options.max_dimension, work.options.output_format) == (50, None, "jpeg")
    claimed = image(image_id)
    assert (claimed.status, claimed.attempts, claimed.claimed_by) == (ImageStatus.PROCESSING, 1, "t1")
    assert request_row(request_id).status == RequestStatus.PROCESSING
    before = (claimed.status, claimed.attempts, claimed.claimed_by, claimed.updated_at, claimed.requeues)

    assert claims.claim_image(image_id, "t2", MAX_ATTEMPTS, base_url) is None
    other = image(image_id)
    assert (other.status, other.attempts, other.claimed_by, other.updated_at, other.requeues) == before

    redelivered = claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url)
    assert redelivered is not None and redelivered.attempt == 2
    again = image(image_id)
    assert (again.status, again.attempts, again.claimed_by) == (ImageStatus.PROCESSING, 2, "t1")
    assert request_row(request_id).status == RequestStatus.PROCESSING
    assert sent == []


@pytest.mark.parametrize("webhook_url", [None, WEBHOOK_URL], ids=["no-webhook", "webhook"])
def test_poison_image_fails_after_max_attempts_and_finishes_its_request(base_url, sent, webhook_url):
    # Two products name the one URL: one image row counted twice.
    request_id = new_request((url("poison"),), (url("poison"),), webhook_url=webhook_url)
    [image_id] = image_ids(request_id).values()
    assert image(image_id).occurrences == 2

    attempts = [claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url) for _ in range(MAX_ATTEMPTS)]
    assert [work.attempt for work in attempts] == [1, 2, 3]

    assert claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url) is None
    failed = image(image_id)
    assert (failed.status, failed.error_code, failed.attempts) == (ImageStatus.FAILED, "too_many_attempts", 3)
    assert failed.finished_at is not None and failed.output_key is None
    request = request_row(request_id)
    assert (request.status, request.completed_images, request.failed_images) == (RequestStatus.FAILED, 0, 2)
    assert request.completed_at is not None

    # Nothing more happens, however often it is claimed again.
    assert claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url) is None
    assert claims.claim_image(image_id, "t2", MAX_ATTEMPTS, base_url) is None
    assert request_row(request_id).failed_images == 2
    expected_events = 1 if webhook_url else 0
    assert event_count(request_id) == expected_events
    assert [name for name, _ in sent] == ["image_tasks.deliver_webhook"] * expected_events


def test_exhausted_image_claimed_by_another_task_is_left_to_it_until_requeued(base_url, sent):
    request_id = new_request((url("a"),))
    [image_id] = image_ids(request_id).values()
    for _ in range(MAX_ATTEMPTS):
        assert claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url) is not None

    # Another task's copy neither runs nor fails the image the first task may still be working on.
    assert claims.claim_image(image_id, "t2", MAX_ATTEMPTS, base_url) is None
    assert (image(image_id).status, image(image_id).claimed_by) == (ImageStatus.PROCESSING, "t1")

    # Once the sweeper releases it, any task's claim ends it.
    age_images(image_id, by=timedelta(hours=1))
    assert recovery.release_stale_images(300) == [image_id]
    assert claims.claim_image(image_id, "t2", MAX_ATTEMPTS, base_url) is None
    assert (image(image_id).status, image(image_id).error_code) == (ImageStatus.FAILED, "too_many_attempts")
    assert request_row(request_id).status == RequestStatus.FAILED


def test_complete_twice_counts_once_and_fail_after_complete_is_refused(base_url, sent):
    request_id = new_request((url("a"),), (url("b"),))
    ids = image_ids(request_id)
    first = ids[url("a")]
    claims.claim_image(first, "t1", MAX_ATTEMPTS, base_url)

    assert claims.complete_image(first, "out/a.jpg", base_url) is True
    assert claims.complete_image(first, "out/other.jpg", base_url) is False
    assert claims.fail_image(first, "fetch_failed", "late failure", base_url) is False

    done = image(first)
    assert (done.status, done.output_key, done.error_code) == (ImageStatus.COMPLETED, "out/a.jpg", None)
    request = request_row(request_id)
    assert (request.status, request.completed_images, request.failed_images) == (RequestStatus.PROCESSING, 1, 0)
    assert request.completed_at is None
    assert image(ids[url("b")]).status == ImageStatus.PENDING


def test_fail_twice_counts_once_and_complete_after_fail_is_refused(base_url, sent):
    request_id = new_request((url("a"),), (url("b"),))
    first = image_ids(request_id)[url("a")]

    assert claims.fail_image(first, "not_an_image", "no", base_url) is True
    assert claims.fail_image(first, "not_an_image", "no", base_url) is False
    assert claims.complete_image(first, "out/a.jpg", base_url) is False

    failed = image(first)
    assert (failed.status, failed.error_code, failed.error_message, failed.output_key) == (
        ImageStatus.FAILED,
        "not_an_image",
        "no",
        None,
    )
    request = request_row(request_id)
    assert (request.completed_images, request.failed_images) == (0, 1)


def test_url_named_by_two_products_is_one_image_counted_twice(base_url, sent):
    request_id = new_request((url("shared"),), (url("shared"), url("own")))
    ids = image_ids(request_id)
    assert set(ids) == {url("shared"), url("own")}
    assert image(ids[url("shared")]).occurrences == 2
    assert image(ids[url("own")]).occurrences == 1
    assert request_row(request_id).total_images == 3
    links = db.session.scalar(
        select(func.count()).select_from(ProductImage).where(ProductImage.image_id == ids[url("shared")])
    )
    db.session.commit()
    assert links == 2

    claims.claim_image(ids[url("shared")], "t1", MAX_ATTEMPTS, base_url)
    assert claims.complete_image(ids[url("shared")], "out/shared.jpg", base_url)
    request = request_row(request_id)
    assert (request.status, request.completed_images, request.failed_images) == (RequestStatus.PROCESSING, 2, 0)

    assert claims.fail_image(ids[url("own")], "fetch_failed", "gone", base_url)
    request = request_row(request_id)
    assert (request.completed_images, request.failed_images) == (2, 1)
    assert request.status == RequestStatus.COMPLETED_WITH_ERRORS


@pytest.mark.parametrize(
    ("outcomes", "final"),
    [
        (("complete", "fail"), RequestStatus.COMPLETED_WITH_ERRORS),
        (("fail", "fail"), RequestStatus.FAILED),
        (("complete", "complete"), RequestStatus.COMPLETED),
    ],
)
def test_request_is_finalised_once_with_one_webhook_event(base_url, sent, outcomes, final):
    request_id = new_request((url("a"),), (url("b"),), webhook_url=WEBHOOK_URL)
    ids = list(image_ids(request_id).values())

    for image_id, outcome in zip(ids, outcomes, strict=True):
        assert claims.claim_image(image_id, f"task-{image_id}", MAX_ATTEMPTS, base_url) is not None
        if outcome == "complete":
            assert claims.complete_image(image_id, f"out/{image_id}.jpg", base_url)
        else:
            assert claims.fail_image(image_id, "fetch_failed", "no answer", base_url)
        if image_id == ids[0]:
            assert request_row(request_id).status == RequestStatus.PROCESSING
            assert event_count(request_id) == 0

    request = request_row(request_id)
    assert request.status == final
    assert request.completed_at is not None
    assert request.completed_images == outcomes.count("complete")
    assert request.failed_images == outcomes.count("fail")
    completed_at = request.completed_at
    assert event_count(request_id) == 1
    [event_id] = db.session.scalars(select(WebhookEvent.id).where(WebhookEvent.request_id == request_id)).all()
    assert sent == [("image_tasks.deliver_webhook", (event_id,))]

    assert finalize.finalize_request(request_id, base_url) is None
    db.session.commit()
    assert finalize.finalize_finished_requests(base_url) == 0
    assert event_count(request_id) == 1
    assert request_row(request_id).completed_at == completed_at
    assert len(sent) == 1


def test_finalize_request_refuses_while_images_are_active(base_url, sent):
    request_id = new_request((url("a"),), (url("b"),), webhook_url=WEBHOOK_URL)
    first = image_ids(request_id)[url("a")]
    claims.complete_image(first, "out/a.jpg", base_url)

    assert finalize.finalize_request(request_id, base_url) is None
    db.session.commit()
    assert finalize.finalize_finished_requests(base_url) == 0
    assert request_row(request_id).status == RequestStatus.PENDING
    assert event_count(request_id) == 0
    assert sent == []


def test_finalize_finished_requests_finishes_a_request_whose_counters_are_done(base_url, sent):
    request_id = new_request((url("a"),), webhook_url=WEBHOOK_URL)
    [image_id] = image_ids(request_id).values()
    # As if a worker died between counting the image and setting the request's final status.
    db.session.execute(update(Image).where(Image.id == image_id).values(status=ImageStatus.COMPLETED))
    db.session.execute(update(Request).where(Request.id == request_id).values(completed_images=1))
    db.session.commit()

    assert finalize.finalize_finished_requests(base_url) == 1
    assert request_row(request_id).status == RequestStatus.COMPLETED
    assert event_count(request_id) == 1
    assert finalize.finalize_finished_requests(base_url) == 0
    assert event_count(request_id) == 1
    assert len(sent) == 1


def test_release_stale_images_releases_abandoned_images(base_url, sent):
    request_id = new_request((url("stale"),), (url("fresh"),), (url("waiting"),))
    ids = image_ids(request_id)
    stale, fresh, waiting = ids[url("stale")], ids[url("fresh")], ids[url("waiting")]
    claims.claim_image(stale, "dead-task", MAX_ATTEMPTS, base_url)
    claims.claim_image(fresh, "live-task", MAX_ATTEMPTS, base_url)
    age_images(stale, waiting, by=timedelta(minutes=10))
    threshold = 300

    assert recovery.release_stale_images(threshold) == [stale]
    released = image(stale)
    assert (released.status, released.claimed_by, released.requeues) == (ImageStatus.PENDING, None, 1)
    assert released.attempts == 1
    assert released.updated_at > utcnow() - timedelta(minutes=1)
    live = image(fresh)
    assert (live.status, live.claimed_by, live.requeues) == (ImageStatus.PROCESSING, "live-task", 0)
    assert (image(waiting).status, image(waiting).requeues) == (ImageStatus.PENDING, 0)

    # Released once: an overlapping sweep finds nothing left to release.
    assert recovery.release_stale_images(threshold) == []
    # A waiting image is the dispatcher's, never the stale-lease sweep's.
    assert (image(waiting).status, image(waiting).requeues) == (ImageStatus.PENDING, 0)

    # The re-sent message has a new task id, and it may claim the released image.
    work = claims.claim_image(stale, "new-task", MAX_ATTEMPTS, base_url)
    assert work is not None and work.attempt == 2
    taken = image(stale)
    assert (taken.status, taken.claimed_by, taken.attempts) == (ImageStatus.PROCESSING, "new-task", 2)
    # The dead task's message, if it is ever redelivered, no longer owns the image.
    assert claims.claim_image(stale, "dead-task", MAX_ATTEMPTS, base_url) is None
    assert image(stale).claimed_by == "new-task"


def test_release_stale_images_leaves_final_images_alone(base_url, sent):
    request_id = new_request((url("done"),), (url("other"),))
    done = image_ids(request_id)[url("done")]
    claims.complete_image(done, "out/done.jpg", base_url)
    age_images(done, by=timedelta(hours=1))

    assert recovery.release_stale_images(300) == []
    assert (image(done).status, image(done).requeues) == (ImageStatus.COMPLETED, 0)


def test_fail_exhausted_images_fails_images_requeued_too_often(base_url, sent):
    request_id = new_request((url("stuck"),), (url("fine"),), (url("done"),), webhook_url=WEBHOOK_URL)
    ids = image_ids(request_id)
    claims.complete_image(ids[url("done")], "out/done.jpg", base_url)
    db.session.execute(update(Image).where(Image.id == ids[url("stuck")]).values(requeues=4))
    db.session.execute(update(Image).where(Image.id == ids[url("fine")]).values(requeues=2))
    db.session.execute(update(Image).where(Image.id == ids[url("done")]).values(requeues=9))
    db.session.commit()

    assert recovery.fail_exhausted_images(3, base_url) == 1

    stuck = image(ids[url("stuck")])
    assert (stuck.status, stuck.error_code) == (ImageStatus.FAILED, "stuck")
    assert stuck.finished_at is not None
    assert image(ids[url("fine")]).status == ImageStatus.PENDING
    assert image(ids[url("done")]).status == ImageStatus.COMPLETED
    request = request_row(request_id)
    assert (request.status, request.completed_images, request.failed_images) == (RequestStatus.PENDING, 1, 1)
    assert recovery.fail_exhausted_images(3, base_url) == 0

    # Exactly at the limit counts as exhausted too; the request then finishes.
    db.session.execute(update(Image).where(Image.id == ids[url("fine")]).values(requeues=3))
    db.session.commit()
    assert recovery.fail_exhausted_images(3, base_url) == 1
    assert request_row(request_id).status == RequestStatus.COMPLETED_WITH_ERRORS
    assert event_count(request_id) == 1
    assert len(sent) == 1


def test_missing_image_is_neither_claimed_nor_finished(base_url, sent):
    missing = 10**9
    assert claims.claim_image(missing, "t1", MAX_ATTEMPTS, base_url) is None
    assert claims.complete_image(missing, "out/x.jpg", base_url) is False
    assert claims.fail_image(missing, "fetch_failed", "no", base_url) is False


def test_transient_retries_do_not_spend_the_poison_budget(base_url, sent):
    request_id = new_request((url("flaky"),))
    [image_id] = image_ids(request_id).values()
    # Many more retried starts than MAX_ATTEMPTS: each ended cleanly, so none counts.
    for n in range(MAX_ATTEMPTS * 3):
        work = claims.claim_image(image_id, f"t{n}", MAX_ATTEMPTS, base_url)
        assert work is not None, f"start {n + 1} was refused"
        assert work.retries == n
        assert claims.schedule_retry(image_id, f"t{n}", 0, "http_503", "busy")
    retried = image(image_id)
    assert (retried.status, retried.claimed_by, retried.queued_at) == (ImageStatus.PENDING, None, None)
    assert (retried.attempts, retried.retries, retried.error_code) == (MAX_ATTEMPTS * 3, MAX_ATTEMPTS * 3, "http_503")
    assert claims.fail_image(image_id, "http_503", "still busy", base_url)
    assert image(image_id).error_code == "http_503"


def test_starts_that_died_still_end_a_poison_image_between_retries(base_url, sent):
    request_id = new_request((url("poison"),))
    [image_id] = image_ids(request_id).values()
    assert claims.claim_image(image_id, "t0", MAX_ATTEMPTS, base_url) is not None
    assert claims.schedule_retry(image_id, "t0", 0, "http_503", "busy")
    for _ in range(MAX_ATTEMPTS):  # the same task's message redelivered: each start died
        assert claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url) is not None
    assert claims.claim_image(image_id, "t1", MAX_ATTEMPTS, base_url) is None
    failed = image(image_id)
    assert (failed.status, failed.error_code) == (ImageStatus.FAILED, "too_many_attempts")
    assert "3 attempts" in failed.error_message


def test_a_retry_waits_for_its_back_off(base_url, sent):
    from queueing import dispatch

    request_id = new_request((url("later"),))
    [image_id] = image_ids(request_id).values()
    claims.claim_image(image_id, "t0", MAX_ATTEMPTS, base_url)
    claims.schedule_retry(image_id, "t0", 3600, "http_503", "busy")
    assert dispatch.fill_queue(10) == 0
    db.session.execute(update(Image).where(Image.id == image_id).values(not_before=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert dispatch.fill_queue(10) == 1
    assert sent == [("image_tasks.process_image", (image_id,))]


def test_a_claim_is_stamped_by_the_database_clock_not_the_workers(base_url, sent, monkeypatch):
    """A worker whose clock runs ten minutes slow must not write a claim that already looks stale."""
    request_id = new_request((url("skewed"),))
    [image_id] = image_ids(request_id).values()
    slow = utcnow() - timedelta(minutes=10)
    monkeypatch.setattr(claims, "utcnow", lambda: slow)
    assert claims.claim_image(image_id, "slow-clock", MAX_ATTEMPTS, base_url) is not None
    monkeypatch.undo()
    assert recovery.release_stale_images(300) == []
    assert image(image_id).claimed_by == "slow-clock"
