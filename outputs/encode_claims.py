"""Claiming the encode of a variant (``variants``): one worker encodes it, the others wait for its output.

A worker that meets a new variant inserts its output row first, under a unique index on the variants being
encoded; a second worker with the same bytes has that insert refused and waits for the first one's output. A
claim names the image claim it was made for and holds only while that one does (or, from before, until it is
stale); then the next worker takes the encode over under a new row and key. Each function ends the short
transaction it runs in; a look-up that finds no output and the claim that follows are one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from database import db_now
from models import ENCODING_OUTPUT, Image, ImageOutput, ImageRendition, ImageStatus, db, utcnow
from outputs import variants

#: How long a worker waits for another that is encoding the same variant, and how often it looks.
WAIT_FOR_PEER_S = 30.0
_PEER_POLL_S = 0.2


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


def wait_for_peer(variant: str, wait_s: float = WAIT_FOR_PEER_S) -> variants.StoredOutput | None:
    """While another worker encodes ``variant``, wait (up to ``wait_s``) for its output; None if there is none."""
    deadline = time.monotonic() + wait_s
    while True:
        stored = variants.find_stored(variant)
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
    None if another worker is encoding it. Goes on with the caller's transaction, and ends it.

    An encode whose image claim no longer holds (``_encoder_gone``), or started more than ``stale_after_s``
    ago (its worker died, or froze, holding a claim from before encoders were recorded), is superseded: its
    claim is marked so and a new one, with a new id and so a new key, inserted in the same transaction.
    Should the old worker wake, it stores under its own key, and ``mark_stored`` tells it its claim is gone.
    The old row stays until the sweep has deleted what its worker stored, so its id is never another claim's
    meanwhile (SQLite reuses the highest id once deleted).
    """
    output_id = _insert_claim(variant, encoder)
    if output_id is None:
        superseded = db.session.execute(
            update(ImageOutput)
            .where(
                ImageOutput.variant == variant,
                still_encoding(),
                or_(ImageOutput.created_at < db_now(-stale_after_s), _encoder_gone()),
            )
            .values(superseded_at=db_now())
            .execution_options(synchronize_session=False)
        ).rowcount
        output_id = _insert_claim(variant, encoder) if superseded else None
        if output_id is None:
            db.session.rollback()
            return None
    # An encode that finished after this worker looked for its output holds no claim any more: look again,
    # after the insert, so that one of the two always sees the other.
    if db.session.scalar(select(exists().where(ImageOutput.variant == variant, ImageOutput.stored_at.is_not(None)))):
        db.session.rollback()
        return None
    key = variants.output_key(variant, output_id, output_format)
    db.session.execute(update(ImageOutput).where(ImageOutput.id == output_id).values(storage_key=key))
    db.session.commit()
    return output_id, key


def _insert_claim(variant: str, encoder: Encoder | None) -> int | None:
    """Insert the claim of ``variant``'s encode unless one is still held (the unique index says so): its id.

    Stamped by the database's clock, as every staleness test is: a worker whose own clock runs slow would
    otherwise make claims that look stale to the others at once, and have its encodes taken over."""
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(ImageOutput)
        .values(
            variant=variant,
            storage_key="",
            created_at=db_now(),
            last_used_at=db_now(),
            kept_source=False,
            encoder_image_id=encoder.image_id if encoder else None,
            encoder_claim_token=encoder.claim_token if encoder else None,
        )
        .on_conflict_do_nothing(index_elements=[ImageOutput.variant], index_where=text(ENCODING_OUTPUT))
        .returning(ImageOutput.id)
    )
    return db.session.execute(statement).scalar_one_or_none()


def claim_or_find(
    variant: str,
    output_format: str,
    stale_after_s: float,
    wait_s: float = WAIT_FOR_PEER_S,
    encoder: Encoder | None = None,
    before_waiting: Callable[[], None] | None = None,
) -> variants.variants.StoredOutput | tuple[int, str]:
    """The stored output of ``variant`` if there is one (waiting up to ``wait_s`` for a worker encoding it),
    else the claim of its encode, as ``start_output`` returns it.

    ``before_waiting`` is called before any wait: a caller that marks its outputs stored later, several at a
    time, marks those it holds there, or it could wait for its own output, or two such workers for each other's.

    Raises:
        PeerStillEncoding: another worker is still encoding it after the wait.
    """
    for _round in range(3):
        stored = variants.find_stored(variant, commit=False)
        if stored is not None:
            db.session.commit()
            return stored
        started = start_output(variant, output_format, stale_after_s, encoder)
        if started is not None:
            return started
        if before_waiting is not None:
            before_waiting()
        stored = wait_for_peer(variant, wait_s)
        if stored is not None:
            return stored
    raise PeerStillEncoding("the output was claimed and given up three times")


def mark_stored(output_id: int, figures: variants.EncodedFigures, commit: bool = True) -> variants.StoredOutput | None:
    """The output's object is stored: later lookups of its variant find it. None if the claim was superseded
    (taken over as a dead worker's): nothing is marked, and the object stored under its key is the caller's
    alone. With ``commit=False`` the caller's transaction goes on, to be ended by the caller."""
    row = db.session.execute(
        update(ImageOutput)
        .where(ImageOutput.id == output_id, still_encoding())
        .values(stored_at=utcnow(), **dataclasses.asdict(figures))
        .returning(ImageOutput)
    ).scalar_one_or_none()
    stored = variants.as_stored(row) if row is not None else None
    if commit:
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
            ~exists().where(ImageRendition.output_id == ImageOutput.id),
        )
        .returning(ImageOutput.storage_key)
    ).scalar_one_or_none()
    db.session.commit()
    return key
