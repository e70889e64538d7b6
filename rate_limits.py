"""Rate limits per API key, or per client address when the service is open."""

from __future__ import annotations

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

import access
from config import Settings


def client_key() -> str:
    owner = access.owner_key_hash()
    return f"key:{owner}" if owner else f"ip:{get_remote_address()}"


# swallow_errors: an unreachable limiter store must not take the API down with it.
limiter = Limiter(
    key_func=client_key, headers_enabled=True, swallow_errors=True, key_prefix="imgsvc", strategy="moving-window"
)

#: Route decorators; the limits are read from the settings at request time.
upload_limit = limiter.limit(lambda: current_app.config["SETTINGS"].rate_limit_uploads)
read_limit = limiter.limit(lambda: current_app.config["SETTINGS"].rate_limit_reads)


def init_app(app: Flask, settings: Settings) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = settings.rate_limit_storage_url
    limiter.init_app(app)
