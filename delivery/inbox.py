"""The built-in receiver's store: the last webhooks it accepted, for a person to look at."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import delete, select

from models import ReceivedWebhook, Request, db
from reading.answers import timestamp

KEPT = 200


def record(webhook_id: str, body: bytes) -> None:
    """Keep a verified delivery, dropping the oldest beyond the last ``KEPT``."""
    db.session.add(ReceivedWebhook(webhook_id=webhook_id, signature_valid=True, body=body.decode()))
    db.session.flush()
    cutoff = db.session.scalar(select(ReceivedWebhook.id).order_by(ReceivedWebhook.id.desc()).offset(KEPT).limit(1))
    if cutoff is not None:
        db.session.execute(delete(ReceivedWebhook).where(ReceivedWebhook.id <= cutoff))
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
    """The kept deliveries, newest first; with API keys, only those about the caller's requests."""
    rows = db.session.scalars(select(ReceivedWebhook).order_by(ReceivedWebhook.id.desc()).limit(KEPT)).all()
    received = [(row, json.loads(row.body)) for row in rows]
    if owner_key_hash is not None:
        mentioned = {_request_id_of(body) for _, body in received} - {None}
        owned = (
            set(
                db.session.scalars(
                    select(Request.id).where(Request.id.in_(mentioned), Request.owner_key_hash == owner_key_hash)
                ).all()
            )
            if mentioned
            else set()
        )
        received = [(row, body) for row, body in received if _request_id_of(body) in owned]
    return [
        {
            "webhook_id": row.webhook_id,
            "received_at": timestamp(row.received_at),
            "signature_valid": row.signature_valid,
            "body": body,
        }
        for row, body in received
    ]


def _request_id_of(body: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(body["data"]["request_id"])
    except (TypeError, KeyError, ValueError):
        return None
