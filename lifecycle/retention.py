"""Retention: requests older than ``RETENTION_DAYS`` are deleted with their rows, then every output no image
points at any more.

Everything goes in small batches, each its own short transaction: a big request's images a few thousand
at a time, so uploads and polls never wait behind a long delete. The API's tables are only ever locked
row by row (PostgreSQL's DELETE takes no table lock that readers or writers of other rows wait for).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, exists, or_, select

from lifecycle import orphans
from models import (
    FINAL_REQUEST_STATUSES,
    Image,
    ImageOutput,
    ImageRendition,
    Product,
    ReceivedWebhook,
    Request,
    SourceVersion,
    db,
    utcnow,
)
from storage import Storage, StorageError

log = logging.getLogger(__name__)

REQUESTS_PER_BATCH = 20
ROWS_PER_BATCH = 2000
#: An output found by a lookup is left alone this long, at most, so that its worker can point an image at it.
OUTPUT_GRACE_S = 3600.0


@dataclass
class RetentionReport:
    requests: int = 0
    images: int = 0
    outputs: int = 0
    source_versions: int = 0
    received_webhooks: int = 0
    #: Objects whose removal failed: their rows are kept (requests), or given up for the sweep (outputs).
    storage_errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "images": self.images,
            "outputs": self.outputs,
            "source_versions": self.source_versions,
            "received_webhooks": self.received_webhooks,
            "storage_errors": len(self.storage_errors),
        }


def apply(retention_days: float, storage: Storage, budget_s: float = 60.0) -> RetentionReport:
    """Delete what is past retention, for at most about ``budget_s``; the next run goes on from there."""
    report = RetentionReport()
    deadline = time.monotonic() + budget_s
    retention = timedelta(days=retention_days)
    cutoff = utcnow() - retention
    more = True
    while more and time.monotonic() < deadline:
        request_ids = _expired_requests(cutoff, REQUESTS_PER_BATCH)
        more = bool(request_ids)
        for request_id in request_ids:
            if time.monotonic() >= deadline or not delete_request(request_id, storage, report):
                more = False
                break
    grace = min(OUTPUT_GRACE_S, retention.total_seconds())
    while time.monotonic() < deadline and delete_unused_outputs(grace, storage, report):
        pass
    report.source_versions += _delete_batches(SourceVersion, SourceVersion.updated_at < cutoff, deadline)
    report.received_webhooks += _delete_batches(ReceivedWebhook, ReceivedWebhook.received_at < cutoff, deadline)
    return report


def _expired_requests(cutoff, limit: int) -> list[uuid.UUID]:
    """Requests created before ``cutoff`` that are final, or have not moved since ``cutoff`` (stuck)."""
    ids = db.session.scalars(
        select(Request.id)
        .where(
            Request.created_at < cutoff,
            or_(Request.status.in_(FINAL_REQUEST_STATUSES), Request.updated_at < cutoff),
        )
        .order_by(Request.created_at)
        .limit(limit)
    ).all()
    db.session.rollback()
    return list(ids)


def delete_request(request_id: uuid.UUID, storage: Storage, report: RetentionReport) -> bool:
    """Delete one request, its images a batch at a time, then its products and the request row (its webhook
    events, attempts and idempotency keys go with it). Returns False if an object could not be removed: the
    rest of the request is kept, for the next run.

    Outputs stored per request (before outputs were shared) are removed before their rows, so a failure
    leaves a row that still names its file; shared outputs are left to ``delete_unused_outputs``.
    """
    while True:
        images = db.session.execute(
            select(Image.id, Image.output_key, Image.output_id)
            .where(Image.request_id == request_id)
            .limit(ROWS_PER_BATCH)
        ).all()
        db.session.rollback()
        if not images:
            break
        for image in images:
            if image.output_id is None and image.output_key:
                try:
                    storage.delete(image.output_key)
                except StorageError as error:
                    report.storage_errors.append(str(error))
                    log.warning("retention: request %s kept for now: %s", request_id, error)
                    return False
        db.session.execute(
            delete(Image)
            .where(Image.id.in_([image.id for image in images]))
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        report.images += len(images)
    _delete_batches(Product, Product.request_id == request_id, None)
    db.session.execute(delete(Request).where(Request.id == request_id).execution_options(synchronize_session=False))
    db.session.commit()
    report.requests += 1
    return True


def delete_unused_outputs(unused_for_s: float, storage: Storage, report: RetentionReport) -> int:
    """Give up a batch of stored outputs that no image points at and no lookup touched for ``unused_for_s``,
    then delete their objects and their rows; returns how many went (0 once the store refuses a delete: the
    rest stay given up, naming their keys, and the sweep deletes them).

    The UPDATE re-checks both conditions on every row it locks, and a lookup raises ``last_used_at`` under
    the same row lock, so an output a worker has just found is never deleted under it.
    """
    cutoff = utcnow() - timedelta(seconds=unused_for_s)
    unused = (
        ImageOutput.stored_at.is_not(None),
        ImageOutput.last_used_at < cutoff,
        ~exists().where(Image.output_id == ImageOutput.id),
        ~exists().where(ImageRendition.output_id == ImageOutput.id),
    )
    batch = select(ImageOutput.id).where(*unused).order_by(ImageOutput.id).limit(ROWS_PER_BATCH)
    removed = orphans.delete_given_up(orphans.give_up(ImageOutput.id.in_(batch.scalar_subquery()), *unused), storage)
    report.outputs += removed.count
    if removed.error is not None:
        report.storage_errors.append(removed.error)
        log.warning("retention: the objects of unused outputs are left to the sweep: %s", removed.error)
        return 0
    return removed.count


def _delete_batches(model, condition, deadline: float | None) -> int:
    deleted = 0
    while deadline is None or time.monotonic() < deadline:
        batch = select(model.id).where(condition).limit(ROWS_PER_BATCH).scalar_subquery()
        count = db.session.execute(
            delete(model).where(model.id.in_(batch)).execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
        deleted += count
        if count < ROWS_PER_BATCH:
            break
    return deleted
