"""An upload fetched from a URL (``feed_url``): a platform's export or a merchant feed, read like an upload."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from config import Settings
from errors import ApiError
from fetching import fetcher
from fetching.errors import FetchError
from fetching.limits import fetch_limits
from network_policy.urls import url_problem

FEED_ACCEPT = "text/csv,text/tab-separated-values,text/plain;q=0.9,*/*;q=0.5"


@dataclass(frozen=True)
class FetchedFeed:
    url: str
    data: bytes
    sha256: str


def fetch_feed(raw_url: str, settings: Settings) -> FetchedFeed:
    """The file at ``raw_url``, fetched under the image downloads' guard and limits, but for its size: the upload's.

    Raises ApiError: ``invalid_feed_url``, ``blocked_address``, ``feed_too_large`` or ``feed_unavailable``.
    """
    url = raw_url.strip()
    problem = url_problem(url, settings.max_url_length)
    if problem is not None:
        raise ApiError(
            400,
            "invalid_feed_url",
            f"'feed_url' must be an absolute http(s) URL, got {url[:100]!r} ({problem.message}).",
            details=[{"field": "feed_url", "message": problem.message}],
        )
    limits = dataclasses.replace(fetch_limits(settings), max_bytes=settings.max_upload_bytes)
    try:
        data = fetcher.fetch_image(url, limits, accept=FEED_ACCEPT)
    except FetchError as exc:
        raise _refusal(exc, settings) from None
    return FetchedFeed(url, data, hashlib.sha256(data).hexdigest())


def _refusal(exc: FetchError, settings: Settings) -> ApiError:
    details = [{"field": "feed_url", "message": f"{exc.code}: {exc.message}"}]
    if exc.code == "blocked_address":
        return ApiError(422, "blocked_address", "'feed_url' points at an address the service may not call.", details)
    if exc.code == "too_large":
        return ApiError(
            413,
            "feed_too_large",
            f"The file at 'feed_url' is larger than {settings.max_upload_bytes} bytes, "
            "the upload limit (MAX_UPLOAD_BYTES).",
            details,
        )
    return ApiError(422, "feed_unavailable", f"The file at 'feed_url' could not be fetched: {exc.message}", details)
