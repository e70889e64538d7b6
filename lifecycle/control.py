"""What a caller does to a request once it exists: cancel it, or retry its failed images."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, update

from intake import quotas
from lifecycle.finalize import write_final_event
from models import (
    ACTIVE_IMAGE_STATUSES,
    ACTIVE_REQUEST_STATUSES,
    Image,
    ImageStatus,
    Request,
    RequestStatus,
    db,
    utcnow,
)


@dataclass(frozen=True)
class RetryOutcome:
    """What a retry did: the images put back in line, and the image occurrences they stand for."""

    images: int
    occurrences: int


def cancel_request(request_id: uuid.UUID, public_base_url: str) -> bool:
    """End an active request as CANCELLED: its unfinished images are cancelled where they stand.

    Nothing is sent to the workers: a queued message finds its image cancelled and does nothing,
    and a worker that finishes an image in flight finds it cancelled and drops its output. Images
    are locked before the request, in the order the workers lock them, so the two never deadlock.
    Returns False if the request is already final (or gone).
    """
    now = utcnow()
    cancelled = dict(
        status=RequestStatus.CANCELLED,
        cancelled_images=Request.total_images - Request.completed_images - Request.failed_images,
        completed_at=now,
        updated_at=now,
    )
    # A request still being imported has no images yet; the import writes them cancelled.
    ended = db.session.execute(
        update(Request)
        .where(Request.id == request_id, Request.status.in_(ACTIVE_REQUEST_STATUSES), Request.importing.is_(True))
        .values(cancelled)
        .returning(Request.id)
    ).first()
    if ended is None:
        active = (Image.request_id == request_id, Image.status.in_(ACTIVE_IMAGE_STATUSES))
        # In id order, as a batch's claim and flush lock them: one UPDATE alone locks in whatever order it scans.
        db.session.execute(select(Image.id).where(*active).order_by(Image.id).with_for_update())
        db.session.execute(
            update(Image)
            .where(*active)
            .values(
                status=ImageStatus.CANCELLED,
                claimed_by=None,
                claim_token=Image.claim_token + 1,
                finished_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        ended = db.session.execute(
            update(Request)
            .where(Request.id == request_id, Request.status.in_(ACTIVE_REQUEST_STATUSES))
            .values(cancelled)
            .returning(Request.id)
        ).first()
    if ended is None:
        db.session.rollback()
        return False
    write_final_event(request_id, public_base_url)
    db.session.commit()
    return True


def retry_failed_images(
    request_id: uuid.UUID, error_codes: frozenset[str] | None = None, *, max_active_images: int = 0
) -> RetryOutcome | None:
    """Put a final request's FAILED images (only those with ``error_codes``, if given) back in line.

    The images start afresh (attempts, retries and requeues back to 0) and the request is
    PROCESSING again, to end in a new final status with a new webhook event; completed images are
    not touched. Returns None if the request is not final with failures to retry (or is CANCELLED).

    Raises:
        ApiError: 429 ``quota_exceeded`` if the images would take the request's owner past
            ``max_active_images`` in flight (0: no limit), as an upload would; nothing is changed.
    """
    chosen = [Image.request_id == request_id, Image.status == ImageStatus.FAILED]
    if error_codes is not None:
        chosen.append(Image.error_code.in_(sorted(error_codes)))
    if max_active_images:
        owner = db.session.scalar(select(Request.owner_key_hash).where(Request.id == request_id))
        retrying = db.session.scalar(select(func.count(Image.id)).where(*chosen))
        if retrying:
            # The owner's quota stays locked until the commit below, as an upload's does.
            quotas.check_more_images(
                owner,
                retrying,
                max_active_images,
                f"This retry puts {retrying} images back in line",
                "retry fewer error codes",
            )
    now = utcnow()
    retried_request = db.session.execute(
        update(Request)
        .where(
            Request.id == request_id,
            Request.status.in_((RequestStatus.COMPLETED_WITH_ERRORS, RequestStatus.FAILED)),
        )
        .values(status=RequestStatus.PROCESSING, completed_at=None, updated_at=now)
        .returning(Request.id)
    ).first()
    if retried_request is None:
        db.session.rollback()
        return None
    occurrences = db.session.scalars(
        update(Image)
        .where(*chosen)
        .values(
            status=ImageStatus.PENDING,
            attempts=0,
            retries=0,
            requeues=0,
            queued_at=None,
            not_before=None,
            claimed_by=None,
            output_key=None,
            output_id=None,
            reused=False,
            error_code=None,
            error_message=None,
            finished_at=None,
            updated_at=now,
        )
        .returning(Image.occurrences)
        .execution_options(synchronize_session=False)
    ).all()
    if not occurrences:
        db.session.rollback()
        return None
    db.session.execute(
        update(Request).where(Request.id == request_id).values(failed_images=Request.failed_images - sum(occurrences))
    )
    db.session.commit()
    return RetryOutcome(images=len(occurrences), occurrences=sum(occurrences))
