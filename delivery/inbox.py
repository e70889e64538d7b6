"""The built-in receiver's store: the last webhooks it accepted for each owner, for a person to look at."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import delete, select

from models import ReceivedWebhook, Request, db
from reading.answers import timestamp

#: Deliveries kept per owner: one tenant's flood never pushes out another's.
KEPT = 200


def record(webhook_id: str, body: bytes, owner_key_hash: str | None) -> None:
    """Keep a verified delivery in its owner's inbox, dropping that owner's oldest beyond the last ``KEPT``."""
    owner = owner_key_hash or ""
    db.session.add(ReceivedWebhook(owner=owner, webhook_id=webhook_id, signature_valid=True, body=body.decode()))
    db.session.flush()
    owned = ReceivedWebhook.owner == owner
    cutoff = db.session.scalar(
        select(ReceivedWebhook.id).where(owned).order_by(ReceivedWebhook.id.desc()).offset(KEPT).limit(1)
    )
    if cutoff is not None:
        db.session.execute(delete(ReceivedWebhook).where(owned, ReceivedWebhook.id <= cutoff))
    db.session.commit()


def owner_of(body: bytes) -> str | None:
    """The key hash owning the request a delivery's body names (``data.request_id``); None if none.

    The body is not verified yet: this only picks the secret the signature must verify with.
    """
    try:
        request_id = _request_id_of(json.loads(body))
    except (ValueError, RecursionError):  # anyone may call the receiver: its body may be anything
        return None
    if request_id is None:
        return None
    return db.session.scalar(select(Request.owner_key_hash).where(Request.id == request_id))


def list_received(owner_key_hash: str | None) -> list[dict[str, Any]]:
    """The caller's kept deliveries (those about its requests), newest first."""
    rows = db.session.scalars(
        select(ReceivedWebhook)
        .where(ReceivedWebhook.owner == (owner_key_hash or ""))
        .order_by(ReceivedWebhook.id.desc())
        .limit(KEPT)
    ).all()
    return [
        {
            "webhook_id": row.webhook_id,
            "received_at": timestamp(row.received_at),
            "signature_valid": row.signature_valid,
            "body": json.loads(row.body),
        }
        for row in rows
    ]


def _request_id_of(body: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(body["data"]["request_id"])
    except (TypeError, KeyError, ValueError):
        return None
