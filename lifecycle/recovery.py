"""Images a dead worker abandoned or that never finish: given back to the dispatcher, or failed."""

from __future__ import annotations

from sqlalchemy import select, update

from database import db_now
from lifecycle.claims import fail_image, touch_requests
from models import ACTIVE_IMAGE_STATUSES, Image, ImageStatus, db


def release_stale_images(stale_after_s: float, limit: int = 5000) -> list[int]:
    """PROCESSING images whose lease is older than ``stale_after_s``: back to waiting; returns their ids.

    No task outlives the hard time limit, which is below ``stale_after_s``, so such an image was
    abandoned by a dead worker. One UPDATE ... RETURNING decides, by the database's clock, so two
    overlapping sweeps never both release (and re-send) the same image. Each release raises the
    image's fencing token: should the worker wake after all (frozen, not dead), its writes are refused.
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
            claim_token=Image.claim_token + 1,
            queued_at=None,
            requeues=Image.requeues + 1,
            updated_at=db_now(),
        )
        .returning(Image.id, Image.request_id)
        .execution_options(synchronize_session=False)
    ).all()
    if ids:
        touch_requests([request_id for _, request_id in ids])
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
