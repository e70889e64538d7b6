"""The fetcher's limits, read from the service's settings."""

from __future__ import annotations

from config import Settings
from fetching import fetcher


def fetch_limits(settings: Settings) -> fetcher.FetchLimits:
    """The limits every outbound request of the service runs under: the ``FETCH_*`` settings."""
    return fetcher.FetchLimits(
        connect_timeout_s=settings.fetch_connect_timeout_s,
        read_timeout_s=settings.fetch_read_timeout_s,
        total_timeout_s=settings.fetch_total_timeout_s,
        max_bytes=settings.fetch_max_bytes,
        max_redirects=settings.fetch_max_redirects,
        allowed_networks=settings.fetch_allowed_networks,
        max_url_length=settings.max_url_length,
    )
