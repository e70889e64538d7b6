"""Rate limits per API key, or per client address when the service is open; failed keys per address."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import limits
from flask import Flask, Response, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from access import api_keys
from config import Settings, SettingsError
from errors import ApiError

log = logging.getLogger(__name__)


def client_key() -> str:
    owner = api_keys.owner_key_hash()
    return f"key:{owner}" if owner else f"ip:{get_remote_address()}"


KEY_PREFIX = "imgsvc"

# swallow_errors: an unreachable limiter store must not take the API down with it. A sliding window
# keeps two counters per key where a moving window keeps a timestamp per request: one cheap round
# trip per call, whatever the limit.
limiter = Limiter(
    key_func=client_key,
    headers_enabled=True,
    swallow_errors=True,
    key_prefix=KEY_PREFIX,
    strategy="sliding-window-counter",
)

# How long one API process trusts that an address has wrong-key attempts left, between asking the
# store: at most this long of guesses past the limit, for each API process.
AUTH_CHECK_TTL_S = 1.0

#: Route decorators; the limits are read from the settings at request time.
upload_limit = limiter.limit(lambda: current_app.config["SETTINGS"].rate_limit_uploads)
read_limit = limiter.limit(lambda: current_app.config["SETTINGS"].rate_limit_reads)

_in_memory = limits.strategies.SlidingWindowCounterRateLimiter(limits.storage.MemoryStorage())


def read_limit_unless_from_memory(answered_from_memory: Callable[[], bool]):
    """``read_limit``, but a call ``answered_from_memory`` (a poll answered ``304`` with no round trip) is counted
    in this process alone: the limiter's shared store would cost it more than its answer. Past the limit there,
    the call is counted in the shared store like any other, which decides."""

    def exempt() -> bool:
        if not answered_from_memory():
            return False
        limit = limits.parse(current_app.config["SETTINGS"].rate_limit_reads)
        return _in_memory.hit(limit, KEY_PREFIX, "memory", client_key())

    return limiter.limit(lambda: current_app.config["SETTINGS"].rate_limit_reads, exempt_when=exempt)


class AuthFailures:
    """Wrong API keys presented per client address, counted in the limiter's store.

    ``access`` asks before it looks at a key, and reports every wrong one: past the limit an address
    is refused whatever it presents, so that guessing keys costs the window's length per few guesses.
    """

    def __init__(self, limit: str) -> None:
        try:
            self.limit = limits.parse(limit)
        except ValueError as error:
            raise SettingsError(f"RATE_LIMIT_AUTH_FAILURES: {error}") from None
        self._allowed_until: dict[str, float] = {}

    @staticmethod
    def _identity() -> tuple[str, str]:
        return KEY_PREFIX, f"authfail:{get_remote_address()}"

    def refuse_if_exhausted(self) -> None:
        """Raises ApiError 429 ``rate_limited``, with ``Retry-After``, when the address has no attempts left."""
        address = get_remote_address()
        now = time.monotonic()
        if self._allowed_until.get(address, 0.0) > now:
            return
        try:
            if limiter.limiter.test(self.limit, *self._identity()):
                if len(self._allowed_until) > 10_000:
                    self._allowed_until.clear()
                self._allowed_until[address] = now + AUTH_CHECK_TTL_S
                return
            reset_at, _remaining = limiter.limiter.get_window_stats(self.limit, *self._identity())
        except Exception:  # like the limiter's own errors: the store being down must not lock everyone out
            log.warning("auth-failure limit unavailable", exc_info=True)
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"Too many wrong API keys from this address; try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
        )

    def count(self) -> None:
        """Record one wrong key from the caller's address."""
        self._allowed_until.pop(get_remote_address(), None)
        try:
            limiter.limiter.hit(self.limit, *self._identity())
        except Exception:
            log.warning("auth-failure limit unavailable", exc_info=True)


def drop_retry_after_on_success(response: Response) -> Response:
    """Drop the ``Retry-After`` the limiter adds to every answer from those that ask for no wait (below 400)."""
    if response.status_code < 400:
        response.headers.pop("Retry-After", None)
    return response


def init_app(app: Flask, settings: Settings) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = settings.rate_limit_storage_url
    # Registered before the limiter's own hook, so that it runs after it: Flask runs them last first.
    app.after_request(drop_retry_after_on_success)
    limiter.init_app(app)
    app.extensions["auth_failures"] = AuthFailures(settings.rate_limit_auth_failures)
