"""Outbound HTTP for image downloads and webhook POSTs: the limits, the redirects, the errors.

Every request goes through ``address_guard.GuardedAdapter``, which checks and pins the address
actually connected to. Redirects are followed here by hand, so every hop is a new request that is
checked again; webhook POSTs never follow them. Bodies are streamed up to ``max_bytes`` and the
whole call runs under a deadline (``deadline.watched``).

``fetch_image_revalidated`` sends the ``ETag`` and ``Last-Modified`` of an earlier answer back as
``If-None-Match`` and ``If-Modified-Since``, on every hop, so an unchanged image costs a 304 and no body.

DNS failures are reported as ``dns_error`` with ``transient=True``: resolvers fail temporarily
often enough that a few retries are worth their cost.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import io
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import LocationParseError, NameResolutionError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from fetching.address_guard import BlockedAddressError, DnsResolutionError, DnsTimeoutError, GuardedAdapter
from fetching.deadline import Watchdog, watched
from fetching.host_slots import HostBusy, HostSlots
from network_policy.addresses import Network

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
MAX_URL_LENGTH = 8192
MAX_RETRY_AFTER_S = 60.0
# A host slot's lease outlives the fetch's deadline by this much, for the release to arrive.
SLOT_LEASE_GRACE_S = 10.0
_ALLOWED_SCHEMES = ("http", "https")
# Validators go back out in a request header, so a value the server sent is kept only if it is short
# and visible ASCII (inner spaces allowed, for an HTTP-date); anything else counts as absent.
MAX_VALIDATOR_LENGTH = 1024
_VALIDATOR = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


class FetchError(Exception):
    """A fetch or POST that did not succeed, with a stable code and a person-readable message."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        transient: bool = False,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after = retry_after
        self.status_code = status_code


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0
    total_timeout_s: float = 60.0
    max_bytes: int = 25 * 1024 * 1024
    max_redirects: int = 5
    allowed_networks: tuple[Network, ...] = ()
    user_agent: str = "catalog-image-service/1.0"


@dataclass(frozen=True)
class Validators:
    """What identifies the version of a URL's image fetched before: its ETag and Last-Modified, as sent."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchedImage:
    """A download's outcome: the body, or ``not_modified`` and no body; and the validators to send next time."""

    #: None when the server answered 304 Not Modified.
    data: bytes | None
    validators: Validators
    not_modified: bool


@dataclass(frozen=True)
class PostResult:
    status_code: int
    duration_ms: int


_sessions = threading.local()


def _session_for(limits: FetchLimits) -> requests.Session:
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
        session = cache[key] = _build_session(limits)
    return session


def _build_session(limits: FetchLimits) -> requests.Session:
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


# --- helpers -----------------------------------------------------------------


def _host_for_message(url: str) -> str:
    try:
        return urlsplit(url).hostname or "the server"
    except ValueError:
        return "the server"


def _check_url(url: str) -> None:
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


def _clean_validator(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip(" \t")  # the whitespace around a field value is no part of it (RFC 9110, 5.5)
    if len(value) > MAX_VALIDATOR_LENGTH or not _VALIDATOR.fullmatch(value):
        return None
    return value


def _clean_validators(etag: str | None, last_modified: str | None) -> Validators:
    return Validators(etag=_clean_validator(etag), last_modified=_clean_validator(last_modified))


def _conditional_headers(validators: Validators) -> dict[str, str]:
    headers = {}
    if validators.etag is not None:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified is not None:
        headers["If-Modified-Since"] = validators.last_modified
    return headers


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), bounded to 0..60."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    # requests wraps urllib3 errors in args[0]; urllib3 wraps its cause in .reason.
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        stack.extend(item for item in linked if isinstance(item, BaseException))


def _caused_by(exc: BaseException, *types: type[BaseException]) -> bool:
    return any(isinstance(item, types) for item in _causes(exc))


def _is_timeout(exc: BaseException) -> bool:
    # urllib3's NewConnectionError subclasses its TimeoutError for history's sake; a refusal is no timeout.
    return any(
        isinstance(item, (requests.exceptions.Timeout, Urllib3TimeoutError, TimeoutError))
        and not isinstance(item, NewConnectionError)
        for item in _causes(exc)
    )


def _timeout_error(host: str) -> FetchError:
    return FetchError("download_timeout", f"{host} did not answer within the time limit.", transient=True)


_INVALID_URL_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    LocationParseError,
    UnicodeError,
)


def _translate(exc: BaseException, watchdog: Watchdog, host: str) -> FetchError:
    if isinstance(exc, BlockedAddressError):
        return FetchError(
            "blocked_address", f"{host} points to an address this service does not connect to ({exc.reason})."
        )
    if isinstance(exc, DnsTimeoutError):
        return FetchError("dns_error", f"The host name {host} was not resolved within the time limit.", transient=True)
    if isinstance(exc, DnsResolutionError) or _caused_by(exc, NameResolutionError, socket.gaierror):
        return FetchError("dns_error", f"The host name {host} could not be resolved.", transient=True)
    if isinstance(exc, _INVALID_URL_ERRORS):
        return FetchError("invalid_url", f"The URL is not valid ({exc}).")
    if watchdog.fired or _is_timeout(exc):
        return _timeout_error(host)
    if isinstance(exc, requests.exceptions.SSLError):
        return FetchError("connection_error", f"The TLS connection to {host} failed verification.")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return FetchError("connection_error", f"{host} sent a body that could not be decoded.")
    return FetchError("connection_error", f"The connection to {host} failed.", transient=True)


_NETWORK_ERRORS = (requests.exceptions.RequestException, Urllib3HTTPError, http.client.HTTPException, OSError)


def _http_error(response: requests.Response, host: str) -> FetchError:
    status = response.status_code
    transient = status in (408, 429) or status >= 500
    return FetchError(
        f"http_{status}",
        f"{host} answered with HTTP status {status}.",
        transient=transient,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        status_code=status,
    )


def _declared_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def _read_capped(response: requests.Response, limits: FetchLimits, watchdog: Watchdog, host: str) -> bytes:
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
            raise _timeout_error(host)
        if body.tell() + len(chunk) > limits.max_bytes:
            raise too_large
        body.write(chunk)
    if watchdog.fired:
        # The watchdog's shutdown can look like a clean end of a close-delimited body.
        raise _timeout_error(host)
    return body.getvalue()


def _timeouts(limits: FetchLimits, watchdog: Watchdog, host: str, read_timeout_s: float) -> tuple[float, float]:
    remaining = watchdog.remaining()
    if remaining <= 0:
        raise _timeout_error(host)
    return min(limits.connect_timeout_s, remaining), min(read_timeout_s, remaining)


# --- public API --------------------------------------------------------------


@contextmanager
def _host_slot(slots: HostSlots | None, host: str, watchdog: Watchdog) -> Iterator[None]:
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


def fetch_image(url: str, limits: FetchLimits, slots: HostSlots | None = None) -> bytes:
    """GET url with every guard (address policy, redirects, size cap, deadline); raises FetchError.

    With ``slots``, the download first waits for one of its host's slots, within the same deadline.
    """
    fetched = fetch_image_revalidated(url, limits, slots)
    assert fetched.data is not None  # an unconditional GET answered 304 raises http_304
    return fetched.data


def fetch_image_revalidated(
    url: str, limits: FetchLimits, slots: HostSlots | None = None, validators: Validators | None = None
) -> FetchedImage:
    """``fetch_image``, conditional on ``validators``: a 304 to them is ``not_modified`` and reads no body.

    The validators go out on every redirect hop, since they belong to what url led to last time. A stored
    value that is not short visible ASCII is not sent. On a 304 the answer's validators replace the ones
    given, field by field, as a cache freshens a stored response (RFC 9111, 4.3.4).

    Raises:
        FetchError: as ``fetch_image``; ``http_304`` when a GET that sent no validators is answered 304.
    """
    _check_url(url)
    given = validators or Validators()
    sent = _clean_validators(given.etag, given.last_modified)
    conditional = _conditional_headers(sent)
    current, host = url, _host_for_message(url)
    session = _session_for(limits)
    with (
        watched(limits.total_timeout_s) as watchdog,
        _host_slot(slots, host, watchdog),
    ):
        try:
            for _hop in range(limits.max_redirects + 1):
                host = _host_for_message(current)
                response = session.get(
                    current,
                    headers={"Accept": "image/*,*/*;q=0.8", **conditional},
                    stream=True,
                    allow_redirects=False,
                    timeout=_timeouts(limits, watchdog, host, limits.read_timeout_s),
                )
                with response:
                    target = session.get_redirect_target(response)
                    if target is not None:
                        current = urljoin(response.url, target)
                        _check_url(current)
                        continue
                    answered = _clean_validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
                    if response.status_code == 304 and conditional:
                        # Nothing of a 304 is read, not even to keep the connection: http.client would
                        # follow a chunked "body" sent after it as far as the server cares to stream.
                        return FetchedImage(
                            data=None,
                            validators=Validators(
                                etag=answered.etag or sent.etag,
                                last_modified=answered.last_modified or sent.last_modified,
                            ),
                            not_modified=True,
                        )
                    if not 200 <= response.status_code < 300:
                        raise _http_error(response, host)
                    data = _read_capped(response, limits, watchdog, host)
                    return FetchedImage(data=data, validators=answered, not_modified=False)
        except FetchError:
            raise
        except _NETWORK_ERRORS as exc:
            error = _translate(exc, watchdog, host)
            if error.code != "blocked_address":
                log.info("fetch from %s failed: %s (%s)", host, error.code, type(exc).__name__)
            raise error from exc
    raise FetchError(
        "too_many_redirects", f"The URL redirected more than {limits.max_redirects} times.", transient=False
    )


def post_json(
    url: str, body: bytes, headers: dict[str, str], limits: FetchLimits, timeout_s: float = 15.0
) -> PostResult:
    """POST body without following redirects and return the status; raises FetchError for network failures."""
    _check_url(url)
    host = _host_for_message(url)
    request_headers = {"Content-Type": "application/json", **headers}
    started = time.monotonic()
    with _build_session(limits) as session, watched(timeout_s) as watchdog:
        try:
            response = session.post(
                url,
                data=body,
                headers=request_headers,
                stream=True,  # the answer's body is never read, so it cannot be large
                allow_redirects=False,
                timeout=_timeouts(limits, watchdog, host, timeout_s),
            )
            response.close()
        except FetchError:
            raise
        except _NETWORK_ERRORS as exc:
            error = _translate(exc, watchdog, host)
            if error.code != "blocked_address":
                log.info("POST to %s failed: %s (%s)", host, error.code, type(exc).__name__)
            raise error from exc
    return PostResult(status_code=response.status_code, duration_ms=int((time.monotonic() - started) * 1000))
