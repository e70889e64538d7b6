"""An image's work: claimed by one task, given back for a retry, or finished as completed or failed."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, case, or_, select, update

from database import db_now
from lifecycle.finalize import finalize_request
from models import ACTIVE_IMAGE_STATUSES, Image, ImageStatus, Request, RequestStatus, db, utcnow
from outputs import variants

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFigures:
    """What a completed image measured: the download's size, the output's, its pixels, how it was encoded."""

    bytes_in: int
    bytes_out: int
    width: int
    height: int
    quality: int | None = None
    score: float | None = None
    kept_source: bool = False
    reused: bool = False


@dataclass(frozen=True)
class ImageWork:
    """What a worker needs to process one image, read in the claim's transaction."""

    image_id: int
    request_id: uuid.UUID
    source_url: str
    attempt: int
    #: Transient failures already retried: the budget of further retries is what is left.
    retries: int
    #: The caller ("" for the open service): outputs are shared only among its own images.
    owner: str
    options: variants.OutputOptions
    #: The claim's fencing token: every write this worker makes for the image holds only while it is current.
    claim_token: int


def image_status(image_id: int) -> str | None:
    """The image's status now (None if it is gone)."""
    status = db.session.scalar(select(Image.status).where(Image.id == image_id))
    db.session.rollback()
    return status


def claim_image(image_id: int, task_id: str, max_attempts: int, public_base_url: str) -> ImageWork | None:
    """Mark an image PROCESSING for this task and count the start before any work starts.

    A PENDING image can be claimed by any task; a PROCESSING one only by the task that claimed it
    (Celery re-delivers a message with its task id after a worker died), so a second copy sent by
    the sweeper never runs beside the first. Only starts that died count against ``max_attempts``:
    a start that ended in a scheduled retry did not. Returns None when there is nothing to do: the
    image is final, claimed by another task, gone, or out of attempts, in which case it is failed
    here, so a poison image cannot loop. The lease is stamped by the database's clock. Every claim
    raises the image's fencing token, even a redelivery's: an earlier run of the same task that is
    still alive (frozen, then woken) no longer holds the image.
    """
    claimable = or_(
        Image.status == ImageStatus.PENDING,
        and_(Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id),
    )
    claimed = db.session.execute(
        update(Image)
        .where(Image.id == image_id, claimable, Image.attempts - Image.retries < max_attempts)
        .values(
            status=ImageStatus.PROCESSING,
            claimed_by=task_id,
            claim_token=Image.claim_token + 1,
            attempts=Image.attempts + 1,
            not_before=None,
            updated_at=db_now(),
        )
        .returning(Image.request_id, Image.source_url, Image.attempts, Image.retries, Image.claim_token)
    ).first()
    if claimed is None:
        db.session.rollback()
        image = db.session.get(Image, image_id)
        exhausted = (
            image is not None
            and image.status in ACTIVE_IMAGE_STATUSES
            and image.attempts - image.retries >= max_attempts
        )
        if exhausted and (image.status == ImageStatus.PENDING or image.claimed_by == task_id):
            died = image.attempts - image.retries
            _finish_image(
                image_id,
                ImageStatus.FAILED,
                public_base_url,
                error=("too_many_attempts", f"Processing stopped after {died} attempts that did not finish."),
            )
        db.session.commit()
        return None
    request_id, source_url, attempt, retries, claim_token = claimed
    # The request's updated_at moves with every change of its images: it versions the status page.
    db.session.execute(
        update(Request)
        .where(Request.id == request_id)
        .values(
            status=case(
                (Request.status == RequestStatus.PENDING, RequestStatus.PROCESSING.value), else_=Request.status
            ),
            updated_at=utcnow(),
        )
    )
    chosen = db.session.execute(
        select(
            Request.owner_key_hash,
            Request.output_format,
            Request.quality,
            Request.target_score,
            Request.max_dimension,
            Request.never_bigger,
        ).where(Request.id == request_id)
    ).one()
    db.session.commit()
    options = variants.OutputOptions(
        output_format=chosen.output_format,
        quality=chosen.quality,
        target_score=chosen.target_score,
        max_dimension=chosen.max_dimension,
        never_bigger=chosen.never_bigger,
    )
    return ImageWork(
        image_id,
        request_id,
        source_url,
        attempt,
        retries,
        variants.owner_of(chosen.owner_key_hash),
        options,
        claim_token,
    )


def schedule_retry(
    image_id: int, task_id: str, delay_s: float, code: str, message: str, claim_token: int | None = None
) -> bool:
    """Give a transient failure back to the dispatcher, due after ``delay_s`` (database clock).

    The retry lives in the row, not in a broker countdown, so it survives the broker's loss and
    holds no worker while it waits. Returns False if the task no longer holds the image (with
    ``claim_token``, the claim that returned it: a later claim by a redelivery of the task supersedes it).
    """
    held = [Image.id == image_id, Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id]
    if claim_token is not None:
        held.append(Image.claim_token == claim_token)
    released = db.session.execute(
        update(Image)
        .where(*held)
        .values(
            status=ImageStatus.PENDING,
            claimed_by=None,
            queued_at=None,
            not_before=db_now(delay_s),
            retries=Image.retries + 1,
            error_code=code,
            error_message=message[:2000],
            updated_at=db_now(),
        )
        .returning(Image.request_id)
    ).first()
    if released is not None:
        touch_requests([released[0]])
    db.session.commit()
    if released is None and claim_token is not None:
        _discarded(image_id, "retry")
    return released is not None


def touch_requests(request_ids: list[uuid.UUID]) -> None:
    """Move the requests' ``updated_at``, which versions their status pages, after a change of their images."""
    db.session.execute(update(Request).where(Request.id.in_(set(request_ids))).values(updated_at=utcnow()))


def complete_image(
    image_id: int,
    output_key: str,
    public_base_url: str,
    figures: ImageFigures | None = None,
    output_id: int | None = None,
    claim_token: int | None = None,
) -> bool:
    """Record an image's output (and the shared output it points at); returns False if it was already final
    (or cancelled), or, with ``claim_token``, if that claim no longer holds the image."""
    changed = _finish_image(
        image_id,
        ImageStatus.COMPLETED,
        public_base_url,
        output_key=output_key,
        figures=figures,
        output_id=output_id,
        claim_token=claim_token,
    )
    db.session.commit()
    if not changed and claim_token is not None:
        _discarded(image_id, "result")
    return changed


def fail_image(image_id: int, code: str, message: str, public_base_url: str, claim_token: int | None = None) -> bool:
    """Record an image's failure with its code; returns False if it was already final, or, with
    ``claim_token``, if that claim no longer holds the image."""
    changed = _finish_image(
        image_id, ImageStatus.FAILED, public_base_url, error=(code, message), claim_token=claim_token
    )
    db.session.commit()
    if not changed and claim_token is not None:
        _discarded(image_id, f"failure ({code})")
    return changed


def _discarded(image_id: int, what: str) -> None:
    """Say once that a worker's write was refused because its claim was superseded (a cancel is no news)."""
    if image_status(image_id) != ImageStatus.CANCELLED:
        log.warning("image %s: a late %s from a superseded claim was discarded", image_id, what)


def _finish_image(
    image_id: int,
    status: ImageStatus,
    public_base_url: str,
    output_key: str | None = None,
    error: tuple[str, str] | None = None,
    figures: ImageFigures | None = None,
    output_id: int | None = None,
    claim_token: int | None = None,
) -> bool:
    """The image's move to a final status, with its request's counters; a worker's (``claim_token`` given)
    only while that claim still holds it, anyone else's (the sweeper's, a poison image's) while it is active."""
    now = utcnow()
    if claim_token is None:
        held = [Image.status.in_(ACTIVE_IMAGE_STATUSES)]
    else:
        held = [Image.status == ImageStatus.PROCESSING, Image.claim_token == claim_token]
    finished = db.session.execute(
        update(Image)
        .where(Image.id == image_id, *held)
        .values(
            status=status,
            output_key=output_key,
            output_id=output_id,
            error_code=error[0] if error else None,
            error_message=error[1][:2000] if error else None,
            bytes_in=figures.bytes_in if figures else None,
            bytes_out=figures.bytes_out if figures else None,
            width=figures.width if figures else None,
            height=figures.height if figures else None,
            quality=figures.quality if figures else None,
            score=figures.score if figures else None,
            kept_source=figures.kept_source if figures else False,
            reused=figures.reused if figures else False,
            finished_at=now,
            updated_at=now,
        )
        .returning(Image.request_id, Image.occurrences)
    ).first()
    if finished is None:
        return False
    request_id, occurrences = finished
    counter = Request.completed_images if status == ImageStatus.COMPLETED else Request.failed_images
    changes = {counter: counter + occurrences, "updated_at": now}
    if figures is not None:
        changes |= {"bytes_in": Request.bytes_in + figures.bytes_in, "bytes_out": Request.bytes_out + figures.bytes_out}
    db.session.execute(update(Request).where(Request.id == request_id).values(changes))
    finalize_request(request_id, public_base_url)
    return True
