"""A request's final status, set once every image is final, and its webhook event with it."""

from __future__ import annotations

import uuid

from sqlalchemy import literal, select, update

from delivery import outbox
from lifecycle import duplicates
from models import ACTIVE_REQUEST_STATUSES, ImageCounts, Request, db, status_case, utcnow

#: The request's counters as the status rule reads them. They do not tell waiting images from those in
#: progress, so every image not yet final counts as pending: the final status is set only when none is left.
REQUEST_COUNTS = ImageCounts(
    pending=Request.total_images - Request.completed_images - Request.failed_images - Request.cancelled_images,
    processing=literal(0),
    completed=Request.completed_images,
    failed=Request.failed_images,
    cancelled=Request.cancelled_images,
)


def finalize_request(request_id: uuid.UUID, public_base_url: str) -> str | None:
    """Set the final status once every image is final; returns it if this call set it.

    One conditional UPDATE decides: of two workers finishing the last images at the same moment,
    the row lock lets exactly one of them see every image final and the status not yet final.
    The webhook event is written in the same transaction, so it exists exactly when the status does.
    """
    now = utcnow()
    row = db.session.execute(
        update(Request)
        .where(
            Request.id == request_id,
            Request.status.in_(ACTIVE_REQUEST_STATUSES),
            Request.completed_images + Request.failed_images >= Request.total_images,
        )
        .values(status=status_case(REQUEST_COUNTS), completed_at=now, updated_at=now)
        .returning(Request.status, Request.owner_key_hash, Request.output_plan)
    ).first()
    if row is None:
        return None
    if row.output_plan is not None and row.output_plan.get("duplicates"):
        duplicates.flag_request(request_id, row.owner_key_hash or "")
    write_final_event(request_id, public_base_url)
    return row.status


def write_final_event(request_id: uuid.UUID, public_base_url: str) -> None:
    """Write the webhook event of the request's final status, if it has a webhook."""
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
