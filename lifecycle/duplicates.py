"""Near-duplicates: when a request that looks for them is final, each of its images whose source's perceptual hash
is within ``perceptual_hash.MAX_DISTANCE`` of an earlier image's is flagged with the first such image: an
earlier one of the same request, or one of the same caller's retained requests under another URL (the same
URL again is a listing sent again). Never across callers.

The hashes are found by index, not by scanning the caller's history: each image's hash is stored as
``perceptual_hash.BANDS`` bands, and two hashes near enough share at least one band exactly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select, tuple_, update

from imaging import perceptual_hash
from models import Image, ImageHashBand, Request, db

#: Images whose bands are looked up in one query.
IMAGES_PER_QUERY = 500


@dataclass(frozen=True)
class _Hashed:
    image_id: int
    phash: int
    #: When its request was made: of two candidates, the one of the earlier request is the first.
    made_at: datetime
    source_url: str
    #: The image it was flagged as a duplicate of, if any.
    duplicate_of: int | None = None


def flag_request(request_id: uuid.UUID, owner: str) -> int:
    """Record the bands of the request's hashed images and flag its near-duplicates, in the caller's
    transaction; returns how many were flagged."""
    made_at = db.session.scalar(select(Request.created_at).where(Request.id == request_id))
    hashed = [
        _Hashed(row.id, perceptual_hash.from_signed(row.phash), made_at, row.source_url)
        for row in db.session.execute(
            select(Image.id, Image.phash, Image.source_url)
            .where(Image.request_id == request_id, Image.phash.is_not(None))
            .order_by(Image.id)
        )
    ]
    if not hashed:
        return 0
    ids = [image.image_id for image in hashed]
    db.session.execute(delete(ImageHashBand).where(ImageHashBand.image_id.in_(ids)))
    db.session.execute(
        insert(ImageHashBand),
        [
            {"image_id": image.image_id, "band": band, "value": value, "owner": owner}
            for image in hashed
            for band, value in enumerate(perceptual_hash.bands(image.phash))
        ],
    )
    flagged = 0
    for start in range(0, len(hashed), IMAGES_PER_QUERY):
        part = hashed[start : start + IMAGES_PER_QUERY]
        candidates = _candidates(part, owner)
        for image in part:
            first = _first_near(image, candidates)
            if first is not None:
                db.session.execute(update(Image).where(Image.id == image.image_id).values(duplicate_of_id=first))
                flagged += 1
    return flagged


def _candidates(images: list[_Hashed], owner: str) -> list[_Hashed]:
    """The caller's hashed images sharing a band with any of ``images``."""
    pairs = {(band, value) for image in images for band, value in enumerate(perceptual_hash.bands(image.phash))}
    rows = db.session.execute(
        select(Image.id, Image.phash, Request.created_at, Image.source_url, Image.duplicate_of_id)
        .join(Request, Request.id == Image.request_id)
        .where(
            Image.id.in_(
                select(ImageHashBand.image_id).where(
                    ImageHashBand.owner == owner, tuple_(ImageHashBand.band, ImageHashBand.value).in_(pairs)
                )
            )
        )
    ).all()
    return [
        _Hashed(row.id, perceptual_hash.from_signed(row.phash), row.created_at, row.source_url, row.duplicate_of_id)
        for row in rows
    ]


def _first_near(image: _Hashed, candidates: list[_Hashed]) -> int | None:
    """The first earlier image near ``image``: of an earlier request, or earlier in the same one. The same URL in
    an earlier request is the same listing sent again: not a duplicate, it keeps what that one was flagged."""
    sent_again = [
        other
        for other in candidates
        if other.source_url == image.source_url and other.made_at < image.made_at and other.phash == image.phash
    ]
    if sent_again:
        return min(sent_again, key=lambda other: (other.made_at, other.image_id)).duplicate_of
    earlier = [
        other
        for other in candidates
        if (other.made_at, other.image_id) < (image.made_at, image.image_id)
        and other.source_url != image.source_url
        and perceptual_hash.hamming(other.phash, image.phash) <= perceptual_hash.MAX_DISTANCE
    ]
    return min(earlier, key=lambda other: (other.made_at, other.image_id)).image_id if earlier else None
