"""The SSRF guard at the connection level: resolve, check every address, pin the connection to it.

``GuardedAdapter`` resolves the host once, refuses the request if any resolved address is blocked
by ``network_policy.addresses``, and pins the connection to the first resolved address (the design of
requests-hardened's ``IPFilterAdapter``), so the address checked is the address connected to and a
second DNS answer cannot slip past; ``Host``, SNI and certificate checks still use the name. It
subclasses ``HTTPAdapter`` rather than ``IPFilterAdapter`` because the latter's hook always runs its
own resolution and loopback-only policy, which would resolve twice.

Name resolution, which no socket timeout covers, is waited for only as long as the call's deadline
(``deadline.watched``) has left. ``reporting_pins`` tells a caller each address a request is pinned to
before it connects, so what is counted per address is the address actually connected to.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util.connection import allowed_gai_family  # type: ignore[attr-defined]

from fetching.deadline import WatchedHTTPConnectionPool, WatchedHTTPSConnectionPool, current_watchdog
from network_policy.addresses import IPAddress, Network, blocked_reason, literal_address

log = logging.getLogger(__name__)


class BlockedAddressError(requests.exceptions.RequestException):
    """Raised inside the adapter when a host resolves to a blocked address."""

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        super().__init__(f"{host} resolves to blocked address {address} ({reason})")
        self.host = host
        self.address = address
        self.reason = reason


class DnsResolutionError(requests.exceptions.RequestException):
    """Raised inside the adapter when a host does not resolve."""


class DnsTimeoutError(DnsResolutionError):
    """Raised inside the adapter when a host's resolution outlasts the call's deadline."""


# --- the guarded adapter -----------------------------------------------------


def _getaddrinfo_within_deadline(host: str, port: int | None) -> list[Any]:
    family = allowed_gai_family()
    watchdog = current_watchdog()
    if watchdog is None:
        return socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    # getaddrinfo cannot be interrupted, so it runs in a thread of its own that is left behind if it
    # outlasts the deadline; it ends when the resolver gives up.
    answer: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()

    def lookup() -> None:
        try:
            answer.set_result(socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM))
        except BaseException as exc:
            answer.set_exception(exc)

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    try:
        return answer.result(timeout=max(watchdog.remaining(), 0.0))
    except concurrent.futures.TimeoutError:
        raise DnsTimeoutError(f"resolving {host!r} outlasted the deadline") from None


def resolve_checked(host: str, port: int | None, allowed: tuple[Network, ...]) -> IPAddress:
    """Resolve host, raise BlockedAddressError if any address is blocked, and return the one to pin."""
    literal = literal_address(host)
    if literal is not None:
        # Never hand an IP literal to the resolver: odd spellings must not reach DNS.
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = _getaddrinfo_within_deadline(host, port)
        except (socket.gaierror, UnicodeError) as exc:
            raise DnsResolutionError(f"cannot resolve {host!r}: {exc}") from exc
        addresses = [
            ipaddress.ip_address(sockaddr[0])
            for family, _type, _proto, _name, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        ]
        if not addresses:
            raise DnsResolutionError(f"{host!r} has no IPv4 or IPv6 address")
    for address in addresses:
        reason = blocked_reason(address, allowed)
        if reason is not None:
            log.warning("refused outbound request to %s: address %s is blocked (%s)", host, address, reason)
            raise BlockedAddressError(host, address, reason)
    return addresses[0]


PinListener = Callable[[str, IPAddress], None]

_pin_listener: contextvars.ContextVar[PinListener | None] = contextvars.ContextVar(
    "address_guard_pin_listener", default=None
)


@contextmanager
def reporting_pins(listener: PinListener) -> Iterator[None]:
    """Call ``listener(host, address)`` for each request of the block once its address is checked, before it connects.

    What the listener raises ends the request before it connects.
    """
    token = _pin_listener.set(listener)
    try:
        yield
    finally:
        _pin_listener.reset(token)


class GuardedAdapter(HTTPAdapter):
    """HTTPAdapter that checks and pins the resolved address of every request (cf. requests-hardened)."""

    def __init__(self, is_https: bool, allowed: tuple[Network, ...] = ()) -> None:
        self._is_https = is_https
        self._allowed = allowed
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": WatchedHTTPConnectionPool,
            "https": WatchedHTTPSConnectionPool,
        }

    def build_connection_pool_key_attributes(
        self,
        request: requests.PreparedRequest,
        verify: bool | str,
        cert: str | tuple[str, str] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        hostname = host_params["host"]
        port = host_params["port"]
        if not hostname:
            raise requests.exceptions.InvalidURL("URL has no host")

        # Copy: the caller's headers mapping may be shared between requests.
        request.headers = CaseInsensitiveDict(request.headers or {})
        host_header = f"[{hostname}]" if ":" in hostname else hostname
        if port is not None:
            host_header += f":{port}"
        request.headers["Host"] = host_header

        if self._is_https:
            # Certificate and SNI must match the name, not the pinned IP.
            pool_kwargs["assert_hostname"] = hostname
            pool_kwargs["server_hostname"] = hostname

        default_port = 443 if host_params["scheme"] == "https" else 80
        pinned = resolve_checked(hostname, port or default_port, self._allowed)
        listener = _pin_listener.get()
        if listener is not None:
            listener(hostname, pinned)
        host_params["host"] = f"[{pinned}]" if pinned.version == 6 else str(pinned)
        return host_params, pool_kwargs

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        raise TypeError("GuardedAdapter only supports get_connection_with_tls_context")
