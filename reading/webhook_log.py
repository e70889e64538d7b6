"""What the webhook-deliveries endpoint says of a request: each event, with its attempts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from models import WebhookAttempt, WebhookEvent, db
from reading.answers import timestamp


def describe_events(request_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every event of a request with its attempts, oldest first."""
    events = db.session.scalars(
        select(WebhookEvent).where(WebhookEvent.request_id == request_id).order_by(WebhookEvent.created_at)
    ).all()
    attempts = db.session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.event_id.in_([e.id for e in events]))
        .order_by(WebhookAttempt.event_id, WebhookAttempt.attempt, WebhookAttempt.id)
    ).all()
    by_event: dict[str, list[WebhookAttempt]] = {}
    for attempt in attempts:
        by_event.setdefault(attempt.event_id, []).append(attempt)
    return [
        {
            "webhook_id": event.id,
            "type": event.type,
            "url": event.url,
            "status": event.status,
            "created_at": timestamp(event.created_at),
            "next_attempt_at": timestamp(event.next_attempt_at),
            "attempts": [
                {
                    "attempt": a.attempt,
                    "at": timestamp(a.at),
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                }
                for a in by_event.get(event.id, [])
            ],
        }
        for event in events
    ]
