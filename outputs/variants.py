"""Outputs shared across requests: one encode per (caller, source bytes, options), and what a URL sent last.

An output is found by its *variant*, an HMAC-SHA256 of the caller, the source's SHA-256 and the options
under a key derived from the service's secret: the same work has the same variant, and without the secret
nobody can compute one. Reuse never crosses callers: each API key (and the open service) has variants of
its own, so one caller's reuse, and how fast its images finish, says nothing of another's uploads.

Each function is a short transaction of its own. Clean-up (``retention``) deletes an output only when no
image points at it and no lookup has touched it for a grace period, so a worker that found an output has
that long to point its image at it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from models import Image, ImageOutput, ImageStatus, SourceVersion, db, utcnow

#: Raised when an encoder change makes earlier outputs of the same options differ from new ones.
PIPELINE_VERSION = 1
_EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif"}
#: How long a worker waits for another that is encoding the same variant, and how often it looks.
WAIT_FOR_PEER_S = 30.0
_PEER_POLL_S = 0.2
#: A source version seen again unchanged is written again only this long after it was last written.
SOURCE_REFRESH = timedelta(days=1)


@dataclass(frozen=True)
class OutputOptions:
    """Everything that changes the encoded bytes."""

    output_format: str = "jpeg"
    #: None: chosen per image to reach ``target_score``.
    quality: int | None = 50
    target_score: float | None = None
    max_dimension: int | None = None
    never_bigger: bool = True

    def describe(self) -> dict[str, object]:
        return {
            "pipeline": PIPELINE_VERSION,
            "format": self.output_format,
            "quality": self.quality,
            "target_score": self.target_score,
            "max_dimension": self.max_dimension,
            "never_bigger": self.never_bigger,
        }


@dataclass(frozen=True)
class EncodedFigures:
    """What an encode made: the source's and the output's sizes, the output's pixels, quality and score."""

    bytes_in: int
    bytes_out: int
    width: int
    height: int
    quality: int | None
    score: float | None
    kept_source: bool


@dataclass(frozen=True)
class StoredOutput:
    """An output ready to point an image at."""

    id: int
    storage_key: str
    figures: EncodedFigures


@dataclass(frozen=True)
class KnownSource:
    """What a caller's URL answered the last time: the validators to send, and its bytes' hash."""

    etag: str | None
    last_modified: str | None
    content_sha256: str
    #: When it was last written; retention forgets versions not written for RETENTION_DAYS.
    updated_at: datetime | None = field(default=None, compare=False)

    def is_fresh(self, within: timedelta = SOURCE_REFRESH) -> bool:
        return self.updated_at is not None and self.updated_at > utcnow() - within


def variant_key(secret: bytes, owner: str, content_sha256: str, options: OutputOptions) -> str:
    """The variant of this work: equal for equal (caller, bytes, options), unguessable without ``secret``."""
    message = json.dumps([owner, content_sha256, options.describe()], sort_keys=True, separators=(",", ":"))
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def variant_secret(service_secret: str) -> bytes:
    """The key of the variants, derived from the service's secret (shared by every API and worker process)."""
    return hmac.new(service_secret.encode(), b"image-output-variants", hashlib.sha256).digest()


def owner_of(owner_key_hash: str | None) -> str:
    return owner_key_hash or ""


def _storage_key(variant: str, output_id: int, output_format: str) -> str:
    return f"objects/{variant[:2]}/{variant}-{output_id}.{_EXTENSIONS[output_format]}"


def _as_stored(row: ImageOutput) -> StoredOutput:
    figures = EncodedFigures(
        row.bytes_in or 0,
        row.bytes_out or 0,
        row.width or 0,
        row.height or 0,
        row.quality,
        row.score,
        row.kept_source,
    )
    return StoredOutput(row.id, row.storage_key, figures)


def find_stored(variant: str) -> StoredOutput | None:
    """The stored output of ``variant``, marked as just used so that clean-up leaves it alone; or None."""
    row = db.session.execute(
        update(ImageOutput)
        .where(
            ImageOutput.id
            == select(ImageOutput.id)
            .where(ImageOutput.variant == variant, ImageOutput.stored_at.is_not(None))
            .order_by(ImageOutput.id)
            .limit(1)
            .scalar_subquery()
        )
        .values(last_used_at=utcnow())
        .returning(ImageOutput)
    ).scalar_one_or_none()
    found = _as_stored(row) if row is not None else None
    db.session.commit()
    return found


class PeerStillEncoding(Exception):
    """Another worker has been encoding the same variant for longer than this one waited: try again later."""


@dataclass(frozen=True)
class Encoder:
    """The image claim an encode is made for: the encode's claim of its output holds only while that one does."""

    image_id: int
    claim_token: int


def still_encoding():
    """An encode's claim still held: not stored, not superseded (``models.ENCODING_OUTPUT``)."""
    return and_(ImageOutput.stored_at.is_(None), ImageOutput.superseded_at.is_(None))


def _encoder_gone():
    """The image claim the encode was started for no longer holds: its image was released, retried, claimed
    again or finished, so whatever that worker still does is discarded; nobody need wait for it."""
    return and_(
        ImageOutput.encoder_image_id.is_not(None),
        ~exists().where(
            Image.id == ImageOutput.encoder_image_id,
            Image.status == ImageStatus.PROCESSING,
            Image.claim_token == ImageOutput.encoder_claim_token,
        ),
    )


def _peer_encoding(variant: str) -> bool:
    busy = db.session.scalar(select(exists().where(ImageOutput.variant == variant, still_encoding(), ~_encoder_gone())))
    db.session.rollback()
    return bool(busy)


def wait_for_peer(variant: str, wait_s: float = WAIT_FOR_PEER_S) -> StoredOutput | None:
    """While another worker encodes ``variant``, wait (up to ``wait_s``) for its output; None if there is none."""
    deadline = time.monotonic() + wait_s
    while True:
        stored = find_stored(variant)
        if stored is not None or not _peer_encoding(variant):
            return stored
        if time.monotonic() >= deadline:
            raise PeerStillEncoding(f"another worker has been encoding this image for over {wait_s:.0f} s")
        time.sleep(_PEER_POLL_S)


class EncodeSuperseded(Exception):
    """This worker's claim of an encode was taken over as a dead worker's: its output is not the variant's."""


def start_output(
    variant: str, output_format: str, stale_after_s: float, encoder: Encoder | None = None
) -> tuple[int, str] | None:
    """Claim the encode of ``variant`` for ``encoder``: the new output's id and the key to store it under, or
    None if another worker is encoding it.

    An encode whose image claim no longer holds (``_encoder_gone``), or started more than ``stale_after_s``
    ago (its worker died, or froze, holding a claim from before encoders were recorded), is superseded: its
    claim is marked so and a new one, with a new id and so a new key, inserted in the same transaction.
    Should the old worker wake, it stores under its own key, and ``mark_stored`` tells it its claim is gone.
    The old row stays until the sweep has deleted what its worker stored, so its id is never another claim's
    meanwhile (SQLite reuses the highest id once deleted).
    """
    now = utcnow()
    # Undone by the rollback below if another worker's claim wins the insert.
    db.session.execute(
        update(ImageOutput)
        .where(
            ImageOutput.variant == variant,
            still_encoding(),
            or_(ImageOutput.created_at < now - timedelta(seconds=stale_after_s), _encoder_gone()),
        )
        .values(superseded_at=now)
        .execution_options(synchronize_session=False)
    )
    row = ImageOutput(
        variant=variant,
        storage_key="",
        created_at=now,
        last_used_at=now,
        kept_source=False,
        encoder_image_id=encoder.image_id if encoder else None,
        encoder_claim_token=encoder.claim_token if encoder else None,
    )
    db.session.add(row)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return None
    # An encode that finished after this worker looked for its output holds no claim any more: look again,
    # after the insert, so that one of the two always sees the other.
    if db.session.scalar(select(exists().where(ImageOutput.variant == variant, ImageOutput.stored_at.is_not(None)))):
        db.session.rollback()
        return None
    row.storage_key = _storage_key(variant, row.id, output_format)
    output_id, key = row.id, row.storage_key
    db.session.commit()
    return output_id, key


def claim_or_find(
    variant: str,
    output_format: str,
    stale_after_s: float,
    wait_s: float = WAIT_FOR_PEER_S,
    encoder: Encoder | None = None,
) -> StoredOutput | tuple[int, str]:
    """The stored output of ``variant`` if there is one (waiting up to ``wait_s`` for a worker encoding it),
    else the claim of its encode, as ``start_output`` returns it.

    Raises:
        PeerStillEncoding: another worker is still encoding it after the wait.
    """
    for _round in range(3):
        stored = find_stored(variant)
        if stored is not None:
            return stored
        started = start_output(variant, output_format, stale_after_s, encoder)
        if started is not None:
            return started
        stored = wait_for_peer(variant, wait_s)
        if stored is not None:
            return stored
    raise PeerStillEncoding("the output was claimed and given up three times")


def mark_stored(output_id: int, figures: EncodedFigures) -> StoredOutput | None:
    """The output's object is stored: later lookups of its variant find it. None if the claim was superseded
    (taken over as a dead worker's): nothing is marked, and the object stored under its key is the caller's
    alone."""
    row = db.session.execute(
        update(ImageOutput)
        .where(ImageOutput.id == output_id, still_encoding())
        .values(stored_at=utcnow(), **dataclasses.asdict(figures))
        .returning(ImageOutput)
    ).scalar_one_or_none()
    stored = _as_stored(row) if row is not None else None
    db.session.commit()
    return stored


def abandon_output(output_id: int, store_attempted: bool = True) -> None:
    """Give back the claim of an encode or store that failed. Before any store its row goes. After a store
    that failed, the object may be stored all the same (a timeout can come after the store took it): the row
    stays, given up like a superseded claim, naming its key until the sweep has deleted the object. A claim
    superseded meanwhile is left to the sweep: a take-over's claim has an id of its own, never touched here."""
    claim = (ImageOutput.id == output_id, still_encoding())
    if store_attempted:
        db.session.execute(update(ImageOutput).where(*claim).values(superseded_at=utcnow()))
    else:
        db.session.execute(delete(ImageOutput).where(*claim))
    db.session.commit()


def drop_if_unused(output_id: int) -> str | None:
    """Delete an output this worker made if nothing points at it and no lookup found it; returns its key to delete.

    A lookup raises ``last_used_at`` past ``created_at``, and both statements lock the row, so an output
    another worker just found is never dropped.
    """
    key = db.session.execute(
        delete(ImageOutput)
        .where(
            ImageOutput.id == output_id,
            ImageOutput.last_used_at == ImageOutput.created_at,
            ~exists().where(Image.output_id == ImageOutput.id),
        )
        .returning(ImageOutput.storage_key)
    ).scalar_one_or_none()
    db.session.commit()
    return key


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def known_source(owner: str, url: str) -> KnownSource | None:
    """What ``url`` answered this caller last, if it sent validators; None otherwise."""
    row = db.session.execute(
        select(
            SourceVersion.etag, SourceVersion.last_modified, SourceVersion.content_sha256, SourceVersion.updated_at
        ).where(SourceVersion.owner == owner, SourceVersion.url_hash == _url_hash(url))
    ).first()
    db.session.rollback()
    return KnownSource(*row) if row is not None else None


def remember_source(owner: str, url: str, etag: str | None, last_modified: str | None, content_sha256: str) -> None:
    """Keep what ``url`` answered (validators and bytes' hash) for the next conditional GET; forget it if it
    sent no validators."""
    where = and_(SourceVersion.owner == owner, SourceVersion.url_hash == _url_hash(url))
    if etag is None and last_modified is None:
        db.session.execute(delete(SourceVersion).where(where))
        db.session.commit()
        return
    values = {"etag": etag, "last_modified": last_modified, "content_sha256": content_sha256, "updated_at": utcnow()}
    updated = db.session.execute(update(SourceVersion).where(where).values(values)).rowcount
    if not updated:
        dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
        db.session.execute(
            dialect.insert(SourceVersion)
            .values(owner=owner, url_hash=_url_hash(url), **values)
            .on_conflict_do_update(index_elements=["owner", "url_hash"], set_=values)
        )
    db.session.commit()
