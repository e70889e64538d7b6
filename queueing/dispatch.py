"""Handing images to the broker a window at a time, fairly, so that the queue stays short.

The database decides what is queued: an image is marked queued (``queued_at``, by the database's
clock) before its message is published, and at most ``depth`` images sit queued at once. So a small
request uploaded behind a big one waits behind a short queue, not the big one's backlog; tenants
and requests share the window in turn; cancelling costs no purge; and an image queued long ago and
still not claimed can only mean a lost message (see ``release_lost_images``).
"""

from __future__ import annotations

import heapq
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import String, func, select, text, update

from database import db_now
from models import (
    ACTIVE_REQUEST_STATUSES,
    IN_FLIGHT_IMAGE,
    RELEASED_IMAGE,
    WAITING_IMAGE,
    Image,
    ImageStatus,
    Request,
    db,
)
from queueing import broker, task_names

#: Queued images kept even with nothing in progress, so idle workers start at once.
MIN_QUEUED = 4
# Any constant will do: it only has to be the same in every process.
_DISPATCH_LOCK_ID = 0x1A9E5


def min_queued(batch_size: int) -> int:
    """Images kept queued even with nothing in progress: a few, or two messages' worth."""
    return max(MIN_QUEUED, 2 * batch_size)


@dataclass(frozen=True)
class QueueState:
    """What the database holds as handed over: queued but unclaimed, and being processed."""

    queued: int
    processing: int


def queue_state() -> QueueState:
    """How many images are queued and how many are being processed, as the database sees it."""
    rows = db.session.execute(
        select(Image.status, func.count()).where(text(IN_FLIGHT_IMAGE)).group_by(Image.status)
    ).all()
    db.session.commit()
    counts = dict(rows)
    return QueueState(queued=counts.get(ImageStatus.PENDING, 0), processing=counts.get(ImageStatus.PROCESSING, 0))


@dataclass
class Load:
    """Images in flight per request and per tenant, and each request's released images due again."""

    by_request: dict[uuid.UUID, int] = field(default_factory=lambda: defaultdict(int))
    by_owner: dict[str | None, int] = field(default_factory=lambda: defaultdict(int))
    released: dict[uuid.UUID, int] = field(default_factory=dict)


def take_images_to_queue(depth: int, *, lazy: bool = False, batch_size: int = 1) -> list[int]:
    """Mark waiting images queued, up to about one per image in progress and at most ``depth``; returns their ids.

    Slots go one at a time to the tenant with the fewest images in flight (over all its requests), and
    within it first to a request with released images (a lost message, a dead worker), then to the
    request with the fewest in flight. No image is queued before its back-off (``not_before``) is
    over, released or not. One dispatcher at a time (an advisory lock on PostgreSQL, the write lock
    on SQLite), so two never overfill the window. With ``batch_size`` images to a message, at least two
    messages' worth are kept queued. ``lazy`` (a worker after each image) does nothing
    until a quarter of the window is free, nor while another dispatcher is at work: that one fills it.
    """
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    least = min_queued(batch_size)
    if lazy:
        state = queue_state()
        target = min(depth, max(least, state.processing))
        if target - state.queued < max(batch_size, target // 4):
            return []
        if postgresql and not db.session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": _DISPATCH_LOCK_ID}
        ):
            db.session.commit()
            return []
    elif postgresql:
        db.session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _DISPATCH_LOCK_ID})
    # Per request and status, then each request's tenant: a tenant's load is every image it has in
    # flight, in requests with nothing left waiting too.
    per_request = (
        select(Image.request_id, Image.status, func.count().label("images"))
        .where(text(IN_FLIGHT_IMAGE))
        .group_by(Image.request_id, Image.status)
        .subquery()
    )
    in_flight_rows = db.session.execute(
        select(per_request.c.request_id, Request.owner_key_hash, per_request.c.status, per_request.c.images).join(
            Request, Request.id == per_request.c.request_id
        )
    ).all()
    queued = sum(count for _, _, status, count in in_flight_rows if status == ImageStatus.PENDING)
    processing = sum(count for _, _, status, count in in_flight_rows if status == ImageStatus.PROCESSING)
    # About one waiting message per busy worker process: enough that none waits for work, and short
    # in time, so a request uploaded now waits behind one image per process, not behind a backlog.
    target = min(depth, max(least, processing))
    capacity = target - queued
    # Whole batches while workers are busy, or the window would hand them out in scraps as images finish.
    if batch_size > 1 and (queued or processing):
        capacity -= capacity % batch_size
    if capacity <= 0:
        db.session.commit()
        return []
    load = Load()
    for request_id, owner, _status, count in in_flight_rows:
        load.by_request[request_id] += count
        load.by_owner[owner] += count
    due = (Image.not_before.is_(None)) | (Image.not_before <= db_now())
    # An image whose message was lost, or whose worker died, was let in long ago: within its tenant's
    # share it goes before newer work, once its back-off (if it has one) is over.
    load.released.update(
        db.session.execute(
            select(Image.request_id, func.count()).where(text(RELEASED_IMAGE), due).group_by(Image.request_id)
        ).all()
    )
    waiting_due = select(Image.id).where(Image.request_id == Request.id, text(WAITING_IMAGE), due).exists()
    candidates = db.session.execute(
        select(Request.id, Request.owner_key_hash, Request.created_at).where(
            Request.status.in_(ACTIVE_REQUEST_STATUSES), waiting_due
        )
    ).all()
    taken: list[list[int]] = []
    for request_id, count in _share_slots(capacity, candidates, load).items():
        # By id: a request's images are queued in that order, so one released comes before those never sent.
        chosen = (
            select(Image.id)
            .where(Image.request_id == request_id, text(WAITING_IMAGE), due)
            .order_by(Image.id)
            .limit(count)
        )
        ids = db.session.scalars(
            update(Image)
            .where(Image.id.in_(chosen.scalar_subquery()))
            .values(queued_at=db_now())
            .returning(Image.id)
            .execution_options(synchronize_session=False)
        ).all()
        taken.append(sorted(ids))
    db.session.commit()
    # Interleaved, so the queue itself alternates between requests.
    return [image_id for group in _interleave(taken) for image_id in group]


def _share_slots(capacity: int, candidates, load: Load) -> dict[uuid.UUID, int]:
    """One slot at a time: to the tenant with the fewest images in flight; within it, to a request with
    released images first, then to the one with the fewest in flight, then the oldest."""
    by_owner: dict[str | None, list[tuple[bool, int, object, uuid.UUID]]] = defaultdict(list)
    released = dict(load.released)
    for request_id, owner, created_at in candidates:
        has_released = released.get(request_id, 0) > 0
        by_owner[owner].append((not has_released, load.by_request.get(request_id, 0), created_at, request_id))
    owners = [(load.by_owner.get(owner, 0), index, owner) for index, owner in enumerate(by_owner)]
    heapq.heapify(owners)
    for requests in by_owner.values():
        heapq.heapify(requests)
    slots: dict[uuid.UUID, int] = defaultdict(int)
    for _ in range(capacity):
        if not owners:
            break
        owner_load, index, owner = heapq.heappop(owners)
        _, request_load, created_at, request_id = heapq.heappop(by_owner[owner])
        slots[request_id] += 1
        released[request_id] = max(0, released.get(request_id, 0) - 1)
        heapq.heappush(by_owner[owner], (released[request_id] == 0, request_load + 1, created_at, request_id))
        heapq.heappush(owners, (owner_load + 1, index, owner))
    return slots


def _interleave(groups: list[list[int]]) -> list[list[int]]:
    rounds: list[list[int]] = []
    for group in groups:
        for position, image_id in enumerate(group):
            if position == len(rounds):
                rounds.append([])
            rounds[position].append(image_id)
    return rounds


def unqueue(image_ids: list[int]) -> None:
    """Put images whose message could not be published back to waiting."""
    if not image_ids:
        return
    db.session.execute(
        update(Image)
        .where(Image.id.in_(image_ids), Image.status == ImageStatus.PENDING)
        .values(queued_at=None, queued_in=None)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def release_lost_images(stale_after_s: float, grace_s: float, broker_holds: int | None, limit: int = 5000) -> list[int]:
    """Put queued images whose message was lost back to waiting; returns their ids.

    Two tests, both by the database's clock. Exact: the broker holds ``broker_holds`` messages
    (its queue plus what workers have reserved), so if the queued images name more messages
    (``queued_in``), the oldest of the excess (queued more than ``grace_s`` ago, so a message being
    published is not mistaken) were lost, and all their images with them. Backstop, for a broker
    that cannot tell: queued longer than ``stale_after_s``. A message that was only slow costs a
    duplicate, which the claim turns away.
    """
    released: list[int] = []
    queued = (Image.status == ImageStatus.PENDING, Image.queued_at.is_not(None))
    if broker_holds is not None:
        # An image queued before messages were named is a message of its own.
        message = func.coalesce(Image.queued_in, func.cast(Image.id, String))
        messages = db.session.scalar(select(func.count(func.distinct(message))).where(*queued))
        missing = min((messages or 0) - broker_holds, limit)
        if missing > 0:
            oldest = (
                select(message.label("message"))
                .where(*queued)
                .group_by(message)
                .having(func.max(Image.queued_at) < db_now(-grace_s))
                .order_by(func.min(Image.queued_at), func.min(Image.id))
                .limit(missing)
                .subquery()
            )
            released += _release_queued(
                select(Image.id).where(*queued, message.in_(select(oldest.c.message))).limit(limit)
            )
    released += _release_queued(
        select(Image.id)
        .where(Image.status == ImageStatus.PENDING, Image.queued_at < db_now(-stale_after_s))
        .order_by(Image.id)
        .limit(limit)
    )
    db.session.commit()
    return released


def _release_queued(chosen) -> list[int]:
    return list(
        db.session.scalars(
            update(Image)
            .where(Image.id.in_(chosen.scalar_subquery()), Image.status == ImageStatus.PENDING)
            .values(queued_at=None, queued_in=None, requeues=Image.requeues + 1, updated_at=db_now())
            .returning(Image.id)
            .execution_options(synchronize_session=False)
        ).all()
    )


def publish(image_ids: list[int], batch_size: int = 1, *, share: bool = True) -> int:
    """Publish the messages of images just queued, up to ``batch_size`` images to a message; returns how many
    images were. The rest wait for the next fill.

    An image that had a start that died (a worker killed under it, or a message lost) goes alone, so a
    poison image kills no batch but its own. ``share``: see ``form_batches``.
    """
    batches = form_batches(image_ids, batch_size, share=share)
    sent = 0
    try:
        for batch_id, batch in batches:
            if not broker.send(task_names.PROCESS_IMAGE_TASK, *batch, task_id=batch_id):
                break  # the broker is down: the rest would fail as slowly
            sent += len(batch)
    finally:
        unqueue([image_id for _, batch in batches for image_id in batch][sent:])
    return sent


def form_batches(image_ids: list[int], batch_size: int, *, share: bool = True) -> list[tuple[str, list[int]]]:
    """Group queued images into messages, each named in its images' ``queued_in``: in the order given, at most
    ``batch_size`` to a message, a suspect image alone. ``share`` (an upload's fill, the tick's, when workers may
    be idle) makes at least two messages, for two idle workers; a worker's refill after its batch makes them
    whole, or batches would shrink by half at every refill."""
    if not image_ids:
        return []
    suspect = set(
        db.session.scalars(
            select(Image.id).where(Image.id.in_(image_ids), (Image.requeues > 0) | (Image.attempts > Image.retries))
        ).all()
    )
    size = max(1, min(batch_size, -(-len(image_ids) // 2))) if share else max(1, batch_size)
    groups: list[list[int]] = [[image_id] for image_id in image_ids if image_id in suspect]
    rest = [image_id for image_id in image_ids if image_id not in suspect]
    groups += [rest[start : start + size] for start in range(0, len(rest), size)]
    batches = [(str(uuid.uuid4()), group) for group in groups]
    for batch_id, group in batches:
        db.session.execute(
            update(Image)
            .where(Image.id.in_(group))
            .values(queued_in=batch_id)
            .execution_options(synchronize_session=False)
        )
    db.session.commit()
    return batches


def fill_queue(depth: int, *, lazy: bool = False, batch_size: int = 1) -> int:
    """Queue waiting images up to ``depth`` and publish them; returns how many were published. Batches are shared
    out between idle workers only when nothing is in flight."""
    share = not lazy and queue_state() == QueueState(queued=0, processing=0)
    return publish(take_images_to_queue(depth, lazy=lazy, batch_size=batch_size), batch_size, share=share)
