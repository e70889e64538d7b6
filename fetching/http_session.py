"""The HTTP sessions of outbound calls and what bounds each call: timeouts, the body's size, address slots.

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

from fetching.address_guard import (
    BlockedAddressError,
    DnsResolutionError,
    GuardedAdapter,
    reporting_pins,
    resolve_checked,
)
from fetching.deadline import Watchdog
from fetching.errors import FetchError, timeout_error, translate
from fetching.host_slots import HostBusy, HostSlots, Slot, address_key
from network_policy.addresses import IPAddress, Network
from network_policy.urls import MAX_URL_LENGTH, url_problem

CHUNK_SIZE = 64 * 1024
# A host slot's lease outlives the fetch's deadline by this much, for the release to arrive.
SLOT_LEASE_GRACE_S = 10.0


@dataclass(frozen=True)
class FetchLimits:
    """What bounds every outbound call: timeouts, the body's size, redirects, the networks it may reach, URL length."""

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    max_redirects: int = 5
    allowed_networks: tuple[Network, ...] = ()
    user_agent: str = "catalog-image-service/1.0"
    max_url_length: int = MAX_URL_LENGTH


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


def check_url(url: str, limits: FetchLimits, watchdog: Watchdog) -> None:
    """Raise ``invalid_url`` unless ``url`` passes the URL rule, or ``blocked_address`` if its host is blocked.

    A blocked host is the verdict that counts, whatever else is wrong with the URL: one that hides it
    behind a user name is refused for where it leads. Only a host that the rule would pass on its own
    is resolved, within the call's deadline.
    """
    problem = url_problem(url, limits.max_url_length)
    if problem is None:
        return
    host = _host_to_check(url, limits.max_url_length)
    if host is not None:
        try:
            resolve_checked(host, None, limits.allowed_networks)
        except BlockedAddressError as exc:
            raise translate(exc, watchdog, host) from exc
        except DnsResolutionError:
            pass  # an invalid URL whose host does not resolve is still just invalid
    raise FetchError("invalid_url", f"The URL cannot be fetched: {problem.message}.")


def _host_to_check(url: str, max_length: int) -> str | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    authority = parts.netloc.rpartition("@")[2]
    if not host or url_problem(f"http://{authority}/", max_length) is not None:
        return None
    return host


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
def address_slots(slots: HostSlots | None, watchdog: Watchdog) -> Iterator[None]:
    """Hold, for the block, a download slot of the address each request in it is pinned to.

    The slot is taken once the guard has resolved and checked the address, before connecting, and waited
    for no longer than the deadline: every spelling of an address, every name resolving to it and every
    redirect hop to it counts against the same slots.
    """
    if slots is None:
        yield
        return
    held: list[Slot | None] = []

    def take(host: str, address: IPAddress) -> None:
        key = address_key(address)
        try:
            held.append(
                slots.acquire(key, wait_s=watchdog.remaining(), lease_s=watchdog.remaining() + SLOT_LEASE_GRACE_S)
            )
        except HostBusy:
            raise FetchError(
                "host_busy",
                f"{host} ({key}) already had {slots.limit} downloads in progress for the whole time limit.",
                transient=True,
            ) from None

    try:
        with reporting_pins(take):
            yield
    finally:
        for slot in held:
            slots.release(slot)
