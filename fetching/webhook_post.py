"""Webhook POSTs: one request, never a redirect followed, the answer's status and nothing of its body."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fetching.deadline import TimeLimit, watched
from fetching.errors import NETWORK_ERRORS, network_failure
from fetching.http_session import FetchLimits, build_session, check_url, host_for_message, timeouts


@dataclass(frozen=True)
class PostResult:
    """The answer to a POST: its status, and how long the call took."""

    status_code: int
    duration_ms: int


def post_json(
    url: str, body: bytes, headers: dict[str, str], limits: FetchLimits, timeout_s: float = 15.0
) -> PostResult:
    """POST body without following redirects and return the status; raises FetchError for network failures."""
    host = host_for_message(url)
    request_headers = {"Content-Type": "application/json", **headers}
    started = time.monotonic()
    # WEBHOOK_TIMEOUT_S bounds the whole call and each read.
    limit = TimeLimit(timeout_s, "WEBHOOK_TIMEOUT_S")
    with build_session(limits) as session, watched(limit) as watchdog:
        check_url(url, limits, watchdog)
        try:
            response = session.post(
                url,
                data=body,
                headers=request_headers,
                stream=True,  # the answer's body is never read, so it cannot be large
                allow_redirects=False,
                timeout=timeouts(limits, watchdog, host, limit),
            )
            response.close()
        except NETWORK_ERRORS as exc:
            raise network_failure(exc, watchdog, host, "POST to") from exc
    return PostResult(status_code=response.status_code, duration_ms=int((time.monotonic() - started) * 1000))
