"""What one caller may have in flight: a bound on the images its requests have not finished.

A check and the write it allows are one transaction, and two of one caller's never overlap: on
PostgreSQL a transaction-scoped advisory lock per caller (released at commit or rollback, so it
holds behind PgBouncer in transaction mode too); on SQLite every writing transaction begins
``IMMEDIATE``, holding the one write lock from its first statement.
"""

from __future__ import annotations

import zlib

from sqlalchemy import func, select, text

from errors import ApiError
from intake.csv_input import ProductRow
from models import Image, ImageStatus, Request, db

IN_FLIGHT = (ImageStatus.PENDING, ImageStatus.PROCESSING)
# The two-key form of the advisory locks, so that these never meet the dispatcher's one-key lock.
_QUOTA_LOCK_CLASS = 0x1A9E6


def active_image_count(owner_key_hash: str | None) -> int:
    """Images of the owner's requests that are queued or processing, or still being imported; None counts
    every open-mode request."""
    owner = Request.owner_key_hash.is_(None) if owner_key_hash is None else Request.owner_key_hash == owner_key_hash
    # One query on the images' (status, ...) and requests' owner indexes.
    stored = db.session.scalar(
        select(func.count(Image.id))
        .join(Request, Request.id == Image.request_id)
        .where(Image.status.in_(IN_FLIGHT), owner)
    )
    importing = db.session.scalar(
        select(func.coalesce(func.sum(Request.total_images), 0)).where(Request.importing.is_(True), owner)
    )
    return stored + importing


def lock_owner(owner_key_hash: str | None) -> None:
    """Hold the owner's quota until this transaction ends, so that no other check of it runs meanwhile."""
    if db.session.get_bind().dialect.name != "postgresql":
        return  # SQLite: the transaction already holds the write lock (``database.configure_engine``)
    # A collision of two owners' keys only makes them wait for each other.
    key = zlib.crc32((owner_key_hash or "").encode()) - 2**31
    db.session.execute(text("SELECT pg_advisory_xact_lock(:class, :key)"), {"class": _QUOTA_LOCK_CLASS, "key": key})


def check_active_images(owner_key_hash: str | None, rows: list[ProductRow], limit: int) -> None:
    """Refuse an upload that would take its caller past ``limit`` images in flight (0: no limit).

    The caller's quota stays locked until the transaction that writes the upload ends.

    Raises:
        ApiError: 429 ``quota_exceeded``, with the figures in the message and details.
    """
    # An image is a distinct URL of the request, as the workers count them.
    requested = len({url for row in rows for url in row.image_urls})
    check_more_images(owner_key_hash, requested, limit, f"This upload has {requested} images", "upload fewer images")


def check_more_images(owner_key_hash: str | None, requested: int, limit: int, asking: str, remedy: str) -> None:
    """Lock the owner's quota for this transaction and refuse ``requested`` more images past ``limit`` (0: none).

    ``asking`` says what asks for them and ``remedy`` what else the caller can do.
    A refusal rolls the transaction back.

    Raises:
        ApiError: 429 ``quota_exceeded``, with the figures in the message and details.
    """
    if limit == 0:
        return
    lock_owner(owner_key_hash)
    active = active_image_count(owner_key_hash)
    if active + requested > limit:
        db.session.rollback()
        raise ApiError(
            429,
            "quota_exceeded",
            f"{asking} and {active} are still in flight; at most {limit} may be "
            f"in flight at once. Wait for earlier requests to finish, or {remedy}.",
            details=[{"active": active, "requested": requested, "limit": limit}],
        )
