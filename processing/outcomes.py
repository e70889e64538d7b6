"""How one image's attempt ends: its output recorded (``batch``), a retry scheduled, or a failure, with its code.

Each function returns the outcome's name, as the task logs it: ``retry:<code>``, the failure's code, or, when
the write was refused, ``cancelled`` or ``superseded``.
"""

from __future__ import annotations

import logging

from config import Settings
from lifecycle import claims
from models import ImageStatus, db
from observability import metrics
from queueing import backoff

log = logging.getLogger(__name__)


def retry(work: claims.ImageWork, task_id: str, delay_s: float, code: str, message: str) -> str:
    if claims.schedule_retry(work.image_id, task_id, delay_s, code, message, claim_token=work.claim_token):
        metrics.count_image_retry(code)
        return f"retry:{code}"
    return refused(work.image_id)


def output_busy(work: claims.ImageWork, task_id: str, message: str) -> str:
    """Retry an image whose output another worker is encoding, or took over: not the image's fault, and bounded
    (a claim whose image claim is gone, or older than the hard time limit, is taken over)."""
    return retry(work, task_id, retry_delay(0, None), "output_busy", message)


def fail(work: claims.ImageWork, code: str, message: str, base_url: str) -> str:
    if claims.fail_image(work.image_id, code, message, base_url, claim_token=work.claim_token):
        metrics.count_image_failed(code)
        return code
    return refused(work.image_id)


def unexpected(task_id: str, work: claims.ImageWork, settings: Settings) -> str:
    """An exception nobody expected (a bug, ours or a library's): logged with its traceback, retried with
    back-off like a transient failure until the image has had IMAGE_MAX_ATTEMPTS starts, then ``internal_error``.

    Called from an ``except`` block. What it was doing is rolled back first: none of it may be committed.
    """
    attempt, max_attempts = work.attempt, settings.image_max_attempts
    log.exception("image %s: unexpected error on attempt %s of %s", work.image_id, attempt, max_attempts)
    db.session.rollback()
    message = "The service hit an unexpected error while processing the image; it has been logged."
    if work.attempt < settings.image_max_attempts:
        return retry(work, task_id, retry_delay(work.retries, None), "internal_error", message)
    return fail(work, "internal_error", message, settings.public_base_url)


def refused(image_id: int) -> str:
    """Why a write for the image was refused: it was cancelled, or its claim was superseded."""
    return "cancelled" if claims.image_status(image_id) == ImageStatus.CANCELLED else "superseded"


def completed(figures: claims.ImageFigures) -> str:
    return "reused" if figures.reused else "completed"


def metric_label(figures: claims.ImageFigures) -> str:
    """How a completed image's output was made, as ``images_processed_total`` counts it."""
    if figures.reused:
        return "reused"
    return "kept_source" if figures.kept_source else "encoded"


def retry_delay(retries: int, retry_after: float | None) -> float:
    """Exponential back-off with full jitter; a source's own ``Retry-After`` wins when longer."""
    backoff_s = backoff.exponential(retries, base_s=2.0, cap_s=30.0, jitter=True) + 0.5
    return max(backoff_s, min(retry_after or 0.0, 60.0))
