"""Writing a request: its row, and its products and images at once or, for a big upload, by the import task."""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

import database
from database import db_now
from intake import idempotency
from intake.csv_input import CsvLayout, ProductRow
from models import (
    Image,
    ImageStatus,
    Product,
    ProductImage,
    Request,
    RequestImport,
    RequestRecord,
    RequestStatus,
    db,
    utcnow,
)
from output_plan.plan import OutputPlan


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
    #: The uploaded file's name, shown back in the status and the request list.
    file_name: str | None = None
    #: Renditions, canvas, profile and checks; None for one plain output per image.
    plan: OutputPlan | None = None
    #: How the output file gives the outputs back (``replace`` or ``append``); None: the format's default.
    output_mode: str | None = None
    #: The rendition whose URLs go into the output file's image cells; None for the first.
    output_rendition: str | None = None
    #: Where the file was fetched from (``feed_url``), and the SHA-256 of what was fetched.
    feed_url: str | None = None
    feed_sha256: str | None = None


@dataclass(frozen=True)
class CreatedRequest:
    id: uuid.UUID
    products: int
    images: int
    #: The rows are left to the import task, which must be sent.
    importing: bool = False


def create_request(
    rows: list[ProductRow],
    options: UploadOptions,
    *,
    import_after_urls: int | None = None,
    layout: CsvLayout | None = None,
    request_id: uuid.UUID | None = None,
    idempotency_key: idempotency.KeyToStore | None = None,
    input_format: str | None = None,
    records: list[str] | None = None,
) -> CreatedRequest:
    """Write a request and, up to ``import_after_urls`` URLs (None: any), its products and images, in one transaction.

    A bigger upload is answered sooner: its validated rows are stored whole beside the request, and
    ``import_rows`` (the import task) writes them out, so that a request is never half-written.
    With the upload's ``layout`` (and each row's record), the output CSV is the upload with a column
    added; without it, the four columns of the contract. A platform's export (``input_format``) keeps its
    ``records`` as written instead, written here whatever the upload's size: they are text, not work.
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
            file_name=options.file_name,
            output_plan=options.plan.describe() if options.plan else None,
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
            csv_delimiter=layout.delimiter if layout and layout.delimiter != "," else None,
            input_format=input_format,
            output_mode=options.output_mode,
            output_rendition=options.output_rendition,
            feed_url=options.feed_url,
            feed_sha256=options.feed_sha256,
        )
    )
    if idempotency_key is not None:
        # First, so that an upload racing with the same key waits here, before writing any rows.
        db.session.flush()
        idempotency.remember(idempotency_key, request_id)
        db.session.flush()
    if records:
        db.session.flush()
        database.bulk_insert(
            db.session.connection(),
            RequestRecord.__table__,
            [{"request_id": request_id, "position": p, "record": record} for p, record in enumerate(records)],
            new_ids=False,
        )
    if importing:
        db.session.add(RequestImport(request_id=request_id, rows=encode_rows(rows), queued_at=now))
    else:
        db.session.flush()
        _write_rows(request_id, rows, now)
    db.session.commit()
    return CreatedRequest(id=request_id, products=len(rows), images=total, importing=importing)


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
    """The rows as stored beside a request until the import task writes them: compressed JSON."""
    records = [
        [row.serial_number, row.product_name, list(row.image_urls), row.row, row.source_record, row.key] for row in rows
    ]
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
            key=record[5] if len(record) > 5 else None,
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
                "key": row.key,
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
