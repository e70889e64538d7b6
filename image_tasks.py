"""Celery tasks: fan a request out to its images, process each image, deliver webhooks, sweep.

Every task takes ids, re-reads its rows, and is safe to run twice.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from datetime import timedelta

import sqlalchemy.exc
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

import fetcher
import pipeline
import request_state
import webhook_outbox
import webhooks
from config import Settings
from models import DeliveryStatus, utcnow

log = logging.getLogger(__name__)

# The first dispatch of a new upload is the API's job; the sweeper steps in only after this.
UNDISPATCHED_GRACE = timedelta(seconds=10)
FAN_OUT_CHUNK = 2000
# Retries due this soon are also sent with a countdown; anything later waits for the sweeper.
SHORT_RETRY_S = 60.0


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def fetch_limits(settings: Settings) -> fetcher.FetchLimits:
    return fetcher.FetchLimits(
        connect_timeout_s=settings.fetch_connect_timeout_s,
        read_timeout_s=settings.fetch_read_timeout_s,
        total_timeout_s=settings.fetch_total_timeout_s,
        max_bytes=settings.fetch_max_bytes,
        max_redirects=settings.fetch_max_redirects,
        allowed_networks=settings.fetch_allowed_networks,
    )


def output_key(request_id: uuid.UUID, image_id: int) -> str:
    """Deterministic, so a rerun overwrites its own output instead of adding another."""
    return f"{request_id}/{image_id}.jpg"


def send_safely(task, *args, **options) -> bool:
    """Hand a task to the broker; False (logged) if the broker is unreachable."""
    try:
        task.apply_async(args=args, **options)
        return True
    except Exception:  # kombu raises many kinds; the sweeper re-sends whatever this drops
        log.warning("broker unreachable: %s%r not sent now, the sweeper will send it", task.name, args, exc_info=True)
        return False


@event.listens_for(Session, "after_commit")
def _send_committed_webhooks(session: Session) -> None:
    for event_id in webhook_outbox.take_committed_events(session):
        send_safely(deliver_webhook, event_id)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_webhooks(session: Session) -> None:
    webhook_outbox.take_committed_events(session)


@shared_task(name="image_tasks.process_request")
def process_request(request_id: str, after_image_id: int = 0) -> int:
    """Send one ``process_image`` per image of the request that is not final; returns how many.

    A chunk at a time, each chunk sending the next, so a request of 370,000 images never makes
    one task outlive its time limit.
    """
    image_ids = request_state.active_image_ids(uuid.UUID(request_id), after_image_id, FAN_OUT_CHUNK)
    for image_id in image_ids:
        process_image.delay(image_id)
    if len(image_ids) == FAN_OUT_CHUNK:
        process_request.delay(request_id, image_ids[-1])
    return len(image_ids)


# A database outage costs a retry with back-off, not the message: the claim has not happened yet,
# or is held by this task id, which a retry keeps.
DATABASE_ERRORS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


@shared_task(
    name="image_tasks.process_image",
    bind=True,
    autoretry_for=DATABASE_ERRORS,
    retry_backoff=1,
    retry_backoff_max=30,
    max_retries=20,
)
def process_image(self, image_id: int) -> str:
    """Download, compress and store one image, and record the outcome."""
    settings = _settings()
    base_url = settings.public_base_url
    work = request_state.claim_image(image_id, self.request.id, settings.image_max_attempts, base_url)
    if work is None:
        return "skipped"
    try:
        data = fetcher.fetch_image(work.source_url, fetch_limits(settings), current_app.extensions["host_slots"])
        compressed = pipeline.compress(
            data, quality=work.quality, max_dimension=work.max_dimension, max_pixels=settings.max_image_pixels
        )
        del data
        key = output_key(work.request_id, work.image_id)
        current_app.extensions["storage"].put(key, compressed.data)
    except fetcher.FetchError as error:
        if error.transient and self.request.retries < settings.fetch_max_retries:
            raise self.retry(countdown=retry_delay(self.request.retries, error.retry_after), max_retries=None) from None
        request_state.fail_image(image_id, error.code, error.message, base_url)
        return error.code
    except pipeline.ImageProcessingError as error:
        request_state.fail_image(image_id, error.code, error.message, base_url)
        return error.code
    except SoftTimeLimitExceeded:
        request_state.fail_image(
            image_id, "processing_timeout", "Processing took longer than the time limit.", base_url
        )
        return "processing_timeout"
    request_state.complete_image(image_id, key, base_url)
    return "completed"


def retry_delay(retries: int, retry_after: float | None) -> float:
    """Exponential back-off with full jitter; a source's own ``Retry-After`` wins when longer."""
    backoff = random.uniform(0, min(30.0, 2.0 * 2**retries)) + 0.5
    return max(backoff, min(retry_after or 0.0, 60.0))


@shared_task(name="image_tasks.deliver_webhook")
def deliver_webhook(event_id: str) -> str | None:
    """Make the event's next attempt if it is due; returns the event's status afterwards."""
    settings = _settings()
    lease = timedelta(seconds=settings.webhook_timeout_s + 60)
    work = webhook_outbox.claim_attempt(event_id, lease)
    if work is None:
        return None
    body = work.payload.encode()
    secret = webhooks.tenant_secret(current_app.extensions["webhook_secret"], webhook_outbox.owner_of_event(event_id))
    headers = webhooks.signed_headers(secret, work.event_id, body)
    started_at, started = utcnow(), time.monotonic()
    status_code: int | None = None
    error: str | None = None
    give_up = False
    try:
        result = fetcher.post_json(
            work.url, body, headers, fetch_limits(settings), timeout_s=settings.webhook_timeout_s
        )
        status_code = result.status_code
        give_up = status_code == 410
    except fetcher.FetchError as failure:
        error = f"{failure.code}: {failure.message}"
        give_up = failure.code in {"blocked_address", "invalid_url"}
    duration_ms = int((time.monotonic() - started) * 1000)
    status = webhook_outbox.record_attempt(
        work, status_code=status_code, error=error, duration_ms=duration_ms, at=started_at, give_up=give_up
    )
    if status == DeliveryStatus.PENDING:
        wait = webhook_outbox.seconds_until_next(event_id)
        if wait is not None and wait <= SHORT_RETRY_S:
            send_safely(deliver_webhook, event_id, countdown=wait)
    return status


@shared_task(name="image_tasks.sweep")
def sweep() -> dict[str, int]:
    """Re-send what was lost: undispatched requests, stuck images, due webhooks; finalise the finished."""
    settings = _settings()
    base_url = settings.public_base_url
    report = {"dispatched": 0, "requeued": 0, "failed": 0, "finalized": 0, "webhooks": 0}
    for request_id in request_state.undispatched_request_ids(UNDISPATCHED_GRACE):
        if send_safely(process_request, str(request_id)):
            request_state.mark_dispatched(request_id)
            report["dispatched"] += 1
    report["failed"] = request_state.fail_exhausted_images(settings.image_max_attempts, base_url)
    # Pending images behind a busy queue are waiting, not lost: re-send them only when it is empty.
    include_pending = broker_queue_size() == 0
    for image_id in request_state.claim_stale_images(
        timedelta(seconds=settings.stale_image_after_s), include_pending=include_pending
    ):
        report["requeued"] += send_safely(process_image, image_id)
    report["finalized"] = request_state.finalize_finished_requests(base_url)
    for event_id in webhook_outbox.due_event_ids():
        report["webhooks"] += send_safely(deliver_webhook, event_id)
    if any(report.values()) or not include_pending:
        log.info("sweep: %s (pending images re-sent if stale: %s)", report, include_pending)
    return report


def broker_queue_size() -> int | None:
    """How many messages wait in the default queue; None if the broker cannot tell."""
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as connection:
            # Not passive: Redis keeps no empty lists, so a passive declare of an empty queue fails.
            declared = connection.default_channel.queue_declare(
                queue=celery.conf.task_default_queue, durable=True, auto_delete=False
            )
            return declared.message_count
    except Exception:
        log.warning("could not read the queue length", exc_info=True)
        return None
