"""Fenced claims: a worker whose claim was superseded (it froze, the sweeper released its image and another
worker claimed it) writes nothing when it wakes, and the current holder's writes still hold.

Each kind of late write is tried on this run's database (PostgreSQL when TEST_DATABASE_URL is set, else
SQLite): a result, a failure, a time-limit failure through the task's own code, a retry, and an output.
No task is ever sent, and the webhook of a finished request is recorded, not sent.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app
from PIL import Image as PilImage
from sqlalchemy import func, select, update

import image_tasks
from fetching import fetcher
from intake.csv_input import ProductRow
from lifecycle import claims, creation, recovery
from models import Image, ImageOutput, ImageStatus, Request, RequestStatus, WebhookEvent, db, utcnow
from outputs import encode_claims, making, variants

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

MAX_ATTEMPTS = 5
STALE_AFTER_S = 300
SOURCE_URL = "http://127.0.0.2:9/a.jpg"
WEBHOOK_URL = "http://127.0.0.2:9/hook"
FIGURES = claims.ImageFigures(bytes_in=1000, bytes_out=400, width=64, height=48, quality=50)
ENCODED = variants.EncodedFigures(1000, 400, 64, 48, 50, None, False)


@dataclass(frozen=True)
class Seen:
    """Everything a late write could change: the image, its request's counters and version, the events."""

    image: tuple
    request: tuple
    events: int


def new_image() -> tuple[uuid.UUID, int]:
    """A request of one image, with a webhook (so a final status would write an event); returns both ids."""
    created = creation.create_request(
        [ProductRow(1, "P1", (SOURCE_URL,), 2)], creation.UploadOptions(webhook_url=WEBHOOK_URL)
    )
    image_id = db.session.scalar(select(Image.id).where(Image.request_id == created.id))
    db.session.commit()
    return created.id, image_id


def seen(request_id: uuid.UUID, image_id: int) -> Seen:
    db.session.expire_all()
    image = db.session.get(Image, image_id)
    request = db.session.get(Request, request_id)
    events = db.session.scalar(
        select(func.count()).select_from(WebhookEvent).where(WebhookEvent.request_id == request_id)
    )
    found = Seen(
        image=(
            image.status,
            image.claimed_by,
            image.claim_token,
            image.attempts,
            image.retries,
            image.not_before,
            image.output_key,
            image.error_code,
            image.finished_at,
            image.updated_at,
        ),
        request=(
            request.status,
            request.completed_images,
            request.failed_images,
            request.bytes_out,
            request.completed_at,
            request.updated_at,
        ),
        events=events,
    )
    db.session.commit()
    return found


def supersede(image_id: int, base_url: str, new_task: str = "new-task") -> claims.ImageWork:
    """What happens while a worker is frozen: the sweeper releases its image and another task claims it."""
    db.session.execute(update(Image).where(Image.id == image_id).values(updated_at=utcnow() - timedelta(minutes=10)))
    db.session.commit()
    assert recovery.release_stale_images(STALE_AFTER_S) == [image_id]
    work = claims.claim_image(image_id, new_task, MAX_ATTEMPTS, base_url)
    assert work is not None
    return work


def discards(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "from a superseded claim was discarded" in r.getMessage()]


def test_a_late_result_is_discarded_and_the_current_holder_completes(base_url, caplog):
    request_id, image_id = new_image()
    frozen = claims.claim_image(image_id, "frozen-task", MAX_ATTEMPTS, base_url)
    current = supersede(image_id, base_url)
    assert current.claim_token > frozen.claim_token
    before = seen(request_id, image_id)
    assert before.image[:3] == (ImageStatus.PROCESSING, "new-task", current.claim_token)

    with caplog.at_level(logging.WARNING):
        late = claims.complete_image(image_id, "out/late.jpg", base_url, FIGURES, claim_token=frozen.claim_token)

    assert late is False
    assert seen(request_id, image_id) == before
    assert discards(caplog) == [f"image {image_id}: a late result from a superseded claim was discarded"]

    assert claims.complete_image(image_id, "out/current.jpg", base_url, FIGURES, claim_token=current.claim_token)
    after = seen(request_id, image_id)
    assert (after.image[0], after.image[6]) == (ImageStatus.COMPLETED, "out/current.jpg")
    assert after.request[:4] == (RequestStatus.COMPLETED, 1, 0, 400)
    assert after.events == 1


def test_a_late_failure_is_discarded_and_the_current_holder_fails(base_url, caplog):
    request_id, image_id = new_image()
    frozen = claims.claim_image(image_id, "frozen-task", MAX_ATTEMPTS, base_url)
    current = supersede(image_id, base_url)
    before = seen(request_id, image_id)

    with caplog.at_level(logging.WARNING):
        late = claims.fail_image(image_id, "internal_error", "late", base_url, claim_token=frozen.claim_token)

    assert late is False
    assert seen(request_id, image_id) == before
    assert len(discards(caplog)) == 1

    assert claims.fail_image(image_id, "http_404", "Not Found", base_url, claim_token=current.claim_token)
    after = seen(request_id, image_id)
    assert (after.image[0], after.image[7]) == (ImageStatus.FAILED, "http_404")
    assert after.request[:3] == (RequestStatus.FAILED, 0, 1)
    assert after.events == 1


def test_a_time_limit_that_fires_as_a_frozen_worker_wakes_changes_nothing(base_url, monkeypatch, caplog):
    """The case seen: the soft time limit fires at once when the worker wakes, after its image was taken over."""
    settings = current_app.config["SETTINGS"]
    request_id, image_id = new_image()
    taken: list[claims.ImageWork] = []
    before: list[Seen] = []

    def frozen_then_woken(*_args, **_kwargs):
        taken.append(supersede(image_id, base_url))
        before.append(seen(request_id, image_id))
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(making, "make_output", frozen_then_woken)
    with caplog.at_level(logging.WARNING):
        outcome = image_tasks._process("frozen-task", image_id, settings)

    assert outcome == "superseded"
    assert seen(request_id, image_id) == before[0]
    assert before[0].image[:2] == (ImageStatus.PROCESSING, "new-task")
    assert discards(caplog) == [
        f"image {image_id}: a late failure (processing_timeout) from a superseded claim was discarded"
    ]

    [current] = taken
    assert claims.complete_image(image_id, "out/current.jpg", base_url, FIGURES, claim_token=current.claim_token)
    after = seen(request_id, image_id)
    assert (after.image[0], after.image[7], after.request[:3]) == (
        ImageStatus.COMPLETED,
        None,
        (RequestStatus.COMPLETED, 1, 0),
    )


def test_a_time_limit_failure_names_the_limit_and_its_setting(base_url, monkeypatch):
    settings = current_app.config["SETTINGS"]
    _request_id, image_id = new_image()

    def outlasts_the_soft_limit(*_args, **_kwargs):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(making, "make_output", outlasts_the_soft_limit)
    assert image_tasks._process("slow-task", image_id, settings) == "processing_timeout"

    db.session.expire_all()
    image = db.session.get(Image, image_id)
    assert (image.status, image.error_code) == (ImageStatus.FAILED, "processing_timeout")
    limit = settings.task_soft_time_limit_s
    assert image.error_message == f"Processing took longer than {limit} s (TASK_SOFT_TIME_LIMIT_S)."


def test_a_late_retry_of_a_redelivered_task_is_discarded(base_url, caplog):
    """A redelivery carries the same task id: only the claim's token tells the two runs apart."""
    request_id, image_id = new_image()
    frozen = claims.claim_image(image_id, "task-1", MAX_ATTEMPTS, base_url)
    redelivered = claims.claim_image(image_id, "task-1", MAX_ATTEMPTS, base_url)
    assert redelivered is not None and redelivered.claim_token > frozen.claim_token
    before = seen(request_id, image_id)

    with caplog.at_level(logging.WARNING):
        late = claims.schedule_retry(image_id, "task-1", 0, "http_503", "busy", claim_token=frozen.claim_token)

    assert late is False
    assert seen(request_id, image_id) == before
    assert before.image[:5] == (ImageStatus.PROCESSING, "task-1", redelivered.claim_token, 2, 0)
    assert len(discards(caplog)) == 1

    assert claims.schedule_retry(image_id, "task-1", 0, "http_503", "busy", claim_token=redelivered.claim_token)
    after = seen(request_id, image_id)
    assert (after.image[0], after.image[1], after.image[4], after.image[7]) == (
        ImageStatus.PENDING,
        None,
        1,
        "http_503",
    )


def test_a_late_result_drops_the_output_made_for_it_unless_another_found_it(base_url, monkeypatch):
    settings = current_app.config["SETTINGS"]
    storage = current_app.extensions["storage"]
    secret = variants.variant_secret("whsec_test")
    _, image_id = new_image()
    made: list[making.MadeOutput] = []
    found_by_another: list[bool] = [False]

    def encode_while_superseded(*_args, **_kwargs):
        variant = variants.variant_key(secret, "", uuid.uuid4().hex * 2, variants.OutputOptions())
        output_id, key = encode_claims.start_output(variant, "jpeg", STALE_AFTER_S)
        storage.put(key, b"late output")
        stored = encode_claims.mark_stored(output_id, ENCODED)
        supersede(image_id, base_url, new_task=f"new-task-{len(made)}")
        if found_by_another[0]:
            assert variants.find_stored(variant) is not None
        made.append(making.MadeOutput(key, output_id, stored.figures, reused=False))
        return made[-1]

    monkeypatch.setattr(making, "make_output", encode_while_superseded)
    assert image_tasks._process("frozen-task", image_id, settings) == "superseded"
    [dropped] = made
    assert claims.image_status(image_id) == ImageStatus.PROCESSING  # still new-task-0's
    assert storage.local_path(dropped.key) is None  # the file is gone
    assert db.session.get(ImageOutput, dropped.output_id) is None
    db.session.commit()

    # An output another image found meanwhile is the variant's, and stays.
    _, image_id = new_image()
    found_by_another[0] = True
    assert image_tasks._process("frozen-task", image_id, settings) == "superseded"
    kept = made[-1]
    assert storage.local_path(kept.key).read_bytes() == b"late output"
    assert db.session.get(ImageOutput, kept.output_id) is not None
    db.session.commit()


def test_a_late_store_of_a_taken_over_encode_marks_nothing_and_the_new_claim_stores(base_url):
    variant = variants.variant_key(variants.variant_secret("whsec_test"), "", "ab" * 32, variants.OutputOptions())
    frozen_id, frozen_key = encode_claims.start_output(variant, "jpeg", STALE_AFTER_S)
    past = utcnow() - timedelta(seconds=STALE_AFTER_S + 1)
    db.session.execute(update(ImageOutput).values(created_at=past, last_used_at=past))
    db.session.commit()
    current_id, current_key = encode_claims.start_output(variant, "jpeg", STALE_AFTER_S)
    assert (current_id, current_key) != (frozen_id, frozen_key)

    assert encode_claims.mark_stored(frozen_id, ENCODED) is None
    encode_claims.abandon_output(frozen_id)
    assert variants.find_stored(variant) is None
    db.session.expire_all()
    current = db.session.get(ImageOutput, current_id)
    assert (current.stored_at, current.superseded_at, current.storage_key) == (None, None, current_key)
    db.session.commit()

    stored = encode_claims.mark_stored(current_id, ENCODED)
    assert stored is not None and (stored.id, stored.storage_key) == (current_id, current_key)
    assert variants.find_stored(variant).id == current_id


def jpeg() -> bytes:
    out = io.BytesIO()
    PilImage.new("RGB", (64, 48), (200, 40, 40)).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_a_worker_that_stores_after_its_encode_was_taken_over_deletes_only_its_own_object(base_url, monkeypatch):
    settings, storage = current_app.config["SETTINGS"], current_app.extensions["storage"]
    secret = current_app.extensions["variant_secret"]
    source = jpeg()
    options = variants.OutputOptions()
    variant = variants.variant_key(secret, "", hashlib.sha256(source).hexdigest(), options)
    fetched = fetcher.FetchedImage(data=source, validators=fetcher.Validators(None, None), not_modified=False)
    monkeypatch.setattr(fetcher, "fetch_image_revalidated", lambda *_args, **_kwargs: fetched)
    real_put = storage.put
    current: list[tuple[int, str]] = []

    def frozen_put(key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        # Frozen before this put: its claim looks dead, and another worker takes the encode over and stores it.
        db.session.execute(
            update(ImageOutput).values(created_at=utcnow() - timedelta(seconds=settings.task_time_limit_s + 61))
        )
        db.session.commit()
        current_id, current_key = encode_claims.start_output(variant, "jpeg", settings.task_time_limit_s + 60.0)
        real_put(current_key, b"current output", content_type)
        encode_claims.mark_stored(current_id, ENCODED)
        current.append((current_id, current_key))
        real_put(key, data, content_type)

    monkeypatch.setattr(storage, "put", frozen_put)
    with pytest.raises(encode_claims.EncodeSuperseded):
        making.make_output("", SOURCE_URL, options, settings)

    [(current_id, current_key)] = current
    frozen_keys = db.session.scalars(select(ImageOutput.storage_key).where(ImageOutput.id != current_id)).all()
    db.session.commit()
    assert len(frozen_keys) == 1 and frozen_keys[0] != current_key
    assert storage.local_path(frozen_keys[0]) is None  # the file is gone
    assert storage.local_path(current_key).read_bytes() == b"current output"
    assert variants.find_stored(variant).id == current_id


def test_an_encode_claim_holds_while_its_image_claim_does_and_goes_with_it(base_url):
    variant = variants.variant_key(variants.variant_secret("whsec_test"), "", "cd" * 32, variants.OutputOptions())
    _, image_id = new_image()
    _, other_image_id = new_image()
    frozen = claims.claim_image(image_id, "frozen-task", MAX_ATTEMPTS, base_url)
    other = claims.claim_image(other_image_id, "other-task", MAX_ATTEMPTS, base_url)
    frozen_id, _ = encode_claims.start_output(
        variant, "jpeg", STALE_AFTER_S, encode_claims.Encoder(image_id, frozen.claim_token)
    )
    # Another image with the same bytes waits while the claim's image claim holds, however young the claim.
    other_encoder = encode_claims.Encoder(other_image_id, other.claim_token)
    assert encode_claims.start_output(variant, "jpeg", STALE_AFTER_S, other_encoder) is None
    with pytest.raises(encode_claims.PeerStillEncoding):
        encode_claims.wait_for_peer(variant, wait_s=0.3)

    current = supersede(image_id, base_url)
    current_id, _ = encode_claims.start_output(
        variant, "jpeg", STALE_AFTER_S, encode_claims.Encoder(image_id, current.claim_token)
    )

    assert current_id != frozen_id
    assert encode_claims.mark_stored(frozen_id, ENCODED) is None
    assert encode_claims.mark_stored(current_id, ENCODED).id == current_id


def test_a_peer_whose_image_claim_is_gone_is_not_waited_for(base_url):
    variant = variants.variant_key(variants.variant_secret("whsec_test"), "", "ef" * 32, variants.OutputOptions())
    _, image_id = new_image()
    first = claims.claim_image(image_id, "first-task", MAX_ATTEMPTS, base_url)
    encode_claims.start_output(variant, "jpeg", STALE_AFTER_S, encode_claims.Encoder(image_id, first.claim_token))
    # The first attempt lost its database mid-store; the task's retry (same task id) claims the image again.
    retry = claims.claim_image(image_id, "first-task", MAX_ATTEMPTS, base_url)
    assert retry is not None and retry.claim_token > first.claim_token

    assert encode_claims.wait_for_peer(variant, wait_s=30) is None
    claimed = encode_claims.claim_or_find(
        variant, "jpeg", STALE_AFTER_S, wait_s=30, encoder=encode_claims.Encoder(image_id, retry.claim_token)
    )
    assert isinstance(claimed, tuple)
