"""Orphaned objects: what given-up output claims stored, and objects under ``objects/`` that no row names.

An output's row names its object's key from its claim until the object is known gone. An output leaves use
in two steps. It is *given up* first (``stored_at`` empty, ``superseded_at`` set), by one conditional
``UPDATE``: no lookup finds it and no worker marks it stored any more, yet its row still names the key.
Then its object is deleted, and only then its row. Claims are given up by their own worker after a store
whose outcome is unknown (a timeout), by a take-over, by retention, and here: a claim still encoding past
the hard time limit is a dead worker's (one killed between its store and ``mark_stored``).

The sweep deletes the objects of given-up claims once no task can still be writing them (the hard time limit
and a minute after the claim), a batch per run. A listing pass goes through ``objects/`` a page per run and
deletes the objects no row names, older than the same grace: what an older version left behind, or a delete
that failed after its row went.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, select, update

from database import db_now
from lifecycle import leases
from models import ImageOutput, db, utcnow
from outputs import encode_claims
from storage import Storage, StorageError, shared_output_id

log = logging.getLogger(__name__)

#: Given-up claims one run deletes the objects of, at most.
CLAIMS_PER_RUN = 200
#: Keys one listing run goes through; the listing runs at most this often (a lease spaces it out across
#: sweepers, and keeps where it stopped).
OBJECTS_PER_LISTING = 1000
LISTING_EVERY_S = 60.0
LISTING_LEASE = "object-listing"

#: An output out of use whose row still names its key: its object may exist.
GIVEN_UP = and_(ImageOutput.stored_at.is_(None), ImageOutput.superseded_at.is_not(None))


@dataclass
class OrphanReport:
    #: Claims still encoding past the hard time limit: their workers are dead, and they were given up.
    dead_claims: int = 0
    #: Given-up claims whose object (if it was stored) and row were deleted.
    given_up: int = 0
    #: Objects under ``objects/`` that no row named, deleted.
    unnamed: int = 0
    errors: list[str] = field(default_factory=list)

    def deleted(self) -> int:
        """Objects deleted, or found gone, with the rows that named them."""
        return self.given_up + self.unnamed


@dataclass(frozen=True)
class Removed:
    count: int
    #: The store's error that stopped the removal, if one did.
    error: str | None = None


def give_up(*conditions) -> list[tuple[int, str]]:
    """Take the outputs matching ``conditions`` out of use, keeping their keys; returns their ids and keys."""
    rows = db.session.execute(
        update(ImageOutput)
        .where(*conditions)
        .values(stored_at=None, superseded_at=utcnow())
        .returning(ImageOutput.id, ImageOutput.storage_key)
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return [(output_id, key) for output_id, key in rows]


def delete_given_up(rows: list[tuple[int, str]], storage: Storage, deadline: float | None = None) -> Removed:
    """Delete the objects of given-up outputs, then the rows of those whose object is gone. Stops at the first
    object the store does not delete (or at ``deadline``): the rest keep naming their keys for the next run."""
    gone: list[int] = []
    error = None
    for output_id, key in rows:
        if deadline is not None and time.monotonic() >= deadline:
            break
        try:
            storage.delete(key)
        except StorageError as failure:
            error = str(failure)
            break
        gone.append(output_id)
    if gone:
        db.session.execute(
            delete(ImageOutput).where(ImageOutput.id.in_(gone), GIVEN_UP).execution_options(synchronize_session=False)
        )
        db.session.commit()
    return Removed(len(gone), error)


def sweep_orphans(storage: Storage, older_than_s: float, budget_s: float) -> OrphanReport:
    """Give up dead claims, delete what given-up claims older than ``older_than_s`` stored, then go through a
    page of ``objects/`` for objects no row names; for at most about ``budget_s``."""
    report = OrphanReport()
    deadline = time.monotonic() + budget_s
    cutoff = db_now(-older_than_s)
    dead = (encode_claims.still_encoding(), ImageOutput.created_at < cutoff)
    batch = select(ImageOutput.id).where(*dead).order_by(ImageOutput.created_at).limit(CLAIMS_PER_RUN)
    report.dead_claims = len(give_up(ImageOutput.id.in_(batch.scalar_subquery()), *dead))
    rows = db.session.execute(
        select(ImageOutput.id, ImageOutput.storage_key)
        .where(GIVEN_UP, ImageOutput.created_at < cutoff)
        .order_by(ImageOutput.created_at)
        .limit(CLAIMS_PER_RUN)
    ).all()
    db.session.rollback()
    removed = delete_given_up([(output_id, key) for output_id, key in rows], storage, deadline)
    report.given_up = removed.count
    if removed.error is not None:
        report.errors.append(removed.error)
        log.warning("sweep: the objects of given-up outputs are kept for the next run: %s", removed.error)
        return report
    if time.monotonic() < deadline:
        # An object's age is by the storage's own clock, against this process's.
        objects_cutoff = utcnow() - timedelta(seconds=older_than_s)
        delete_unnamed_objects(storage, objects_cutoff, deadline - time.monotonic(), report)
    return report


def delete_unnamed_objects(storage: Storage, modified_before: datetime, budget_s: float, report: OrphanReport) -> None:
    """Go through the next page of ``objects/`` (at most once a minute over all sweepers, from where the last run
    stopped) and delete the objects no row names, last written before ``modified_before``."""
    deadline = time.monotonic() + budget_s
    holder = f"listing-{uuid.uuid4().hex}"
    # The lease is left to expire, not released: it spaces the listings out, across every sweeper.
    if not leases.try_acquire(LISTING_LEASE, holder, ttl_s=LISTING_EVERY_S):
        return
    start_after = leases.position(LISTING_LEASE) or ""
    try:
        listed = storage.list_objects(start_after, OBJECTS_PER_LISTING)
    except StorageError as error:
        report.errors.append(str(error))
        log.warning("sweep: the store's objects were not listed: %s", error)
        return
    ids = {item.key: shared_output_id(item.key) for item in listed}
    # A row names its key from its claim, before anything is stored under it, until the object is gone.
    named = set(
        db.session.scalars(
            select(ImageOutput.storage_key).where(ImageOutput.id.in_({i for i in ids.values() if i is not None}))
        )
    )
    db.session.rollback()
    reached: str | None = start_after
    for item in listed:
        if time.monotonic() >= deadline:
            break
        if ids[item.key] is not None and item.key not in named and item.modified_at < modified_before:
            try:
                storage.delete(item.key)
            except StorageError as error:
                report.errors.append(str(error))
                log.warning("sweep: an object no output names was not removed: %s", error)
                break
            report.unnamed += 1
        reached = item.key
    else:
        if len(listed) < OBJECTS_PER_LISTING:
            reached = None  # the end of the listing: the next run starts over
    leases.record_position(LISTING_LEASE, holder, reached)
