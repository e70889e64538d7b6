"""Standard Webhooks signing and verification, and the secret they use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path

from config import Settings

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105  (a format marker, not a secret)
#: Separates tenant secrets from every other HMAC the service secret makes (webhook signatures).
TENANT_SECRET_LABEL = b"tenant-webhook-secret:"
TIMESTAMP_TOLERANCE_S = 300


class InvalidSignature(Exception):
    """A webhook's headers do not prove it came from us."""


def secret_key(secret: str) -> bytes:
    """The HMAC key a secret denotes: base64 after ``whsec_``, else the string's bytes.

    Raises:
        ValueError: the secret is empty, or its ``whsec_`` part is not base64.
    """
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        # Padding may have been stripped by whoever copied the secret, as the reference library allows.
        encoded += "=" * (-len(encoded) % 4)
        try:
            key = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def load_or_create_secret(settings: Settings) -> str:
    """``WEBHOOK_SECRET``, or one made at first start and kept in the instance folder."""
    if settings.webhook_secret:
        secret_key(settings.webhook_secret)  # fail at start-up on a malformed whsec_ value
        return settings.webhook_secret
    path = settings.instance_dir / "webhook_secret"
    try:
        # O_EXCL: the API and the workers may start together; exactly one of them writes.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    log.warning("WEBHOOK_SECRET is not set: generated one and kept it in %s", path)
    return secret


def tenant_secret(service_secret: str, owner_key_hash: str | None) -> str:
    """The secret that signs the webhooks of one API key's requests, and that its tenant verifies with.

    ``whsec_`` + base64 of HMAC-SHA256 over the key's SHA-256 hash (what a request stores as its
    owner), keyed by the service secret: nothing more to configure, and the worker can sign knowing
    only the request row. A tenant's secret tells nothing about the service secret or another tenant's.
    A request of the open service (no owner) is signed with the service secret itself.
    """
    if owner_key_hash is None:
        return service_secret
    derived = hmac.new(secret_key(service_secret), TENANT_SECRET_LABEL + owner_key_hash.encode(), hashlib.sha256)
    return SECRET_PREFIX + base64.b64encode(derived.digest()).decode()


def _read_secret(path: Path) -> str:
    for _ in range(50):
        secret = path.read_text().strip()
        if secret:
            return secret
        time.sleep(0.05)  # the other process is between create and write
    raise RuntimeError(f"webhook secret file {path} is empty")


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, webhook_id: str, body: bytes, now: int | None = None) -> dict[str, str]:
    """The headers of one delivery attempt: a fresh timestamp and signature, the same id."""
    timestamp = int(time.time()) if now is None else now
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }


def verify(secret: str, headers: dict[str, str], body: bytes, now: int | None = None) -> str:
    """Check a delivery's headers; returns its webhook id.

    Raises:
        InvalidSignature: a header is missing, the timestamp is too far off, or no signature matches.
    """
    webhook_id = headers.get("webhook-id")
    timestamp_raw = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (webhook_id and timestamp_raw and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(timestamp_raw)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > TIMESTAMP_TOLERANCE_S:
        raise InvalidSignature("webhook-timestamp is outside the tolerance")
    expected = sign(secret, webhook_id, timestamp, body)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate, expected):
            return webhook_id
    raise InvalidSignature("no signature matches")
