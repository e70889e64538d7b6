"""A request's final status, set once every image is final, and its webhook event with it."""

from __future__ import annotations

import uuid

from sqlalchemy import case, select, update

from delivery import outbox
from models import ACTIVE_REQUEST_STATUSES, Request, RequestStatus, db, utcnow


def finalize_request(request_id: uuid.UUID, public_base_url: str) -> str | None:
    """Set the final status once every image is final; returns it if this call set it.

    One conditional UPDATE decides: of two workers finishing the last images at the same moment,
    the row lock lets exactly one of them see every image final and the status not yet final.
    The webhook event is written in the same transaction, so it exists exactly when the status does.
    """
    now = utcnow()
    final_status = case(
        (Request.failed_images == 0, RequestStatus.COMPLETED.value),
        (Request.completed_images == 0, RequestStatus.FAILED.value),
        else_=RequestStatus.COMPLETED_WITH_ERRORS.value,
    )
    row = db.session.execute(
        update(Request)
        .where(
            Request.id == request_id,
            Request.status.in_(ACTIVE_REQUEST_STATUSES),
            Request.completed_images + Request.failed_images >= Request.total_images,
        )
        .values(status=final_status, completed_at=now, updated_at=now)
        .returning(Request.status)
    ).first()
    if row is None:
        return None
    _write_final_event(request_id, public_base_url)
    return row[0]


def _write_final_event(request_id: uuid.UUID, public_base_url: str) -> None:
    request = db.session.get(Request, request_id, populate_existing=True)
    if request is not None and request.webhook_url:
        outbox.create_event(request, public_base_url)


def finalize_finished_requests(public_base_url: str) -> int:
    """Finalise requests whose images are all final but whose status is not; returns how many."""
    ids = db.session.scalars(
        select(Request.id).where(
            Request.status.in_(ACTIVE_REQUEST_STATUSES),
            Request.completed_images + Request.failed_images >= Request.total_images,
        )
    ).all()
    finalized = 0
    for request_id in ids:
        finalized += finalize_request(request_id, public_base_url) is not None
        db.session.commit()
    db.session.commit()
    return finalized
