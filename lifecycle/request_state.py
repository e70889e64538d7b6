"""State changes of requests and images: each function is one short unit of work with one commit.

Every change is a conditional UPDATE, so running any of them twice (a redelivered task, two
workers finishing at once) changes nothing the second time.
"""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, or_, select, update

import database
from database import db_now
from delivery import outbox
from intake import idempotency
from intake.csv_input import CsvLayout, ProductRow
from models import (
    ACTIVE_IMAGE_STATUSES,
    ACTIVE_REQUEST_STATUSES,
    Image,
    ImageStatus,
    Product,
    ProductImage,
    Request,
    RequestImport,
    RequestStatus,
    db,
    utcnow,
)
from outputs import variants


@dataclass(frozen=True)
class UploadOptions:
    #: None: chosen per image to reach ``target_score`` (``quality=auto``).
    quality: int | None = 50
    max_dimension: int | None = None
    webhook_url: str | None = None
    owner_key_hash: str | None = None
    target_score: float | None = None
    output_format: str = "jpeg"
    never_bigger: bool = True


@dataclass(frozen=True)
class CreatedRequest:
    id: uuid.UUID
    products: int
    images: int
    #: The rows are left to the import task, which must be sent.
    importing: bool = False


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


def create_request(
    rows: list[ProductRow],
    options: UploadOptions,
    *,
    import_after_urls: int | None = None,
    layout: CsvLayout | None = None,
    request_id: uuid.UUID | None = None,
    idempotency_key: idempotency.KeyToStore | None = None,
) -> CreatedRequest:
    """Write a request and, up to ``import_after_urls`` URLs (None: any), its products and images, in one transaction.

    A bigger upload is answered sooner: its validated rows are stored whole beside the request, and
    ``import_rows`` (the import task) writes them out, so that a request is never half-written.
    With the upload's ``layout`` (and each row's record), the output CSV is the upload with a column
    added; without it, the four columns of the contract.
    An ``idempotency_key`` is stored in the same transaction: if another upload holds the key, this
    raises IntegrityError, nothing is written, and the session must be rolled back.
    """
    request_id = request_id or uuid.uuid4()
    now = utcnow()
    total = sum(len(row.image_urls) for row in rows)
    importing = import_after_urls is not None and total > import_after_urls
    db.session.add(
        Request(
            id=request_id,
            status=RequestStatus.PENDING,
            quality=options.quality,
            target_score=options.target_score,
            output_format=options.output_format,
            never_bigger=options.never_bigger,
            max_dimension=options.max_dimension,
            webhook_url=options.webhook_url,
            owner_key_hash=options.owner_key_hash,
            product_count=len(rows),
            total_images=total,
            completed_images=0,
            failed_images=0,
            created_at=now,
            updated_at=now,
            importing=importing,
            csv_header=layout.header_record if layout else None,
            csv_line_end=layout.line_end if layout else None,
            csv_bom=layout.bom if layout else False,
        )
    )
    if idempotency_key is not None:
        # First, so that an upload racing with the same key waits here, before writing any rows.
        db.session.flush()
        idempotency.remember(idempotency_key, request_id)
        db.session.flush()
    if importing:
        db.session.add(RequestImport(request_id=request_id, rows=encode_rows(rows), queued_at=now))
    else:
        db.session.flush()
        _write_rows(request_id, rows, now)
    db.session.commit()
    return CreatedRequest(id=request_id, products=len(rows), images=total, importing=importing)


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
        db.session.execute(
            update(Image)
            .where(Image.request_id == request_id, Image.status.in_(ACTIVE_IMAGE_STATUSES))
            .values(status=ImageStatus.CANCELLED, claimed_by=None, finished_at=now, updated_at=now)
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
    _write_final_event(request_id, public_base_url)
    db.session.commit()
    return True


def retry_failed_images(request_id: uuid.UUID, error_codes: frozenset[str] | None = None) -> RetryOutcome | None:
    """Put a final request's FAILED images (only those with ``error_codes``, if given) back in line.

    The images start afresh (attempts, retries and requeues back to 0) and the request is
    PROCESSING again, to end in a new final status with a new webhook event; completed images are
    not touched. Returns None if the request is not final with failures to retry (or is CANCELLED).
    """
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
    chosen = [Image.request_id == request_id, Image.status == ImageStatus.FAILED]
    if error_codes is not None:
        chosen.append(Image.error_code.in_(sorted(error_codes)))
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


def image_status(image_id: int) -> str | None:
    status = db.session.scalar(select(Image.status).where(Image.id == image_id))
    db.session.rollback()
    return status


def import_rows(request_id: uuid.UUID) -> bool:
    """Write the products and images of an upload left to the import task; False if there is none to write.

    The import row is locked for the transaction (another import of the same request skips it on
    PostgreSQL, waits for it on SQLite) and deleted in it, so the rows are written exactly once.
    """
    pending = db.session.scalars(
        select(RequestImport).where(RequestImport.request_id == request_id).with_for_update(skip_locked=True)
    ).first()
    if pending is None:
        db.session.rollback()
        return False
    now = utcnow()
    # Locked, so that a cancel either comes first (and the images are written cancelled) or waits.
    request_status = db.session.scalar(select(Request.status).where(Request.id == request_id).with_for_update())
    image_status = ImageStatus.CANCELLED if request_status == RequestStatus.CANCELLED else ImageStatus.PENDING
    _write_rows(request_id, decode_rows(pending.rows), now, image_status)
    db.session.delete(pending)
    db.session.execute(update(Request).where(Request.id == request_id).values(importing=False, updated_at=now))
    db.session.commit()
    return True


def imports_to_resend(lost_after_s: float) -> list[uuid.UUID]:
    """Imports sent at least ``lost_after_s`` ago and still not done, marked sent again now."""
    ids = db.session.scalars(
        update(RequestImport)
        .where(RequestImport.queued_at < db_now(-lost_after_s))
        .values(queued_at=db_now())
        .returning(RequestImport.request_id)
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return list(ids)


def encode_rows(rows: list[ProductRow]) -> bytes:
    records = [[row.serial_number, row.product_name, list(row.image_urls), row.row, row.source_record] for row in rows]
    return zlib.compress(json.dumps(records, separators=(",", ":")).encode(), 1)


def decode_rows(data: bytes) -> list[ProductRow]:
    """The rows ``encode_rows`` wrote, including those written before it kept each row's record."""
    return [
        ProductRow(
            serial_number=record[0],
            product_name=record[1],
            image_urls=tuple(record[2]),
            row=record[3],
            source_record=record[4] if len(record) > 4 else None,
        )
        for record in json.loads(zlib.decompress(data))
    ]


def _write_rows(
    request_id: uuid.UUID, rows: list[ProductRow], now: datetime, image_status: ImageStatus = ImageStatus.PENDING
) -> None:
    """Bulk-insert the products, their distinct images and the links between them."""
    occurrences: dict[str, int] = {}
    for row in rows:
        for url in row.image_urls:
            occurrences[url] = occurrences.get(url, 0) + 1
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
                "source_record": row.source_record,
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
                "status": image_status.value,
                "attempts": 0,
                "retries": 0,
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


def claim_image(image_id: int, task_id: str, max_attempts: int, public_base_url: str) -> ImageWork | None:
    """Mark an image PROCESSING for this task and count the start before any work starts.

    A PENDING image can be claimed by any task; a PROCESSING one only by the task that claimed it
    (Celery re-delivers a message with its task id after a worker died), so a second copy sent by
    the sweeper never runs beside the first. Only starts that died count against ``max_attempts``:
    a start that ended in a scheduled retry did not. Returns None when there is nothing to do: the
    image is final, claimed by another task, gone, or out of attempts, in which case it is failed
    here, so a poison image cannot loop. The lease is stamped by the database's clock.
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
            attempts=Image.attempts + 1,
            not_before=None,
            updated_at=db_now(),
        )
        .returning(Image.request_id, Image.source_url, Image.attempts, Image.retries)
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
    request_id, source_url, attempt, retries = claimed
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
        image_id, request_id, source_url, attempt, retries, variants.owner_of(chosen.owner_key_hash), options
    )


def schedule_retry(image_id: int, task_id: str, delay_s: float, code: str, message: str) -> bool:
    """Give a transient failure back to the dispatcher, due after ``delay_s`` (database clock).

    The retry lives in the row, not in a broker countdown, so it survives the broker's loss and
    holds no worker while it waits. Returns False if the task no longer holds the image.
    """
    released = db.session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id)
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
        _touch_requests([released[0]])
    db.session.commit()
    return released is not None


def _touch_requests(request_ids: list[uuid.UUID]) -> None:
    db.session.execute(update(Request).where(Request.id.in_(set(request_ids))).values(updated_at=utcnow()))


def complete_image(
    image_id: int,
    output_key: str,
    public_base_url: str,
    figures: ImageFigures | None = None,
    output_id: int | None = None,
) -> bool:
    """Record an image's output (and the shared output it points at); returns False if it was already final
    (or cancelled)."""
    changed = _finish_image(
        image_id, ImageStatus.COMPLETED, public_base_url, output_key=output_key, figures=figures, output_id=output_id
    )
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
    figures: ImageFigures | None = None,
    output_id: int | None = None,
) -> bool:
    now = utcnow()
    finished = db.session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status.in_(ACTIVE_IMAGE_STATUSES))
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


def release_stale_images(stale_after_s: float, limit: int = 5000) -> list[int]:
    """PROCESSING images whose lease is older than ``stale_after_s``: back to waiting; returns their ids.

    No task outlives the hard time limit, which is below ``stale_after_s``, so such an image was
    abandoned by a dead worker. One UPDATE ... RETURNING decides, by the database's clock, so two
    overlapping sweeps never both release (and re-send) the same image.
    """
    chosen = (
        select(Image.id)
        .where(Image.status == ImageStatus.PROCESSING, Image.updated_at < db_now(-stale_after_s))
        .order_by(Image.id)
        .limit(limit)
    )
    ids = db.session.execute(
        update(Image)
        .where(Image.id.in_(chosen.scalar_subquery()), Image.status == ImageStatus.PROCESSING)
        .values(
            status=ImageStatus.PENDING,
            claimed_by=None,
            queued_at=None,
            requeues=Image.requeues + 1,
            updated_at=db_now(),
        )
        .returning(Image.id, Image.request_id)
        .execution_options(synchronize_session=False)
    ).all()
    if ids:
        _touch_requests([request_id for _, request_id in ids])
    db.session.commit()
    return [image_id for image_id, _ in ids]


def fail_exhausted_images(max_requeues: int, public_base_url: str) -> int:
    """Fail images re-sent ``max_requeues`` times without ever finishing; returns how many."""
    ids = db.session.scalars(
        select(Image.id).where(Image.status.in_(ACTIVE_IMAGE_STATUSES), Image.requeues >= max_requeues)
    ).all()
    for image_id in ids:
        fail_image(image_id, "stuck", "The image was re-queued too many times without finishing.", public_base_url)
    return len(ids)
