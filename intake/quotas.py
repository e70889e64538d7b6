"""What one caller may have in flight: a bound on the images its requests have not finished."""

from __future__ import annotations

from sqlalchemy import func, select

from errors import ApiError
from intake.csv_input import ProductRow
from models import Image, ImageStatus, Request, db

IN_FLIGHT = (ImageStatus.PENDING, ImageStatus.PROCESSING)


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


def check_active_images(owner_key_hash: str | None, rows: list[ProductRow], limit: int) -> None:
    """Refuse an upload that would take its caller past ``limit`` images in flight (0: no limit).

    Raises:
        ApiError: 429 ``quota_exceeded``, with the figures in the message and details.
    """
    if limit == 0:
        return
    # An image is a distinct URL of the request, as the workers count them.
    requested = len({url for row in rows for url in row.image_urls})
    active = active_image_count(owner_key_hash)
    if active + requested > limit:
        raise ApiError(
            429,
            "quota_exceeded",
            f"This upload has {requested} images and {active} are still in flight; at most {limit} may be "
            "in flight at once. Wait for earlier requests to finish, or upload fewer images.",
            details=[{"active": active, "requested": requested, "limit": limit}],
        )
