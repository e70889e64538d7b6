"""Who may call the API: optional API keys, each request owned by the key that created it."""

from __future__ import annotations

import hashlib
import hmac
import logging

from flask import Flask, current_app, g, request

from config import Settings
from errors import ApiError

log = logging.getLogger(__name__)

# The built-in receiver is called by the service's own webhook sender, which holds no API key;
# its signature check is what protects it.
OPEN_PATHS = ("/api/webhooks/receive",)
# The API's description (document, Swagger UI and its assets) says what it does, not what it holds.
OPEN_PREFIXES = ("/api/openapi.json", "/api/docs")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def init_app(app: Flask, settings: Settings) -> None:
    """Require a key on every ``/api`` call when ``API_KEYS`` is set; only their hashes are kept."""
    app.extensions["api_key_hashes"] = tuple(hash_key(key) for key in settings.api_keys)
    # Once a run: the launcher's migrations log it, the processes it starts afterwards at DEBUG.
    if settings.api_keys:
        log.log(_startup(settings, logging.INFO), "API keys required: %d key(s) configured", len(settings.api_keys))
    else:
        log.log(_startup(settings), "API_KEYS is not set: the API is open to anyone who can reach it")
    app.before_request(_authenticate)


def _startup(settings: Settings, level: int = logging.WARNING) -> int:
    return level if settings.startup_warnings else logging.DEBUG


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-API-Key") or None


def _authenticate() -> None:
    g.owner_key_hash = None
    hashes: tuple[str, ...] = current_app.extensions["api_key_hashes"]
    # A CORS preflight carries no credentials by design; the call it announces is checked.
    preflight = request.method == "OPTIONS"
    if preflight or not hashes or not request.path.startswith("/api/"):
        return
    if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
        return
    failures = current_app.extensions["auth_failures"]  # rate_limits' counter of wrong keys
    failures.refuse_if_exhausted()
    presented = _presented_key()
    if presented is None:
        raise ApiError(
            401,
            "unauthorized",
            "This API needs a key: send 'Authorization: Bearer <key>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    digest = hash_key(presented)
    matched = None
    for candidate in hashes:  # every candidate is compared, so timing does not tell which matched
        if hmac.compare_digest(digest, candidate):
            matched = candidate
    if matched is None:
        failures.count()
        raise ApiError(401, "unauthorized", "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"})
    g.owner_key_hash = matched


def owner_key_hash() -> str | None:
    """The hash of the caller's key, or None when the service is open."""
    return g.get("owner_key_hash")
