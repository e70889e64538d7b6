"""Celery tasks: process a batch of images, import a big upload, deliver a webhook, and beat's tick, sweep, retention.

Each task's work lives with its concern (outputs, lifecycle, delivery); here it gets its name and options.
Every task takes ids, re-reads its rows, and is safe to run twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from datetime import timedelta

from celery import shared_task
from flask import current_app

from config import Settings
from database import DATABASE_ERRORS
from delivery import outbox, signing
from fetching import fetcher, webhook_post
from fetching.limits import fetch_limits
from lifecycle import creation, housekeeping
from models import utcnow
from processing import batch
from queueing import dispatch, task_names

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
def process_image(self, *image_ids: int) -> str:
    """Download, compress and store a batch of images, record their outcomes, and refill the queue."""
    settings = _settings()
    found = batch.run(self.request.id, list(image_ids), settings)
    for image_id, outcome in found.items():
        # A message delivered again (at least once) finds its images done or held by another run: nothing
        # happened to them here, so that is no line of the image's story.
        log.log(logging.DEBUG if outcome == "skipped" else logging.INFO, "image %s: %s", image_id, outcome)
    dispatch.fill_queue(settings.image_queue_depth, lazy=True, batch_size=settings.image_batch_size)
    return summary(found)


def summary(found: dict[int, str]) -> str:
    """The batch's outcomes counted, as its result is logged: ``completed`` for one image that was."""
    counts = Counter("completed" if outcome in _COMPLETED else outcome for outcome in found.values())
    if len(counts) == 1 and sum(counts.values()) == 1:
        return next(iter(counts))
    return " ".join(f"{outcome}:{count}" for outcome, count in sorted(counts.items()))


_COMPLETED = {"completed", "reused"}


def _process(task_id: str, image_id: int, settings: Settings) -> str:
    """One image's batch, as a redelivered or lone message runs it; returns its outcome."""
    return batch.run(task_id, [image_id], settings)[image_id]


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
        settings = _settings()
        dispatch.fill_queue(settings.image_queue_depth, batch_size=settings.image_batch_size)
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
