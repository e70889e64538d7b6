"""Images travel in batches: grouped into messages, claimed together, fetched on threads, recorded together;
a batch whose run died goes back image by image, and a lost batch is told by its messages, not its images.

Called directly on this run's database; every message is recorded instead of sent, and every fetch answers
bytes of its own (a different colour per URL), so no two images share an output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
import uuid
from datetime import timedelta

import pytest
from flask import current_app
from PIL import Image as PilImage
from sqlalchemy import func, select, update

import image_tasks
from fetching import fetcher
from intake.csv_input import ProductRow
from lifecycle import claims, creation, recovery
from models import Image, ImageOutput, ImageStatus, Request, RequestStatus, db, utcnow
from outputs import encode_claims, variants
from processing import batch
from queueing import dispatch

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")


def new_request(images: int) -> uuid.UUID:
    tag = uuid.uuid4().hex[:8]
    rows = [ProductRow(n + 1, f"P{n}", (f"http://127.0.0.2:9/{tag}/{n}.jpg",), n + 2) for n in range(images)]
    request_id = creation.create_request(rows, creation.UploadOptions()).id
    db.session.commit()
    return request_id


def image_ids(request_id: uuid.UUID) -> list[int]:
    ids = db.session.scalars(select(Image.id).where(Image.request_id == request_id).order_by(Image.id)).all()
    db.session.commit()
    return list(ids)


def rows(ids: list[int]) -> list[Image]:
    db.session.expire_all()
    found = db.session.scalars(select(Image).where(Image.id.in_(ids)).order_by(Image.id)).all()
    db.session.commit()
    return list(found)


def batches(sent) -> list[tuple[int, ...]]:
    return [args for name, args in sent if name == "image_tasks.process_image"]


@pytest.fixture
def distinct_sources(monkeypatch) -> list[str]:
    """Every fetch answers a JPEG of its own, from whichever thread asks; returns the threads that fetched."""
    threads: list[str] = []

    def fetch(url, *_args, **_kwargs):
        threads.append(threading.current_thread().name)
        shade = hashlib.sha256(url.encode()).digest()
        out = io.BytesIO()
        PilImage.new("RGB", (64, 48), tuple(shade[:3])).save(out, "JPEG", quality=90)
        return fetcher.FetchedImage(data=out.getvalue(), validators=fetcher.Validators(None, None), not_modified=False)

    monkeypatch.setattr(fetcher, "fetch_image_revalidated", fetch)
    return threads


def test_queued_images_go_in_messages_of_at_most_the_batch_size_and_at_least_two(base_url, sent):
    new_request(40)
    assert dispatch.fill_queue(64, batch_size=8) == 16  # nothing in progress: two messages' worth
    sizes = [len(images) for images in batches(sent)]
    assert sizes == [8, 8]
    queued = rows([image_id for images in batches(sent) for image_id in images])
    assert all(image.queued_in for image in queued)
    assert len({image.queued_in for image in queued}) == 2

    sent.clear()
    request_id = new_request(3)
    # A small window still gives two idle workers a message each.
    assert dispatch.publish(image_ids(request_id), batch_size=8) == 3
    assert sorted(len(images) for images in batches(sent)) == [1, 2]


def test_an_image_whose_start_died_goes_alone(base_url, sent):
    request_id = new_request(6)
    ids = image_ids(request_id)
    db.session.execute(update(Image).where(Image.id == ids[2]).values(attempts=1))
    db.session.commit()
    assert dispatch.fill_queue(64, batch_size=8) == 6
    assert (ids[2],) in batches(sent)
    assert sorted(len(images) for images in batches(sent)) == [1, 2, 3]


def test_a_lost_message_releases_all_its_images_and_only_when_messages_are_missing(base_url, sent, monkeypatch):
    monkeypatch.setattr(dispatch, "MIN_QUEUED", 16)
    new_request(16)
    assert dispatch.fill_queue(64, batch_size=4) == 16
    first, second, *_ = batches(sent)
    queued = Image.queued_at.is_not(None)
    db.session.execute(update(Image).where(queued).values(queued_at=utcnow() - timedelta(seconds=60)))
    db.session.execute(update(Image).where(Image.id.in_(first)).values(queued_at=utcnow() - timedelta(seconds=120)))
    db.session.commit()
    # Four messages of four: a broker holding four holds them all, though it holds fewer than 16.
    assert dispatch.release_lost_images(stale_after_s=3600, grace_s=5, broker_holds=4) == []
    lost = dispatch.release_lost_images(stale_after_s=3600, grace_s=5, broker_holds=3)
    assert sorted(lost) == sorted(first)
    assert all(image.queued_at is None and image.requeues == 1 for image in rows(list(first)))
    assert all(image.queued_at is not None for image in rows(list(second)))


def test_a_batch_is_fetched_on_threads_encoded_and_recorded_with_each_requests_counters(base_url, distinct_sources):
    settings = current_app.config["SETTINGS"]
    ids = image_ids(new_request(5)) + image_ids(other := new_request(3))
    found = batch.run("batch-task", ids, settings)

    assert sorted(found.values()) == ["completed"] * 8
    assert all(name.startswith("fetch") for name in distinct_sources)
    assert all(image.status == ImageStatus.COMPLETED and image.output_id for image in rows(ids))
    request = db.session.get(Request, other)
    assert (request.status, request.completed_images, request.bytes_out > 0) == (RequestStatus.COMPLETED, 3, True)
    db.session.commit()


def test_a_batch_skips_an_image_another_task_holds(base_url, distinct_sources):
    settings = current_app.config["SETTINGS"]
    ids = image_ids(new_request(4))
    assert claims.claim_image(ids[0], "another-task", 5, base_url) is not None

    found = batch.run("batch-task", ids, settings)
    assert found == {ids[0]: "skipped", ids[1]: "completed", ids[2]: "completed", ids[3]: "completed"}
    first = rows([ids[0]])[0]
    assert (first.status, first.claimed_by) == (ImageStatus.PROCESSING, "another-task")


def test_a_batch_whose_earlier_run_died_goes_back_image_by_image(base_url, sent):
    settings = current_app.config["SETTINGS"]
    new_request(4)
    assert dispatch.fill_queue(64, batch_size=4) == 4
    first_message = max(batches(sent), key=len)
    assert len(first_message) == 2
    works = claims.claim_images(list(first_message), "dead-task", 5, base_url)
    assert len(works) == len(first_message)
    tokens = {work.image_id: work.claim_token for work in works}

    found = image_tasks.batch.run("dead-task", list(first_message), settings)
    assert set(found.values()) == {"released"}
    released = rows(list(first_message))
    assert all(image.status == ImageStatus.PENDING and image.requeues == 1 for image in released)
    assert all(image.claim_token > tokens[image.id] for image in released)

    sent.clear()
    dispatch.fill_queue(64, batch_size=4)
    assert sorted(batches(sent)) == sorted((image_id,) for image_id in first_message)


def test_images_a_batch_never_got_to_go_back_without_their_start_counted(base_url):
    ids = image_ids(new_request(3))
    works = claims.claim_images(ids, "slow-task", 5, base_url)
    assert [image.attempts for image in rows(ids)] == [1, 1, 1]
    claims.give_back_unstarted(works[1:], "slow-task")
    after = rows(ids)
    assert [(image.status, image.attempts) for image in after] == [
        (ImageStatus.PROCESSING, 1),
        (ImageStatus.PENDING, 0),
        (ImageStatus.PENDING, 0),
    ]
    assert all(image.queued_at is None and image.claimed_by is None for image in after[1:])


def test_a_late_give_back_of_images_taken_over_leaves_their_request_as_it_is(base_url):
    ids = image_ids(request_id := new_request(2))
    late = claims.claim_images(ids, "cut-off-task", 5, base_url)
    # The sweeper takes them over (their lease ran out), and another task claims them.
    assert sorted(recovery.release_stale_images(-1)) == ids
    assert len(claims.claim_images(ids, "other-task", 5, base_url)) == 2
    db.session.execute(update(Request).where(Request.id == request_id).values(updated_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    version = db.session.get(Request, request_id).updated_at
    db.session.commit()

    claims.give_back_unstarted(late, "cut-off-task")
    assert [(image.status, image.claimed_by) for image in rows(ids)] == [(ImageStatus.PROCESSING, "other-task")] * 2
    assert db.session.get(Request, request_id).updated_at == version


def test_a_flush_moves_each_request_once_and_refuses_a_superseded_claim(base_url):
    ids = image_ids(request_id := new_request(3))
    works = claims.claim_images(ids, "task", 5, base_url)
    figures = claims.ImageFigures(bytes_in=100, bytes_out=40, width=4, height=3)
    # The last image's claim is taken over by a redelivery meanwhile.
    retaken = claims.claim_image(ids[2], "task", 5, base_url)
    assert retaken is not None and retaken.claim_token > works[2].claim_token
    completion = claims.complete_images(
        [claims.Finished(work, f"out/{work.image_id}.jpg", None, figures) for work in works], base_url
    )
    assert [item.work.image_id for item in completion.refused] == [ids[2]]
    assert completion.output_superseded == []
    request = db.session.get(Request, request_id)
    assert (request.completed_images, request.bytes_in, request.bytes_out) == (2, 200, 80)
    db.session.commit()
    count = db.session.scalar(select(func.count()).where(Image.request_id == request_id, Image.status == "COMPLETED"))
    assert count == 2


def test_a_workers_refill_sends_whole_batches(base_url, sent, monkeypatch):
    monkeypatch.setattr(dispatch, "MIN_QUEUED", 16)
    new_request(40)
    assert dispatch.fill_queue(64, lazy=True, batch_size=8) == 16
    assert [len(images) for images in batches(sent)] == [8, 8]
    sent.clear()
    request_id = new_request(8)
    ids = image_ids(request_id)
    assert dispatch.publish(ids, batch_size=8, share=False) == 8
    assert [len(images) for images in batches(sent)] == [8]


def test_a_batch_reads_what_its_sources_answered_last_with_its_claim(base_url, distinct_sources, monkeypatch):
    settings = current_app.config["SETTINGS"]
    ids = image_ids(new_request(3))
    urls = [image.source_url for image in rows(ids)]
    variants.remember_source("", urls[0], '"v1"', None, "ab" * 32)
    variants.remember_source("", urls[2], None, "Tue, 01 Dec 2026 10:00:00 GMT", "cd" * 32)

    works = claims.claim_images(ids, "claim-task", 5, base_url)
    assert [work.known for work in works] == [
        variants.KnownSource('"v1"', None, "ab" * 32),
        None,
        variants.KnownSource(None, "Tue, 01 Dec 2026 10:00:00 GMT", "cd" * 32),
    ]

    def one_query_an_image(*_args):
        raise AssertionError("a batch's image looked up its source apart from the claim")

    monkeypatch.setattr(variants, "known_source", one_query_an_image)
    others = image_ids(new_request(3))
    assert sorted(batch.run("batch-task", others, settings).values()) == ["completed"] * 3


def test_a_flush_marks_the_outputs_stored_and_retries_an_image_whose_output_was_taken_over(base_url):
    ids = image_ids(request_id := new_request(2))
    works = claims.claim_images(ids, "task", 5, base_url)
    storage = current_app.extensions["storage"]
    encoded = variants.EncodedFigures(100, 40, 4, 3, quality=50, score=None, kept_source=False)
    recorder = batch.Recorder(base_url, "task")
    outputs = []
    for work in works:
        variant = hashlib.sha256(f"{work.image_id}-{uuid.uuid4()}".encode()).hexdigest()
        output_id, key = encode_claims.start_output(
            variant, "jpeg", 3600, encode_claims.Encoder(work.image_id, work.claim_token)
        )
        storage.put(key, b"encoded")
        outputs.append((variant, output_id, key))
        figures = claims.ImageFigures(**dataclasses.asdict(encoded))
        recorder.add(claims.Finished(work, key, output_id, figures, to_mark=encoded), reused=False)
    # The second output's claim is taken over meanwhile, as a frozen worker's would be.
    db.session.execute(update(ImageOutput).where(ImageOutput.id == outputs[1][1]).values(superseded_at=utcnow()))
    db.session.commit()

    assert variants.find_stored(outputs[0][0]) is None  # not stored until the flush
    recorder.flush()

    assert variants.find_stored(outputs[0][0]).id == outputs[0][1]
    assert variants.find_stored(outputs[1][0]) is None
    first, second = rows(ids)
    assert (first.status, first.output_id) == (ImageStatus.COMPLETED, outputs[0][1])
    assert (second.status, second.error_code, second.retries) == (ImageStatus.PENDING, "output_busy", 1)
    assert recorder.changed_outcomes == {ids[1]: "retry:output_busy"}
    stored_keys = {listed.key for listed in storage.list_objects("", 100_000)}
    assert outputs[0][2] in stored_keys and outputs[1][2] not in stored_keys
    request = db.session.get(Request, request_id)
    assert (request.completed_images, request.status) == (1, RequestStatus.PROCESSING)
    db.session.commit()


def _message_of(image_id: int) -> str:
    return rows([image_id])[0].queued_in


def test_a_running_batch_takes_the_next_queued_messages_and_their_delivery_finds_them_taken(
    base_url, sent, distinct_sources
):
    settings = current_app.config["SETTINGS"]
    new_request(12)
    assert dispatch.fill_queue(64, batch_size=4) == 8
    first, second = sorted(batches(sent))

    found = batch.run(_message_of(first[0]), list(first), settings)

    # The batch refilled the queue as it went, and took the message it sent too.
    first_, second_, third = sorted(batches(sent))
    assert (first_, second_, len(third)) == (first, second, 4)

    assert found == dict.fromkeys([*first, *second, *third], "completed")
    assert {image.claimed_by for image in rows([*first, *second, *third])} == {_message_of(first[0])}
    for message in (second, third):
        assert batch.run(_message_of(message[0]), list(message), settings) == dict.fromkeys(message, "skipped")
    assert all(image.status == ImageStatus.COMPLETED and image.attempts == 1 for image in rows([*second, *third]))


def test_a_batch_whose_earlier_run_died_gives_back_what_it_took_from_the_queue_too(base_url, sent):
    settings = current_app.config["SETTINGS"]
    new_request(8)
    assert dispatch.fill_queue(64, batch_size=4) == 8
    first, second = sorted(batches(sent))
    task = _message_of(first[0])
    assert len(claims.claim_images(list(first), task, 5, base_url)) == 4
    assert [work.image_id for work in claims.take_next_queued(task, 5, base_url)] == list(second)

    found = batch.run(task, list(first), settings)

    assert found == dict.fromkeys([*first, *second], "released")
    assert all(image.status == ImageStatus.PENDING and image.requeues == 1 for image in rows([*first, *second]))


def test_a_batch_takes_no_image_with_a_start_that_died(base_url, sent):
    new_request(8)
    assert dispatch.fill_queue(64, batch_size=4) == 8
    first, second = sorted(batches(sent))
    assert len(claims.claim_images(list(first), "task", 5, base_url)) == 4
    db.session.execute(update(Image).where(Image.id.in_(second)).values(requeues=1))
    db.session.commit()

    assert claims.take_next_queued("task", 5, base_url) == []
    db.session.execute(update(Image).where(Image.id.in_(second[1:])).values(requeues=0))
    db.session.commit()
    assert [work.image_id for work in claims.take_next_queued("task", 5, base_url)] == list(second[1:])


def test_a_batch_never_waits_for_an_output_it_has_not_marked_yet(base_url, monkeypatch):
    """Images with the same bytes in one batch: the second finds the first's output, which the batch marks
    stored before it would wait for it."""
    settings = current_app.config["SETTINGS"]
    out = io.BytesIO()
    PilImage.new("RGB", (64, 48), (200, 10, 10)).save(out, "JPEG", quality=90)
    same = fetcher.FetchedImage(data=out.getvalue(), validators=fetcher.Validators(None, None), not_modified=False)
    monkeypatch.setattr(fetcher, "fetch_image_revalidated", lambda *_args, **_kwargs: same)
    monkeypatch.setattr(encode_claims, "WAIT_FOR_PEER_S", 1.0)
    ids = image_ids(new_request(4))

    found = batch.run("batch-task", ids, settings)

    assert sorted(found.values()) == ["completed", "reused", "reused", "reused"]
    assert len({image.output_id for image in rows(ids)}) == 1
