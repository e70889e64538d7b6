"""Idempotent uploads: an ``Idempotency-Key`` sent again answers with the request it made.

The key is unique per caller in the database, so two uploads racing with one key make one
request: the second insert fails on the constraint, and that upload answers as a replay.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from database import db_now
from errors import ApiError
from models import IdempotencyKey, db

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Printable ASCII, as the IETF draft's examples and Stripe's keys are; no control characters.
_KEY_RE = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True)
class KeyClaim:
    """A key to store with the request an upload makes."""

    owner: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Replay:
    """The first answer to a key, to give again."""

    request_id: uuid.UUID
    body: dict[str, Any]


def key_from_header(raw: str | None) -> str | None:
    """The header's key, or None if absent; raises ApiError 400 for one that cannot be a key."""
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or _KEY_RE.fullmatch(key) is None:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"'{HEADER}' must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, such as a UUID.",
        )
    return key


def fingerprint(data: bytes, options: dict[str, Any]) -> str:
    """What makes two uploads the same: the file's bytes and the options, whatever their order."""
    digest = hashlib.sha256(data).hexdigest()
    canonical = json.dumps({"file": digest, "options": options}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def owner_of(owner_key_hash: str | None) -> str:
    return owner_key_hash or ""


def find_replay(claim: KeyClaim, ttl_s: float) -> Replay | None:
    """The first answer to this caller's key within ``ttl_s``; ApiError 422 if it came with another body."""
    stored = db.session.execute(
        select(IdempotencyKey.fingerprint, IdempotencyKey.request_id, IdempotencyKey.response).where(
            IdempotencyKey.owner == claim.owner,
            IdempotencyKey.key == claim.key,
            IdempotencyKey.created_at > db_now(-ttl_s),
        )
    ).first()
    db.session.rollback()
    if stored is None:
        return None
    if stored.fingerprint != claim.fingerprint:
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"This '{HEADER}' was sent before with another file or other options; use a new key for a new upload.",
        )
    return Replay(stored.request_id, json.loads(stored.response))


@dataclass(frozen=True)
class KeyToStore:
    """A key and the answer to store with the request, in the transaction that creates it."""

    claim: KeyClaim
    body: dict[str, Any]
    ttl_s: float


def remember(stored: KeyToStore, request_id: uuid.UUID) -> None:
    """Add the key to the open transaction, replacing an expired use of it; the caller commits."""
    claim, ttl_s = stored.claim, stored.ttl_s
    db.session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.owner == claim.owner,
            IdempotencyKey.key == claim.key,
            IdempotencyKey.created_at <= db_now(-ttl_s),
        )
    )
    db.session.add(
        IdempotencyKey(
            owner=claim.owner,
            key=claim.key,
            fingerprint=claim.fingerprint,
            request_id=request_id,
            response=json.dumps(stored.body, separators=(",", ":")),
            created_at=db_now(),
        )
    )


def delete_expired(ttl_s: float, limit: int = 5000) -> int:
    """Forget keys older than ``ttl_s``, a batch at a time; returns how many."""
    expired = (
        select(IdempotencyKey.id).where(IdempotencyKey.created_at <= db_now(-ttl_s)).limit(limit).scalar_subquery()
    )
    count = db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(expired))).rowcount
    db.session.commit()
    return count
