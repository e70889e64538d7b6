"""What went wrong with a fetch or a POST: ``FetchError``, and the transport's exceptions translated to it.

DNS failures are reported as ``dns_error`` with ``transient=True``: resolvers fail temporarily
often enough that a few retries are worth their cost.
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Iterator

import requests
from urllib3.exceptions import ConnectTimeoutError, LocationParseError, NameResolutionError, NewConnectionError
from urllib3.exceptions import HTTPError as Urllib3HTTPError
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from fetching.address_guard import BlockedAddressError, DnsResolutionError, DnsTimeoutError
from fetching.deadline import Watchdog

log = logging.getLogger(__name__)


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


def timeout_error(host: str, watchdog: Watchdog, exc: BaseException | None = None) -> FetchError:
    """The error of a call to ``host`` that ran out of time, naming the limit that ran out and its setting.

    The call's deadline, unless ``exc`` is a connect or read timeout that fired before it.
    """
    if exc is None or watchdog.expired() or watchdog.request_limits is None:
        message = f"{host} did not answer within {watchdog.limit}."
    elif _caused_by(exc, requests.exceptions.ConnectTimeout, ConnectTimeoutError):
        message = f"{host} did not accept a connection within {watchdog.request_limits[0]}."
    else:
        message = f"{host} sent nothing for {watchdog.request_limits[1]}."
    return FetchError("download_timeout", message, transient=True)


_INVALID_URL_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    LocationParseError,
    UnicodeError,
)


def translate(exc: BaseException, watchdog: Watchdog, host: str) -> FetchError:
    """The FetchError that a transport exception of a call to ``host`` under ``watchdog`` means."""
    if isinstance(exc, BlockedAddressError):
        return FetchError(
            "blocked_address", f"{host} points to an address this service does not connect to ({exc.reason})."
        )
    if isinstance(exc, DnsTimeoutError):
        return FetchError(
            "dns_error",
            f"The host name {host} was not resolved within the time limit of {watchdog.limit}.",
            transient=True,
        )
    if isinstance(exc, DnsResolutionError) or _caused_by(exc, NameResolutionError, socket.gaierror):
        return FetchError("dns_error", f"The host name {host} could not be resolved.", transient=True)
    if isinstance(exc, _INVALID_URL_ERRORS):
        return FetchError("invalid_url", f"The URL is not valid ({exc}).")
    if watchdog.fired or _is_timeout(exc):
        return timeout_error(host, watchdog, exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return FetchError("connection_error", f"The TLS connection to {host} failed verification.")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return FetchError("connection_error", f"{host} sent a body that could not be decoded.")
    return FetchError("connection_error", f"The connection to {host} failed.", transient=True)


NETWORK_ERRORS = (requests.exceptions.RequestException, Urllib3HTTPError, http.client.HTTPException, OSError)


def network_failure(exc: BaseException, watchdog: Watchdog, host: str, action: str) -> FetchError:
    """``translate``, and a log line for any failure but a refused address (the guard logs those itself)."""
    error = translate(exc, watchdog, host)
    if error.code != "blocked_address":
        log.info("%s %s failed: %s (%s)", action, host, error.code, type(exc).__name__)
    return error
