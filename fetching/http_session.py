"""The HTTP sessions of outbound calls and what bounds each call: timeouts, the body's size, host slots.

Every request goes through ``address_guard.GuardedAdapter``, which checks and pins the address
actually connected to. Bodies are streamed up to ``max_bytes`` and the whole call runs under a
deadline (``deadline.watched``).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from fetching.address_guard import GuardedAdapter
from fetching.deadline import Watchdog
from fetching.errors import FetchError, timeout_error
from fetching.host_slots import HostBusy, HostSlots
from network_policy.addresses import Network

CHUNK_SIZE = 64 * 1024
MAX_URL_LENGTH = 8192
# A host slot's lease outlives the fetch's deadline by this much, for the release to arrive.
SLOT_LEASE_GRACE_S = 10.0
_ALLOWED_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class FetchLimits:
    """What bounds every outbound call: its timeouts, the body's size, the redirects, the networks it may reach."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    max_redirects: int = 5
    allowed_networks: tuple[Network, ...] = ()
    user_agent: str = "catalog-image-service/1.0"


_sessions = threading.local()


def session_for(limits: FetchLimits) -> requests.Session:
    """This thread's kept-alive session for these limits, so downloads from one host reuse connections.

    Pools are keyed by the pinned (host, address, port), and every request is resolved and checked
    again before a pooled connection is taken, so keep-alive never bypasses the guard. A forked
    child builds its own: sockets are never shared across processes.
    """
    cache = getattr(_sessions, "by_limits", None)
    if cache is None or _sessions.pid != os.getpid():
        cache = _sessions.by_limits = {}
        _sessions.pid = os.getpid()
    key = (limits.allowed_networks, limits.user_agent)
    session = cache.get(key)
    if session is None:
        session = cache[key] = build_session(limits)
    return session


def build_session(limits: FetchLimits) -> requests.Session:
    """A new session whose every request goes through the address guard, with no proxies from the environment."""
    session = requests.Session()
    session.trust_env = False  # environment proxies or netrc must not bypass the guard
    session.proxies = {}
    session.headers = CaseInsensitiveDict(
        {
            "User-Agent": limits.user_agent,
            # A compressed body could expand past max_bytes in one read; ask for none.
            "Accept-Encoding": "identity",
            "Accept": "*/*",
        }
    )
    session.mount("http://", GuardedAdapter(is_https=False, allowed=limits.allowed_networks))
    session.mount("https://", GuardedAdapter(is_https=True, allowed=limits.allowed_networks))
    return session


def host_for_message(url: str) -> str:
    """The host of ``url`` as error messages name it."""
    try:
        return urlsplit(url).hostname or "the server"
    except ValueError:
        return "the server"


def check_url(url: str) -> None:
    """Raise ``invalid_url`` unless ``url`` is an http(s) URL with a host."""
    if not isinstance(url, str) or not url.strip():
        raise FetchError("invalid_url", "The URL is empty.")
    if len(url) > MAX_URL_LENGTH:
        raise FetchError("invalid_url", f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise FetchError("invalid_url", f"The URL cannot be parsed ({exc}).") from None
    if parts.scheme.lower() not in _ALLOWED_SCHEMES:
        scheme = parts.scheme or "none"
        raise FetchError("invalid_url", f"Only http and https URLs can be fetched, not {scheme!r}.")
    if not parts.hostname:
        raise FetchError("invalid_url", "The URL has no host.")


def _declared_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def read_capped(response: requests.Response, limits: FetchLimits, watchdog: Watchdog, host: str) -> bytes:
    """The body of ``response``, refused as ``too_large`` past ``max_bytes`` and cut at the deadline."""
    too_large = FetchError("too_large", f"The file at {host} is larger than {limits.max_bytes} bytes.")
    declared = _declared_length(response)
    if declared is not None and declared > limits.max_bytes:
        raise too_large
    # Not a bytearray: BytesIO hands over its buffer as the bytes, where bytes(bytearray) would
    # hold the body twice for a moment.
    body = io.BytesIO()
    # iter_content decodes any Content-Encoding the server sent anyway, so the
    # cap applies to decoded bytes.
    for chunk in response.iter_content(CHUNK_SIZE):
        if watchdog.expired():
            raise timeout_error(host)
        if body.tell() + len(chunk) > limits.max_bytes:
            raise too_large
        body.write(chunk)
    if watchdog.fired:
        # The watchdog's shutdown can look like a clean end of a close-delimited body.
        raise timeout_error(host)
    return body.getvalue()


def timeouts(limits: FetchLimits, watchdog: Watchdog, host: str, read_timeout_s: float) -> tuple[float, float]:
    """The (connect, read) timeouts of one request, neither past what the deadline has left."""
    remaining = watchdog.remaining()
    if remaining <= 0:
        raise timeout_error(host)
    return min(limits.connect_timeout_s, remaining), min(read_timeout_s, remaining)


@contextmanager
def host_slot(slots: HostSlots | None, host: str, watchdog: Watchdog) -> Iterator[None]:
    """Hold one of ``host``'s download slots for the block, waiting for it no longer than the deadline."""
    if slots is None:
        yield
        return
    try:
        slot = slots.acquire(host, wait_s=watchdog.remaining(), lease_s=watchdog.remaining() + SLOT_LEASE_GRACE_S)
    except HostBusy:
        raise FetchError(
            "host_busy",
            f"{host} already had {slots.limit} downloads in progress for the whole time limit.",
            transient=True,
        ) from None
    try:
        yield
    finally:
        slots.release(slot)
