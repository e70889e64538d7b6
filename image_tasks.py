"""Celery tasks: process one image, import a big upload, deliver one webhook, and beat's tick, sweep and retention.

Each task's work lives with its concern (outputs, lifecycle, delivery); here it gets its name and options.
Every task takes ids, re-reads its rows, and is safe to run twice.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app

from config import Settings
from database import DATABASE_ERRORS
from delivery import outbox, signing
from fetching import fetcher, webhook_post
from fetching.limits import fetch_limits
from imaging import pipeline
from lifecycle import claims, creation, housekeeping
from models import ImageStatus, db, utcnow
from observability import log_context, metrics
from outputs import encode_claims, making
from queueing import backoff, dispatch, task_names
from storage import StorageError

log = logging.getLogger(__name__)


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


@shared_task(
    name=task_names.PROCESS_IMAGE_TASK,
    bind=True,
    autoretry_for=DATABASE_ERRORS,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=20,
)
def process_image(self, image_id: int) -> str:
    """Download, compress and store one image, record the outcome, and refill the queue."""
    settings = _settings()
    outcome = _process(self.request.id, image_id, settings)
    log.info("image %s: %s", image_id, outcome)
    dispatch.fill_queue(settings.image_queue_depth, lazy=True)
    return outcome


def _process(task_id: str, image_id: int, settings: Settings) -> str:
    base_url = settings.public_base_url
    work = claims.claim_image(image_id, task_id, settings.image_max_attempts, base_url)
    if work is None:
        return "skipped"
    log_context.bind(image_id=image_id, request_id=work.request_id)
    try:
        encoder = encode_claims.Encoder(image_id, work.claim_token)
        made = making.make_output(work.owner, work.source_url, work.options, settings, encoder)
    except fetcher.FetchError as error:
        if error.transient and work.retries < settings.fetch_max_retries:
            delay = retry_delay(work.retries, error.retry_after)
            return _retry(work, task_id, delay, error.code, error.message)
        return _fail(work, error.code, error.message, base_url)
    except StorageError as error:
        if work.retries < settings.storage_max_retries:
            return _retry(work, task_id, retry_delay(work.retries, None), "storage_error", str(error))
        message = f"The output could not be stored after {work.retries + 1} tries: {error}"
        return _fail(work, "storage_error", message, base_url)
    except (encode_claims.PeerStillEncoding, encode_claims.EncodeSuperseded) as error:
        # Not the image's fault, and bounded: a claim whose image claim is gone, or older than the hard time
        # limit, is taken over, and the worker that took it over is encoding this very output.
        return _retry(work, task_id, retry_delay(0, None), "output_busy", str(error))
    except pipeline.ImageProcessingError as error:
        return _fail(work, error.code, error.message, base_url)
    except SoftTimeLimitExceeded:
        limit = f"{settings.task_soft_time_limit_s} s (TASK_SOFT_TIME_LIMIT_S)"
        return _fail(work, "processing_timeout", f"Processing took longer than {limit}.", base_url)
    except DATABASE_ERRORS:
        raise  # retried by the task itself, with back-off
    except Exception:
        return _unexpected(task_id, work, settings)
    figures = claims.ImageFigures(**dataclasses.asdict(made.figures), reused=made.reused)
    if claims.complete_image(
        image_id, made.key, base_url, figures, output_id=made.output_id, claim_token=work.claim_token
    ):
        metrics.IMAGES_PROCESSED.labels(_outcome(figures)).inc()
        return "reused" if made.reused else "completed"
    # Cancelled, or taken over by another worker, while in flight: an output made for this image alone
    # is dropped, not left behind unreferenced.
    if not made.reused:
        try:
            unused = encode_claims.drop_if_unused(made.output_id)
            if unused is not None:
                current_app.extensions["storage"].delete(unused)
        except StorageError as error:
            log.warning("image %s: the output of a discarded result was not removed: %s", image_id, error)
    return _refused(image_id)


def _unexpected(task_id: str, work: claims.ImageWork, settings: Settings) -> str:
    """An exception nobody expected (a bug, ours or a library's): logged with its traceback, retried with
    back-off like a transient failure until the image has had IMAGE_MAX_ATTEMPTS starts, then ``internal_error``.

    Called from an ``except`` block. What it was doing is rolled back first: none of it may be committed.
    """
    attempt, max_attempts = work.attempt, settings.image_max_attempts
    log.exception("image %s: unexpected error on attempt %s of %s", work.image_id, attempt, max_attempts)
    db.session.rollback()
    message = "The service hit an unexpected error while processing the image; it has been logged."
    if work.attempt < settings.image_max_attempts:
        return _retry(work, task_id, retry_delay(work.retries, None), "internal_error", message)
    return _fail(work, "internal_error", message, settings.public_base_url)


def _outcome(figures: claims.ImageFigures) -> str:
    if figures.reused:
        return "reused"
    return "kept_source" if figures.kept_source else "encoded"


def _retry(work: claims.ImageWork, task_id: str, delay_s: float, code: str, message: str) -> str:
    if claims.schedule_retry(work.image_id, task_id, delay_s, code, message, claim_token=work.claim_token):
        metrics.count_image_retry(code)
        return f"retry:{code}"
    return _refused(work.image_id)


def _fail(work: claims.ImageWork, code: str, message: str, base_url: str) -> str:
    if claims.fail_image(work.image_id, code, message, base_url, claim_token=work.claim_token):
        metrics.count_image_failed(code)
        return code
    return _refused(work.image_id)


def _refused(image_id: int) -> str:
    """Why a write for the image was refused: it was cancelled, or its claim was superseded."""
    return "cancelled" if claims.image_status(image_id) == ImageStatus.CANCELLED else "superseded"


def retry_delay(retries: int, retry_after: float | None) -> float:
    """Exponential back-off with full jitter; a source's own ``Retry-After`` wins when longer."""
    backoff_s = backoff.exponential(retries, base_s=2.0, cap_s=30.0, jitter=True) + 0.5
    return max(backoff_s, min(retry_after or 0.0, 60.0))


@shared_task(
    name=task_names.IMPORT_TASK,
    autoretry_for=DATABASE_ERRORS,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=20,
    soft_time_limit=None,
    time_limit=None,
)
def import_request(request_id: str) -> bool:
    """Write the products and images of a big upload, then refill the image queue."""
    imported = creation.import_rows(uuid.UUID(request_id))
    if imported:
        dispatch.fill_queue(_settings().image_queue_depth)
    return imported


@shared_task(name=task_names.DELIVER_TASK)
def deliver_webhook(event_id: str) -> str | None:
    """Make the event's next attempt if it is due; returns the event's status afterwards."""
    settings = _settings()
    lease = timedelta(seconds=settings.webhook_timeout_s + 60)
    work = outbox.claim_attempt(event_id, lease)
    if work is None:
        return None
    body = work.payload.encode()
    secret = signing.tenant_secret(current_app.extensions["webhook_secret"], outbox.owner_of_event(event_id))
    headers = signing.signed_headers(secret, work.event_id, body)
    started_at, started = utcnow(), time.monotonic()
    status_code: int | None = None
    error: str | None = None
    give_up = False
    try:
        result = webhook_post.post_json(
            work.url, body, headers, fetch_limits(settings), timeout_s=settings.webhook_timeout_s
        )
        status_code = result.status_code
        give_up = status_code == 410
    except fetcher.FetchError as failure:
        error = f"{failure.code}: {failure.message}"
        give_up = failure.code in {"blocked_address", "invalid_url"}
    duration_ms = int((time.monotonic() - started) * 1000)
    return outbox.record_attempt(
        work, status_code=status_code, error=error, duration_ms=duration_ms, at=started_at, give_up=give_up
    )


@shared_task(name=task_names.DISPATCH_TASK)
def dispatch_tick() -> dict[str, int]:
    """Refill the image queue and send the webhook attempts that fell due; beat runs it every second."""
    return housekeeping.dispatch_due_work(_settings())


@shared_task(name=task_names.RETENTION_TASK)
def apply_retention() -> dict[str, int] | None:
    """Delete the requests past ``RETENTION_DAYS`` and the outputs no image points at any more; one run at a time."""
    return housekeeping.apply_retention(_settings())


@shared_task(name=task_names.SWEEP_TASK)
def sweep() -> dict[str, int] | None:
    """Recover what was lost: abandoned and lost images, unfinalised requests. One sweep at a time."""
    return housekeeping.sweep(_settings())
