"""The webhook outbox: each event a row, each attempt a row, the retry schedule in the database.

The schedule lives here rather than in Celery countdowns, which Redis redelivers past the
visibility timeout; the sweeper sends whatever is due.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from database import db_now
from delivery import in_flight
from models import DeliveryStatus, Request, RequestStatus, WebhookAttempt, WebhookEvent, db, utcnow
from observability import metrics
from queueing import backoff, broker, task_names
from reading import planned_outputs
from reading.answers import progress, timestamp, totals
from reading.links import output_csv_url

EVENT_TYPE = "request.completed"
#: The event of a request that a user cancelled.
CANCELLED_EVENT_TYPE = "request.cancelled"
#: Session.info key of the events created in the open transaction, sent once it commits.
NEW_EVENTS_KEY = "webhook_events_to_send"


class ResendTooSoon(Exception):
    """The request's webhook was re-sent less than the cooldown ago."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"re-sent less than the cooldown ago; again in {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class AttemptWork:
    event_id: str
    url: str
    payload: str
    attempt: int


def create_event(request: Request, public_base_url: str) -> str:
    """Write the event of a request's final status; it is sent after the transaction commits.

    Each final status gets its own event: a request re-run after its failures ends with another.
    """
    schedule = _schedule()
    now = utcnow()
    event_type = CANCELLED_EVENT_TYPE if request.status == RequestStatus.CANCELLED else EVENT_TYPE
    payload = {
        "type": event_type,
        "timestamp": timestamp(request.completed_at or now),
        "data": {
            "request_id": str(request.id),
            "status": request.status,
            "progress": progress(request),
            "output_csv_url": output_csv_url(public_base_url, request.id),
        },
    }
    planned = planned_outputs.webhook_fields(request)
    if planned:
        payload["data"] |= {"totals": {**totals(request), **planned}}
    event_id = f"msg_{uuid.uuid4().hex}"
    db.session.add(
        WebhookEvent(
            id=event_id,
            request_id=request.id,
            type=event_type,
            url=request.webhook_url,
            host=in_flight.receiving_host(request.webhook_url or ""),
            payload=json.dumps(payload, separators=(",", ":")),
            status=DeliveryStatus.PENDING,
            attempts_made=0,
            attempts_allowed=len(schedule),
            next_attempt_at=db_now(schedule[0]),
            # Sent as soon as the transaction commits; were that message lost, the tick re-sends.
            queued_at=db_now() if schedule[0] == 0 else None,
            created_at=now,
        )
    )
    if schedule[0] == 0:
        db.session.info.setdefault(NEW_EVENTS_KEY, []).append(event_id)
    return event_id


@event.listens_for(Session, "after_commit")
def _send_committed_events(session: Session) -> None:
    for event_id in session.info.pop(NEW_EVENTS_KEY, []):
        broker.send(task_names.DELIVER_TASK, event_id)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back_events(session: Session) -> None:
    session.info.pop(NEW_EVENTS_KEY, None)


def claim_attempt(event_id: str, lease: timedelta) -> AttemptWork | None:
    """Take the event's next attempt if it is due, leasing it so no other worker sends it too.

    None if it is not due, or if its tenant or receiving host has as many attempts in flight as it may
    (``in_flight``): then it stays due, for the tick to hand out again once one of them ends.
    """
    in_flight.serialize_claims()
    due = (
        WebhookEvent.id == event_id,
        WebhookEvent.status == DeliveryStatus.PENDING,
        WebhookEvent.next_attempt_at <= db_now(),
        WebhookEvent.attempts_made < WebhookEvent.attempts_allowed,
    )
    found = db.session.execute(
        select(Request.owner_key_hash, WebhookEvent.host)
        .join(Request, Request.id == WebhookEvent.request_id)
        .where(*due)
    ).first()
    if found is None or not in_flight.occupancy(excluding=event_id).has_room(*found):
        # Not due (nothing to change), or over a bound: unqueued, so that the tick hands it out once there is room.
        db.session.execute(update(WebhookEvent).where(*due).values(queued_at=None))
        db.session.commit()
        return None
    lease_s = lease.total_seconds()
    claimed = db.session.execute(
        update(WebhookEvent)
        .where(*due)
        .values(
            attempts_made=WebhookEvent.attempts_made + 1,
            next_attempt_at=db_now(lease_s),
            in_flight_until=db_now(lease_s),
            queued_at=None,
        )
        .returning(WebhookEvent.url, WebhookEvent.payload, WebhookEvent.attempts_made)
    ).first()
    db.session.commit()
    if claimed is None:  # another attempt of the event was recorded meanwhile
        return None
    url, payload, attempt = claimed
    return AttemptWork(event_id, url, payload, attempt)


def owner_of_event(event_id: str) -> str | None:
    """The key hash that owns the event's request, whose secret signs the event; None when open."""
    owner = db.session.scalar(
        select(Request.owner_key_hash)
        .join(WebhookEvent, WebhookEvent.request_id == Request.id)
        .where(WebhookEvent.id == event_id)
    )
    db.session.commit()  # the POST that follows must not hold a transaction open
    return owner


def record_attempt(
    work: AttemptWork,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    at: datetime,
    give_up: bool = False,
) -> str:
    """Store one attempt's outcome and decide the event's next step; returns its new status."""
    db.session.add(
        WebhookAttempt(
            event_id=work.event_id,
            attempt=work.attempt,
            at=at,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
    )
    event = db.session.get(WebhookEvent, work.event_id, with_for_update=True)
    assert event is not None
    delivered = status_code is not None and 200 <= status_code < 300
    # An attempt that outlived its lease finishes after a later one was claimed: its failure is
    # history, not a decision; a success still means the receiver has the event.
    superseded = event.status != DeliveryStatus.PENDING or work.attempt < event.attempts_made
    if work.attempt == event.attempts_made:
        event.in_flight_until = None
    gave_up = False
    if delivered:
        event.status, event.next_attempt_at = DeliveryStatus.DELIVERED, None
    elif not superseded and (give_up or event.attempts_made >= event.attempts_allowed):
        event.status, event.next_attempt_at = DeliveryStatus.FAILED, None
        gave_up = True
    elif not superseded:
        event.next_attempt_at = db_now(_delay_before(event.attempts_made + 1))
    status = event.status
    db.session.commit()
    metrics.WEBHOOK_ATTEMPTS.labels(metrics.webhook_outcome(status_code)).inc()
    if gave_up:
        metrics.WEBHOOKS_GIVEN_UP.inc()
    return status


def _schedule() -> tuple[int, ...]:
    return current_app.config["SETTINGS"].webhook_retry_schedule


def _delay_before(attempt: int) -> float:
    """Entry ``attempt`` of the schedule (from 1), with up to 10% jitter so retries do not stampede."""
    schedule = _schedule()
    delay = schedule[min(attempt, len(schedule)) - 1]
    return backoff.jittered(delay, 0.1)


def take_due_events(lost_after_s: float, limit: int = 1000) -> list[str]:
    """Mark due events queued and return their ids, to send now; each tenant and host only as many as it has room for.

    An event already handed to the broker is not sent again, unless that was ``lost_after_s`` ago
    and it is still unclaimed: then its message was lost. An event of a tenant or host at its bound
    stays due, so that another tenant's events are not held up behind it.
    """
    occupied = in_flight.occupancy(queued_within_s=lost_after_s)
    owner = Request.owner_key_hash
    not_queued = WebhookEvent.queued_at.is_(None) | (WebhookEvent.queued_at < db_now(-lost_after_s))
    # No tenant can take more than its bound, so its first few due events are the only candidates.
    rank = func.row_number().over(partition_by=owner, order_by=(WebhookEvent.next_attempt_at, WebhookEvent.id))
    candidates = (
        select(WebhookEvent.id, owner, WebhookEvent.host, WebhookEvent.next_attempt_at, rank.label("rank"))
        .join(Request, Request.id == WebhookEvent.request_id)
        .where(
            WebhookEvent.status == DeliveryStatus.PENDING,
            WebhookEvent.next_attempt_at <= db_now(),
            not_queued,
            *occupied.with_room(owner, WebhookEvent.host),
        )
        .subquery()
    )
    rows = db.session.execute(
        select(candidates.c.id, candidates.c.owner_key_hash, candidates.c.host)
        .where(candidates.c.rank <= occupied.per_tenant)
        .order_by(candidates.c.next_attempt_at)
        .limit(limit)
    ).all()
    chosen = [event_id for event_id, event_owner, host in rows if occupied.take(event_owner, host)]
    if not chosen:
        db.session.commit()
        return []
    ids = db.session.scalars(
        update(WebhookEvent)
        .where(WebhookEvent.id.in_(chosen), not_queued)
        .values(queued_at=db_now())
        .returning(WebhookEvent.id)
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return list(ids)


def reopen_last_event(request_id: uuid.UUID) -> str | None:
    """Allow the request's last event one more attempt, due now; returns its id, or None.

    Raises:
        ResendTooSoon: the last re-send was less than ``WEBHOOK_RESEND_COOLDOWN_S`` ago.
    """
    event = db.session.scalars(
        select(WebhookEvent)
        .where(WebhookEvent.request_id == request_id)
        .order_by(WebhookEvent.created_at.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if event is None:
        db.session.rollback()
        return None
    cooldown_s = current_app.config["SETTINGS"].webhook_resend_cooldown_s
    if event.resent_at is not None and cooldown_s > 0:
        since_s = (db.session.scalar(select(db_now())) - event.resent_at).total_seconds()
        if since_s < cooldown_s:
            db.session.rollback()
            raise ResendTooSoon(cooldown_s - since_s)
    event.status = DeliveryStatus.PENDING
    event.attempts_allowed = max(event.attempts_allowed, event.attempts_made + 1)
    event.next_attempt_at = db_now()
    event.queued_at = db_now()
    event.resent_at = db_now()
    db.session.commit()
    return event.id
