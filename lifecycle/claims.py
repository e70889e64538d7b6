"""An image's work: claimed by one task, given back for a retry, or finished as completed or failed."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, case, delete, func, insert, or_, select, update

from database import db_now
from lifecycle.finalize import finalize_request
from models import ACTIVE_IMAGE_STATUSES, Image, ImageRendition, ImageStatus, Request, RequestStatus, db, utcnow
from output_plan.plan import OutputPlan
from outputs import encode_claims, variants
from outputs.making import MadeRendition

log = logging.getLogger(__name__)


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
    compliance: dict | None = None
    phash: int | None = None


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
    options: variants.OutputOptions | variants.RenditionOptions
    #: The claim's fencing token: every write this worker makes for the image holds only while it is current.
    claim_token: int
    #: What the source URL answered this caller last (its validators), read with the claim.
    known: variants.KnownSource | None = None
    #: The request's renditions, canvas and checks; None for one plain output (``options``), as before. With a
    #: plan, ``options`` are its first rendition's.
    plan: OutputPlan | None = None


def image_status(image_id: int) -> str | None:
    """The image's status now (None if it is gone)."""
    status = db.session.scalar(select(Image.status).where(Image.id == image_id))
    db.session.rollback()
    return status


def claim_image(image_id: int, task_id: str, max_attempts: int, public_base_url: str) -> ImageWork | None:
    """Mark an image PROCESSING for this task and count the start before any work starts.

    A PENDING image can be claimed by any task; a PROCESSING one only by the task that claimed it
    (Celery re-delivers a message with its task id after a worker died), so a second copy sent by
    the sweeper never runs beside the first. Only starts that died count against ``max_attempts``:
    a start that ended in a scheduled retry did not. Returns None when there is nothing to do: the
    image is final, claimed by another task, gone, or out of attempts, in which case it is failed
    here, so a poison image cannot loop. The lease is stamped by the database's clock. Every claim
    raises the image's fencing token, even a redelivery's: an earlier run of the same task that is
    still alive (frozen, then woken) no longer holds the image.
    """
    works = claim_images([image_id], task_id, max_attempts, public_base_url)
    return works[0] if works else None


def claim_images(image_ids: list[int], task_id: str, max_attempts: int, public_base_url: str) -> list[ImageWork]:
    """``claim_image`` for a batch, in one transaction: the works of the images claimed, in the order given.

    The images not claimed are skipped as ``claim_image`` skips them, and failed if out of attempts.
    """
    claimable = or_(
        Image.status == ImageStatus.PENDING,
        and_(Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id),
    )
    # In id order, as every writer of many images locks them, so that two never deadlock.
    db.session.execute(select(Image.id).where(Image.id.in_(image_ids)).order_by(Image.id).with_for_update())
    claimed = db.session.execute(
        update(Image)
        .where(Image.id.in_(image_ids), claimable, Image.attempts - Image.retries < max_attempts)
        .values(
            status=ImageStatus.PROCESSING,
            claimed_by=task_id,
            claim_token=Image.claim_token + 1,
            attempts=Image.attempts + 1,
            not_before=None,
            updated_at=db_now(),
        )
        .returning(Image.id, Image.request_id, Image.source_url, Image.attempts, Image.retries, Image.claim_token)
        .execution_options(synchronize_session=False)
    ).all()
    request_ids = sorted({row.request_id for row in claimed})
    # One request at a time, in one order everywhere, so two batches' transactions never deadlock.
    for request_id in request_ids:
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
    chosen = {
        row.id: row
        for row in db.session.execute(
            select(
                Request.id,
                Request.owner_key_hash,
                Request.output_format,
                Request.quality,
                Request.target_score,
                Request.max_dimension,
                Request.never_bigger,
                Request.output_plan,
            ).where(Request.id.in_(request_ids))
        ).all()
    }
    known = variants.known_sources(
        [(variants.owner_of(chosen[row.request_id].owner_key_hash), row.source_url) for row in claimed]
    )
    db.session.commit()
    if len(claimed) < len(image_ids):
        _fail_exhausted(sorted(set(image_ids) - {row.id for row in claimed}), task_id, max_attempts, public_base_url)
    works = {}
    plans = {
        request.id: OutputPlan.from_described(request.output_plan)
        for request in chosen.values()
        if request.output_plan is not None
    }
    for row in claimed:
        request = chosen[row.request_id]
        plan = plans.get(row.request_id)
        options: variants.OutputOptions | variants.RenditionOptions
        if plan is not None:
            options = variants.RenditionOptions.of(plan, 0)
        else:
            options = variants.OutputOptions(
                output_format=request.output_format,
                quality=request.quality,
                target_score=request.target_score,
                max_dimension=request.max_dimension,
                never_bigger=request.never_bigger,
            )
        owner = variants.owner_of(request.owner_key_hash)
        works[row.id] = ImageWork(
            row.id,
            row.request_id,
            row.source_url,
            row.attempts,
            row.retries,
            owner,
            options,
            row.claim_token,
            known.get((owner, row.source_url)),
            plan,
        )
    return [works[image_id] for image_id in image_ids if image_id in works]


def _fail_exhausted(image_ids: list[int], task_id: str, max_attempts: int, public_base_url: str) -> None:
    """Fail those of the images not claimed that are out of attempts, waiting or held by this task."""
    exhausted = db.session.scalars(
        select(Image.id).where(
            Image.id.in_(image_ids),
            Image.status.in_(ACTIVE_IMAGE_STATUSES),
            Image.attempts - Image.retries >= max_attempts,
            or_(Image.status == ImageStatus.PENDING, Image.claimed_by == task_id),
        )
    ).all()
    db.session.rollback()
    for image_id in exhausted:
        _fail_if_exhausted(image_id, task_id, max_attempts, public_base_url)


def _fail_if_exhausted(image_id: int, task_id: str, max_attempts: int, public_base_url: str) -> None:
    image = db.session.get(Image, image_id)
    exhausted = (
        image is not None and image.status in ACTIVE_IMAGE_STATUSES and image.attempts - image.retries >= max_attempts
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


def take_next_queued(task_id: str, max_attempts: int, public_base_url: str) -> list[ImageWork]:
    """Claim, for a batch still running, the images of the message next in the queue: their downloads then
    overlap the batch's encodes. That message, when it is delivered, finds them taken. An image with a start
    that died is left to go alone."""
    not_suspect = (Image.requeues == 0, Image.attempts == Image.retries)
    queued = (Image.status == ImageStatus.PENDING, Image.queued_at.is_not(None), Image.queued_in.is_not(None))
    next_message = (
        select(Image.queued_in).where(*queued, *not_suspect).order_by(Image.queued_at, Image.id).limit(1)
    ).scalar_subquery()
    image_ids = db.session.scalars(
        select(Image.id).where(*queued, *not_suspect, Image.queued_in == next_message).order_by(Image.id)
    ).all()
    db.session.rollback()
    return claim_images(list(image_ids), task_id, max_attempts, public_base_url) if image_ids else []


def held_by_earlier_run(task_id: str) -> bool:
    """Whether an earlier run of this very message claimed images (its own, or some it took from the queue's
    next message) and never finished them: it died under them."""
    held = db.session.scalar(
        select(func.count()).where(Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id)
    )
    db.session.rollback()
    return bool(held)


def release_batch(image_ids: list[int], task_id: str) -> list[int]:
    """Give a batch's images back to waiting, as released (so each goes alone next time); returns their ids.

    Those still queued for it and those its earlier run claimed and never finished. Each release raises the
    image's fencing token, so nothing a run of the batch still does for it is kept.
    """
    ours = or_(
        and_(Image.id.in_(image_ids), Image.status == ImageStatus.PENDING, Image.queued_at.is_not(None)),
        and_(Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id),
    )
    db.session.execute(select(Image.id).where(ours).order_by(Image.id).with_for_update())
    released = db.session.execute(
        update(Image)
        .where(ours)
        .values(
            status=ImageStatus.PENDING,
            claimed_by=None,
            claim_token=Image.claim_token + 1,
            queued_at=None,
            queued_in=None,
            requeues=Image.requeues + 1,
            updated_at=db_now(),
        )
        .returning(Image.id, Image.request_id)
        .execution_options(synchronize_session=False)
    ).all()
    if released:
        touch_requests(sorted({request_id for _, request_id in released}))
    db.session.commit()
    return [image_id for image_id, _ in released]


def give_back_unstarted(works: list[ImageWork], task_id: str) -> None:
    """Give back claimed images this run never got to (its time ran out): waiting again, the start not counted.

    An image taken over meanwhile (its token raised) is not this run's to give back, and its request is left
    as it is: a final request's version must not move when a late worker wakes up.
    """
    given_back: set[uuid.UUID] = set()
    for work in sorted(works, key=lambda work: work.image_id):
        row = db.session.execute(
            update(Image)
            .where(
                Image.id == work.image_id,
                Image.status == ImageStatus.PROCESSING,
                Image.claim_token == work.claim_token,
            )
            .values(
                status=ImageStatus.PENDING,
                claimed_by=None,
                claim_token=Image.claim_token + 1,
                queued_at=None,
                queued_in=None,
                attempts=Image.attempts - 1,
                updated_at=db_now(),
            )
            .returning(Image.request_id)
        ).first()
        if row is not None:
            given_back.add(row[0])
    if given_back:
        touch_requests(sorted(given_back))
    db.session.commit()


@dataclass(frozen=True)
class Finished:
    """An image's output, made or reused, waiting for its batch's next flush."""

    work: ImageWork
    output_key: str
    output_id: int
    figures: ImageFigures
    #: An output encoded and stored for this image, to be marked stored with these figures in the flush.
    to_mark: variants.EncodedFigures | None = None
    #: The image's other renditions (its request's plan asked several), recorded with it.
    renditions: tuple[MadeRendition, ...] = ()


@dataclass(frozen=True)
class Completion:
    """What a flush could not record: images refused (cancelled, or their claim superseded), and images whose
    output's claim was taken over while they were encoded (their image claims may still hold)."""

    refused: list[Finished]
    output_superseded: list[Finished]


def complete_images(finished: list[Finished], public_base_url: str) -> Completion:
    """``complete_image`` for many, in one transaction, each request's counters moved once, the outputs made
    for them marked stored in the same transaction."""
    refused: list[Finished] = []
    output_superseded: list[Finished] = []
    now = utcnow()
    changes: dict[uuid.UUID, dict[str, int]] = {}
    for item in sorted(finished, key=lambda item: item.work.image_id):
        figures = item.figures
        if item.to_mark is not None and encode_claims.mark_stored(item.output_id, item.to_mark, commit=False) is None:
            output_superseded.append(item)
            continue
        row = db.session.execute(
            update(Image)
            .where(
                Image.id == item.work.image_id,
                Image.status == ImageStatus.PROCESSING,
                Image.claim_token == item.work.claim_token,
            )
            .values(
                status=ImageStatus.COMPLETED,
                output_key=item.output_key,
                output_id=item.output_id,
                error_code=None,
                error_message=None,
                bytes_in=figures.bytes_in,
                bytes_out=figures.bytes_out,
                width=figures.width,
                height=figures.height,
                quality=figures.quality,
                score=figures.score,
                kept_source=figures.kept_source,
                reused=figures.reused,
                compliance=figures.compliance,
                phash=figures.phash,
                finished_at=now,
                updated_at=now,
            )
            .returning(Image.request_id, Image.occurrences)
        ).first()
        if row is None:
            refused.append(item)
            continue
        if item.renditions:
            _record_renditions(item.work.image_id, item.renditions)
        counts = changes.setdefault(row.request_id, {"images": 0, "bytes_in": 0, "bytes_out": 0})
        counts["images"] += row.occurrences
        counts["bytes_in"] += figures.bytes_in
        counts["bytes_out"] += figures.bytes_out
    for request_id in sorted(changes):
        counts = changes[request_id]
        db.session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(
                completed_images=Request.completed_images + counts["images"],
                bytes_in=Request.bytes_in + counts["bytes_in"],
                bytes_out=Request.bytes_out + counts["bytes_out"],
                updated_at=now,
            )
        )
        finalize_request(request_id, public_base_url)
    db.session.commit()
    for item in refused:
        _discarded(item.work.image_id, "result")
    return Completion(refused, output_superseded)


def _record_renditions(image_id: int, renditions: tuple[MadeRendition, ...]) -> None:
    db.session.execute(delete(ImageRendition).where(ImageRendition.image_id == image_id))
    db.session.execute(
        insert(ImageRendition),
        [
            {
                "image_id": image_id,
                "position": made.position,
                "name": made.name,
                "output_id": made.output_id,
                "output_key": made.key,
                "reused": made.reused,
                **{name: getattr(made.figures, name) for name in RENDITION_FIGURES},
            }
            for made in renditions
        ],
    )


#: What a rendition's row keeps of its output's figures.
RENDITION_FIGURES = ("bytes_in", "bytes_out", "width", "height", "quality", "score")


def schedule_retry(
    image_id: int, task_id: str, delay_s: float, code: str, message: str, claim_token: int | None = None
) -> bool:
    """Give a transient failure back to the dispatcher, due after ``delay_s`` (database clock).

    The retry lives in the row, not in a broker countdown, so it survives the broker's loss and
    holds no worker while it waits. Returns False if the task no longer holds the image (with
    ``claim_token``, the claim that returned it: a later claim by a redelivery of the task supersedes it).
    """
    held = [Image.id == image_id, Image.status == ImageStatus.PROCESSING, Image.claimed_by == task_id]
    if claim_token is not None:
        held.append(Image.claim_token == claim_token)
    released = db.session.execute(
        update(Image)
        .where(*held)
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
        touch_requests([released[0]])
    db.session.commit()
    if released is None and claim_token is not None:
        _discarded(image_id, "retry")
    return released is not None


def touch_requests(request_ids: list[uuid.UUID]) -> None:
    """Move the requests' ``updated_at``, which versions their status pages, after a change of their images."""
    db.session.execute(update(Request).where(Request.id.in_(set(request_ids))).values(updated_at=utcnow()))


def complete_image(
    image_id: int,
    output_key: str,
    public_base_url: str,
    figures: ImageFigures | None = None,
    output_id: int | None = None,
    claim_token: int | None = None,
) -> bool:
    """Record an image's output (and the shared output it points at); returns False if it was already final
    (or cancelled), or, with ``claim_token``, if that claim no longer holds the image."""
    changed = _finish_image(
        image_id,
        ImageStatus.COMPLETED,
        public_base_url,
        output_key=output_key,
        figures=figures,
        output_id=output_id,
        claim_token=claim_token,
    )
    db.session.commit()
    if not changed and claim_token is not None:
        _discarded(image_id, "result")
    return changed


def fail_image(image_id: int, code: str, message: str, public_base_url: str, claim_token: int | None = None) -> bool:
    """Record an image's failure with its code; returns False if it was already final, or, with
    ``claim_token``, if that claim no longer holds the image."""
    changed = _finish_image(
        image_id, ImageStatus.FAILED, public_base_url, error=(code, message), claim_token=claim_token
    )
    db.session.commit()
    if not changed and claim_token is not None:
        _discarded(image_id, f"failure ({code})")
    return changed


def _discarded(image_id: int, what: str) -> None:
    """Say once that a worker's write was refused because its claim was superseded (a cancel is no news)."""
    if image_status(image_id) != ImageStatus.CANCELLED:
        log.warning("image %s: a late %s from a superseded claim was discarded", image_id, what)


def _finish_image(
    image_id: int,
    status: ImageStatus,
    public_base_url: str,
    output_key: str | None = None,
    error: tuple[str, str] | None = None,
    figures: ImageFigures | None = None,
    output_id: int | None = None,
    claim_token: int | None = None,
) -> bool:
    """The image's move to a final status, with its request's counters; a worker's (``claim_token`` given)
    only while that claim still holds it, anyone else's (the sweeper's, a poison image's) while it is active."""
    now = utcnow()
    if claim_token is None:
        held = [Image.status.in_(ACTIVE_IMAGE_STATUSES)]
    else:
        held = [Image.status == ImageStatus.PROCESSING, Image.claim_token == claim_token]
    finished = db.session.execute(
        update(Image)
        .where(Image.id == image_id, *held)
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
