"""State changes of requests and images: each function is one short unit of work with one commit.

Every change is a conditional UPDATE, so running any of them twice (a redelivered task, two
workers finishing at once) changes nothing the second time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, case, or_, select, update

import database
import webhook_outbox
from csv_input import ProductRow
from models import (
    Image,
    ImageStatus,
    Product,
    ProductImage,
    Request,
    RequestStatus,
    db,
    utcnow,
)

ACTIVE_IMAGE_STATUSES = (ImageStatus.PENDING, ImageStatus.PROCESSING)
ACTIVE_REQUEST_STATUSES = (RequestStatus.PENDING, RequestStatus.PROCESSING)


@dataclass(frozen=True)
class UploadOptions:
    quality: int = 50
    max_dimension: int | None = None
    webhook_url: str | None = None
    owner_key_hash: str | None = None


@dataclass(frozen=True)
class CreatedRequest:
    id: uuid.UUID
    products: int
    images: int


@dataclass(frozen=True)
class ImageWork:
    """What a worker needs to process one image, read in the claim's transaction."""

    image_id: int
    request_id: uuid.UUID
    source_url: str
    attempt: int
    quality: int
    max_dimension: int | None


def create_request(rows: list[ProductRow], options: UploadOptions) -> CreatedRequest:
    """Write a request, its products and its images in one transaction, with bulk inserts."""
    request_id = uuid.uuid4()
    now = utcnow()
    occurrences: dict[str, int] = {}
    for row in rows:
        for url in row.image_urls:
            occurrences[url] = occurrences.get(url, 0) + 1
    total = sum(occurrences.values())
    db.session.add(
        Request(
            id=request_id,
            status=RequestStatus.PENDING,
            quality=options.quality,
            max_dimension=options.max_dimension,
            webhook_url=options.webhook_url,
            owner_key_hash=options.owner_key_hash,
            product_count=len(rows),
            total_images=total,
            completed_images=0,
            failed_images=0,
            created_at=now,
            updated_at=now,
        )
    )
    db.session.flush()
    connection = db.session.connection()
    product_ids = database.bulk_insert(
        connection,
        Product.__table__,
        [
            {
                "request_id": request_id,
                "position": position,
                "serial_number": row.serial_number,
                "name": row.product_name,
            }
            for position, row in enumerate(rows)
        ],
        new_ids=True,
    )
    urls = list(occurrences)
    image_ids = database.bulk_insert(
        connection,
        Image.__table__,
        [
            {
                "request_id": request_id,
                "source_url": url,
                "occurrences": occurrences[url],
                "status": ImageStatus.PENDING.value,
                "attempts": 0,
                "requeues": 0,
                "created_at": now,
                "updated_at": now,
            }
            for url in urls
        ],
        new_ids=True,
    )
    image_id_by_url = dict(zip(urls, image_ids, strict=True))
    database.bulk_insert(
        connection,
        ProductImage.__table__,
        [
            {"product_id": product_id, "position": position, "image_id": image_id_by_url[url]}
            for product_id, row in zip(product_ids, rows, strict=True)
            for position, url in enumerate(row.image_urls)
        ],
        new_ids=False,
    )
    db.session.commit()
    return CreatedRequest(id=request_id, products=len(rows), images=total)


def mark_dispatched(request_id: uuid.UUID) -> None:
    """Record that the request's fan-out task reached the broker."""
    db.session.execute(update(Request).where(Request.id == request_id).values(dispatched_at=utcnow()))
    db.session.commit()


def active_image_ids(request_id: uuid.UUID, after_id: int, limit: int) -> list[int]:
    """Up to ``limit`` of the request's images that are not final, in input order, after ``after_id``."""
    ids = db.session.scalars(
        select(Image.id)
        .where(Image.request_id == request_id, Image.id > after_id, Image.status.in_(ACTIVE_IMAGE_STATUSES))
        .order_by(Image.id)
        .limit(limit)
    ).all()
    db.session.commit()
    return list(ids)


def claim_image(image_id: int, task_id: str, max_attempts: int, public_base_url: str) -> ImageWork | None:
    """Mark an image PROCESSING for this task and count the attempt before any work starts.

    A PENDING image can be claimed by any task; a PROCESSING one only by the task that claimed it
    (Celery re-delivers a message with its task id after a worker died, and retries keep it), so a
    second copy sent by the sweeper never runs beside the first. Returns None when there is nothing
    to do: the image is final, claimed by another task, gone, or out of attempts, in which case it is
    failed here, so a poison image cannot loop.
    """
    now = utcnow()
    claimable = or_(
        Image.status == ImageStatus.PENDING,
        and_(Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id),
    )
    claimed = db.session.execute(
        update(Image)
        .where(Image.id == image_id, claimable, Image.attempts < max_attempts)
        .values(status=ImageStatus.PROCESSING, claimed_by=task_id, attempts=Image.attempts + 1, updated_at=now)
        .returning(Image.request_id, Image.source_url, Image.attempts)
    ).first()
    if claimed is None:
        db.session.rollback()
        image = db.session.get(Image, image_id)
        exhausted = image is not None and image.status in ACTIVE_IMAGE_STATUSES and image.attempts >= max_attempts
        if exhausted and (image.status == ImageStatus.PENDING or image.claimed_by == task_id):
            _finish_image(
                image_id,
                ImageStatus.FAILED,
                public_base_url,
                error=("too_many_attempts", f"Processing stopped after {image.attempts} attempts that did not finish."),
            )
        db.session.commit()
        return None
    request_id, source_url, attempt = claimed
    db.session.execute(
        update(Request)
        .where(Request.id == request_id, Request.status == RequestStatus.PENDING)
        .values(status=RequestStatus.PROCESSING, updated_at=now)
    )
    quality, max_dimension = db.session.execute(
        select(Request.quality, Request.max_dimension).where(Request.id == request_id)
    ).one()
    db.session.commit()
    return ImageWork(image_id, request_id, source_url, attempt, quality, max_dimension)


def complete_image(image_id: int, output_key: str, public_base_url: str) -> bool:
    """Record an image's output; returns False if it was already final."""
    changed = _finish_image(image_id, ImageStatus.COMPLETED, public_base_url, output_key=output_key)
    db.session.commit()
    return changed


def fail_image(image_id: int, code: str, message: str, public_base_url: str) -> bool:
    """Record an image's failure with its code; returns False if it was already final."""
    changed = _finish_image(image_id, ImageStatus.FAILED, public_base_url, error=(code, message))
    db.session.commit()
    return changed


def _finish_image(
    image_id: int,
    status: ImageStatus,
    public_base_url: str,
    output_key: str | None = None,
    error: tuple[str, str] | None = None,
) -> bool:
    now = utcnow()
    finished = db.session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status.in_(ACTIVE_IMAGE_STATUSES))
        .values(
            status=status,
            output_key=output_key,
            error_code=error[0] if error else None,
            error_message=error[1][:2000] if error else None,
            finished_at=now,
            updated_at=now,
        )
        .returning(Image.request_id, Image.occurrences)
    ).first()
    if finished is None:
        return False
    request_id, occurrences = finished
    counter = Request.completed_images if status == ImageStatus.COMPLETED else Request.failed_images
    db.session.execute(
        update(Request).where(Request.id == request_id).values({counter: counter + occurrences, "updated_at": now})
    )
    finalize_request(request_id, public_base_url)
    return True


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
    request = db.session.get(Request, request_id, populate_existing=True)
    if request is not None and request.webhook_url:
        webhook_outbox.create_event(request, public_base_url)
    return row[0]


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


def undispatched_request_ids(older_than: timedelta) -> list[uuid.UUID]:
    """Requests whose fan-out never reached the broker (it was down at upload)."""
    cutoff = utcnow() - older_than
    ids = db.session.scalars(
        select(Request.id).where(
            Request.dispatched_at.is_(None),
            Request.status.in_(ACTIVE_REQUEST_STATUSES),
            Request.created_at < cutoff,
        )
    ).all()
    db.session.commit()
    return list(ids)


def claim_stale_images(stale_after: timedelta, include_pending: bool, limit: int = 5000) -> list[int]:
    """Images nobody has touched for ``stale_after``: release them and return their ids to re-send.

    A PROCESSING image that old was abandoned by a dead worker (no task outlives the hard time
    limit, which is below ``stale_after``), so it goes back to PENDING for any task to claim. The
    touch means the next sweep does not re-send them again at once.
    """
    now = utcnow()
    statuses = ACTIVE_IMAGE_STATUSES if include_pending else (ImageStatus.PROCESSING,)
    ids = db.session.scalars(
        select(Image.id)
        .where(Image.status.in_(statuses), Image.updated_at < now - stale_after)
        .order_by(Image.id)
        .limit(limit)
    ).all()
    if ids:
        db.session.execute(
            update(Image)
            .where(Image.id.in_(ids), Image.status.in_(statuses), Image.updated_at < now - stale_after)
            .values(status=ImageStatus.PENDING, claimed_by=None, requeues=Image.requeues + 1, updated_at=now)
        )
    db.session.commit()
    return list(ids)


def fail_exhausted_images(max_requeues: int, public_base_url: str) -> int:
    """Fail images re-sent ``max_requeues`` times without ever finishing; returns how many."""
    ids = db.session.scalars(
        select(Image.id).where(Image.status.in_(ACTIVE_IMAGE_STATUSES), Image.requeues >= max_requeues)
    ).all()
    for image_id in ids:
        fail_image(image_id, "stuck", "The image was re-queued too many times without finishing.", public_base_url)
    return len(ids)
