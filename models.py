"""The database schema: requests, their products and images, and webhook deliveries."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    case,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import Case, ColumnElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)

# SQLite's integer primary keys must be INTEGER to autoincrement; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class RequestStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE_REQUEST_STATUSES = (RequestStatus.PENDING, RequestStatus.PROCESSING)
FINAL_REQUEST_STATUSES = (
    RequestStatus.COMPLETED,
    RequestStatus.COMPLETED_WITH_ERRORS,
    RequestStatus.FAILED,
    RequestStatus.CANCELLED,
)


class ImageStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE_IMAGE_STATUSES = (ImageStatus.PENDING, ImageStatus.PROCESSING)

Count = TypeVar("Count")


@dataclass(frozen=True)
class ImageCounts(Generic[Count]):
    """How many images stand in each status: numbers, or SQL expressions of them."""

    pending: Count
    processing: Count
    completed: Count
    failed: Count
    cancelled: Count

    @staticmethod
    def of(statuses: Iterable[str]) -> ImageCounts[int]:
        """The counts of these image statuses."""
        found = Counter(statuses)
        return ImageCounts(**{status.lower(): found[status] for status in ImageStatus})


#: A request's status, and a product's, from its images' counts: the first condition that holds gives it,
#: else ``OTHERWISE_STATUS``. The conditions use only sums and comparisons, so that the same one is
#: evaluated on numbers (``status_of``) and, by the database, on columns (``status_case``).
STATUS_RULE: tuple[tuple[Callable[[ImageCounts[Any]], Any], RequestStatus], ...] = (
    (lambda n: n.processing + n.completed + n.failed + n.cancelled == 0, RequestStatus.PENDING),
    (lambda n: n.pending + n.processing > 0, RequestStatus.PROCESSING),
    (lambda n: n.cancelled > 0, RequestStatus.CANCELLED),
    (lambda n: n.failed == 0, RequestStatus.COMPLETED),
    (lambda n: n.completed == 0, RequestStatus.FAILED),
)
OTHERWISE_STATUS = RequestStatus.COMPLETED_WITH_ERRORS


def status_of(counts: ImageCounts[int]) -> RequestStatus:
    """The status ``STATUS_RULE`` gives these counts."""
    return next((status for holds, status in STATUS_RULE if holds(counts)), OTHERWISE_STATUS)


def status_case(counts: ImageCounts[ColumnElement[int]]) -> Case[str]:
    """``STATUS_RULE`` as an SQL expression on these columns, for the database to evaluate."""
    return case(*((holds(counts), status.value) for holds, status in STATUS_RULE), else_=OTHERWISE_STATUS.value)


def derive_status(statuses: Iterable[str]) -> RequestStatus:
    """A product's status from its images' statuses, by the same rule as a request's."""
    return status_of(ImageCounts.of(statuses))


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


class Request(db.Model):
    __tablename__ = "requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(String(32), default=RequestStatus.PENDING)
    #: The fixed output quality; None when the quality is chosen per image (``quality=auto``).
    quality: Mapped[int | None]
    #: ``quality=auto``'s perceptual target: the SSIM on luma each output must reach.
    target_score: Mapped[float | None]
    max_dimension: Mapped[int | None]
    output_format: Mapped[str] = mapped_column(String(8), default="jpeg", server_default=text("'jpeg'"))
    #: A source JPEG that needs no change is kept (without its metadata) when encoding would not shrink it.
    never_bigger: Mapped[bool] = mapped_column(default=True, server_default=text("false"))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    #: The uploaded file's name as the client sent it (without any folder); None when it sent none.
    file_name: Mapped[str | None] = mapped_column(String(255))
    #: SHA-256 of the API key that created the request; None when the service is open.
    owner_key_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    product_count: Mapped[int]
    #: Image occurrences as the CSV lists them; a URL named twice counts twice.
    total_images: Mapped[int]
    completed_images: Mapped[int] = mapped_column(default=0)
    failed_images: Mapped[int] = mapped_column(default=0)
    cancelled_images: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    #: Sizes of the distinct images completed so far: downloaded, and stored.
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    #: The uploaded header record as it was written, and the file's line ending and byte order mark,
    #: so that the output CSV is the upload with one column added. None for older requests.
    csv_header: Mapped[str | None] = mapped_column(Text)
    csv_line_end: Mapped[str | None] = mapped_column(String(2))
    csv_bom: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The products and images are still being written by the import task (a big upload).
    importing: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    #: The outputs asked beyond the encoding options above: the marketplace profile, the canvas, the
    #: renditions and the checks, as ``outputs.plan.OutputPlan.describe`` writes them; None for a plain request.
    output_plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The format the file was read as (``catalog_formats``): ``contract`` or a platform's; None for older requests.
    input_format: Mapped[str | None] = mapped_column(String(24))
    #: ``replace``: the output file is the upload with each image URL replaced in place; ``append``: with
    #: ``Output Image Urls`` added. None: the format's default.
    output_mode: Mapped[str | None] = mapped_column(String(8))
    #: The rendition whose URLs go into the output file; None for the first.
    output_rendition: Mapped[str | None] = mapped_column(String(32))
    #: The file's cell delimiter, for a Google feed sent tab-separated; None for a comma.
    csv_delimiter: Mapped[str | None] = mapped_column(String(1))
    #: The URL the file was fetched from (``feed_url``), and the SHA-256 of the bytes fetched.
    feed_url: Mapped[str | None] = mapped_column(Text)
    feed_sha256: Mapped[str | None] = mapped_column(String(64))


class RequestImport(db.Model):
    """The validated rows of an upload too big to store before answering, until the import task stores them."""

    __tablename__ = "request_imports"

    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True)
    #: zlib-compressed JSON of the rows, as ``creation.encode_rows`` writes them.
    rows: Mapped[bytes] = mapped_column(LargeBinary)
    #: When the import task was last sent; the sweeper sends it again if it never finished.
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Product(db.Model):
    __tablename__ = "products"
    __table_args__ = (Index("ix_products_request_position", "request_id", "position", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"))
    #: Upload order, from 0.
    position: Mapped[int]
    serial_number: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(Text)
    #: The product's record as uploaded, every column and cell as written, without its line ending.
    source_record: Mapped[str | None] = mapped_column(Text)
    #: The product's key in a platform's export (Shopify's Handle, WooCommerce's ID or SKU, Google's id).
    key: Mapped[str | None] = mapped_column(Text)


class RequestRecord(db.Model):
    """One record of a platform's export after its header, as written (line ending included), in file order.

    The output file is these records with their image cells replaced; the contract's CSV keeps its
    records on its products instead.
    """

    __tablename__ = "request_records"

    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    record: Mapped[str] = mapped_column(Text)


#: Images waiting for the dispatcher: pending and not handed to the broker.
WAITING_IMAGE = "status = 'PENDING' AND queued_at IS NULL"
#: Waiting images whose message was lost or whose worker died: they keep their place in line.
RELEASED_IMAGE = "status = 'PENDING' AND queued_at IS NULL AND requeues > 0"
#: Images the broker or a worker holds: handed over and not yet claimed, or being processed.
IN_FLIGHT_IMAGE = "status = 'PROCESSING' OR (status = 'PENDING' AND queued_at IS NOT NULL)"


class EncodedFiguresColumns:
    """What an encode gave: the source's and the output's sizes, the output's pixels, its quality and score."""

    #: The download's and the stored output's sizes, and the output's pixels, once completed.
    bytes_in: Mapped[int | None] = mapped_column(BigInteger)
    bytes_out: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None]
    height: Mapped[int | None]
    #: The quality the output was encoded at (None when the source was kept), and the score it reached.
    quality: Mapped[int | None]
    score: Mapped[float | None]
    #: The marketplace rules the source and the output failed and what was changed (``compliance.report``);
    #: None when the request named no profile.
    compliance: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The source's 64-bit perceptual hash, stored signed (``imaging.perceptual_hash.to_signed``); None when
    #: near-duplicates were not looked for.
    phash: Mapped[int | None] = mapped_column(BigInteger)


class Image(EncodedFiguresColumns, db.Model):
    """One distinct source URL of a request: downloaded and compressed once."""

    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_status_updated", "status", "updated_at"),
        Index(
            "ix_images_waiting",
            "request_id",
            "id",
            postgresql_where=text(WAITING_IMAGE),
            sqlite_where=text(WAITING_IMAGE),
        ),
        Index("ix_images_released", "id", postgresql_where=text(RELEASED_IMAGE), sqlite_where=text(RELEASED_IMAGE)),
        Index(
            "ix_images_in_flight",
            "request_id",
            postgresql_where=text(IN_FLIGHT_IMAGE),
            sqlite_where=text(IN_FLIGHT_IMAGE),
        ),
        # The images a task holds, found by its id when its message is delivered again.
        Index(
            "ix_images_processing_claimed_by",
            "claimed_by",
            postgresql_where=text("status = 'PROCESSING'"),
            sqlite_where=text("status = 'PROCESSING'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    source_url: Mapped[str] = mapped_column(Text)
    #: How many times the request's CSV names this URL; progress counts each one.
    occurrences: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.PENDING)
    #: Task starts, raised before the work begins, so a poison image ends after a bounded number.
    attempts: Mapped[int] = mapped_column(default=0)
    #: Starts that ended in a transient failure and were scheduled again: they did not die.
    retries: Mapped[int] = mapped_column(default=0)
    #: When the dispatcher handed the image to the broker (database clock); None while it waits.
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The id of the message (a batch of images) that carries it while queued: lost messages are counted by it.
    queued_in: Mapped[str | None] = mapped_column(String(64))
    #: A retry's back-off: the dispatcher leaves the image alone until then (database clock).
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The Celery task id that claimed it: a redelivery of that same message may take it over.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    #: The fencing token of the current claim: every claim and every take-over raises it, and a worker's
    #: writes for the image hold only while it is still the token its claim returned.
    claim_token: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    #: Times the sweeper re-enqueued the image because it looked stuck.
    requeues: Mapped[int] = mapped_column(default=0)
    output_key: Mapped[str | None] = mapped_column(Text)
    #: The shared output the image points at; None for outputs stored per request (before reuse).
    output_id: Mapped[int | None] = mapped_column(ForeignKey("image_outputs.id"), index=True)
    #: The output was made for an earlier image (of this request or another of the same caller).
    reused: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    kept_source: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    #: An earlier image of the same caller (this request's or a retained one's) whose source looks the same.
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ImageRendition(EncodedFiguresColumns, db.Model):
    """An output of an image beyond its first (``Image.output_id``): a named rendition of a request that asked
    for several, recorded with the image."""

    __tablename__ = "image_renditions"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    #: The rendition's place in the request's list: 1 for the second (the first is the image's own output).
    position: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    output_id: Mapped[int] = mapped_column(ForeignKey("image_outputs.id"), index=True)
    output_key: Mapped[str] = mapped_column(Text)
    reused: Mapped[bool] = mapped_column(default=False)


class ImageHashBand(db.Model):
    """One band of an image's perceptual hash (see ``imaging.perceptual_hash.bands``), looked up exactly: two
    hashes near enough to be duplicates share at least one band, so candidates are found by index."""

    __tablename__ = "image_hash_bands"
    __table_args__ = (Index("ix_image_hash_bands_owner_band_value", "owner", "band", "value"),)

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    band: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]
    #: The image's caller ("" for the open service): duplicates are never looked for across callers.
    owner: Mapped[str] = mapped_column(String(64))


#: An output a worker is encoding: not stored yet, and its claim not given up (taken over, or abandoned).
ENCODING_OUTPUT = "stored_at IS NULL AND superseded_at IS NULL"


class ImageOutput(EncodedFiguresColumns, db.Model):
    """An encoded output, shared by every image of one caller with the same source bytes and options.

    ``variant`` is an HMAC of (caller, the source's SHA-256, the options) under the service's secret:
    equal variants are the same work. The stored object's key is derived from it and the row id, so it
    cannot be guessed and no later row ever writes an object a deleted row's clean-up still removes.
    """

    __tablename__ = "image_outputs"
    __table_args__ = (
        # One encode of a variant at a time: a second worker waits for the first one's output.
        Index(
            "uq_image_outputs_variant_encoding",
            "variant",
            unique=True,
            postgresql_where=text(ENCODING_OUTPUT),
            sqlite_where=text(ENCODING_OUTPUT),
        ),
        # The sweep finds given-up and dead claims by age: only rows not stored are indexed, and they are few.
        Index(
            "ix_image_outputs_not_stored_created_at",
            "created_at",
            postgresql_where=text("stored_at IS NULL"),
            sqlite_where=text("stored_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    variant: Mapped[str] = mapped_column(String(64), index=True)
    storage_key: Mapped[str] = mapped_column(Text)
    #: When the object was stored; None while it is being encoded.
    stored_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: When the claim was given up: taken over as a dead worker's, abandoned after a store whose outcome is
    #: unknown, or retired by retention. The row stays, never stored, naming its key until the sweep has
    #: deleted whatever was stored under it (``lifecycle/orphans.py``); its id and key are never another claim's.
    superseded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    kept_source: Mapped[bool] = mapped_column(default=False)
    #: The image claim the encode was started for (image id and claim token): the encode's claim holds only
    #: while that image claim does. None on rows from before, whose claims hold until they are stale.
    encoder_image_id: Mapped[int | None] = mapped_column(BigId)
    encoder_claim_token: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: Raised by every lookup that may point an image at it; clean-up leaves recently used outputs alone.
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class CallerOwned:
    """A row kept per caller: what one tenant stored is never found by another."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The caller: its API key's SHA-256, or "" when the service is open.
    owner: Mapped[str] = mapped_column(String(64))


class SourceVersion(CallerOwned, db.Model):
    """What a caller's URL answered last: its validators for a conditional GET, and its bytes' SHA-256."""

    __tablename__ = "source_versions"
    __table_args__ = (UniqueConstraint("owner", "url_hash", name="uq_source_versions_owner_url_hash"),)

    url_hash: Mapped[str] = mapped_column(String(64))
    etag: Mapped[str | None] = mapped_column(Text)
    last_modified: Mapped[str | None] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class IdempotencyKey(CallerOwned, db.Model):
    """An upload's ``Idempotency-Key``: the request it made, and the answer to give it again."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("owner", "key", name="uq_idempotency_keys_owner_key"),)

    key: Mapped[str] = mapped_column(String(255))
    #: SHA-256 of the file and the options: the same key with another body is refused.
    fingerprint: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    #: The JSON body of the first answer.
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)


class ProductImage(db.Model):
    """An image URL at its place in a product's list."""

    __tablename__ = "product_images"
    __table_args__ = (Index("ix_product_images_product_position", "product_id", "position", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    position: Mapped[int]
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)


class WebhookEvent(db.Model):
    """An outbox row: one event to deliver, its retry schedule kept here rather than in the broker."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_events_in_flight_until", "in_flight_until"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    #: The exact body sent on every attempt.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts_made: Mapped[int] = mapped_column(default=0)
    #: Attempts this event may make; a manual re-send raises it by one.
    attempts_allowed: Mapped[int]
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: When the due attempt was handed to the broker; the sweeper re-sends only if it was lost.
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: ``url``'s host, in lower case: attempts in flight are bounded per receiving host.
    host: Mapped[str] = mapped_column(String(255), default="", server_default=text("''"))
    #: The attempt claimed last is in flight until it is recorded or, if its worker died, its lease ends.
    in_flight_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: When a caller last asked for one more attempt; re-sends are spaced by a cooldown.
    resent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WebhookAttempt(db.Model):
    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_event_attempt", "event_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int]


class Lease(db.Model):
    """A named lease on a job that must never run twice at once (the sweep), by the database clock."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Where the job's last run stopped, for one that goes through a long list a part per run.
    position: Mapped[str | None] = mapped_column(Text)


class ReceivedWebhook(CallerOwned, db.Model):
    """What the built-in receiver got, kept so that a person can see the webhook arrive.

    Its owner is that of the request the delivery is about, whose secret its signature verified with.
    """

    __tablename__ = "received_webhooks"
    __table_args__ = (Index("ix_received_webhooks_owner_id", "owner", "id"),)

    webhook_id: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    signature_valid: Mapped[bool | None]
    body: Mapped[str] = mapped_column(Text)
