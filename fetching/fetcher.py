"""Image downloads: redirects followed by hand, every hop checked again, and conditional GETs.

Redirects are followed here by hand, so every hop is a new request that is checked again: its URL
against ``network_policy.urls``, its address by the guard, and each holds a slot of the address it
connects to while it talks to it (see ``http_session`` for what bounds each request).

``fetch_image_revalidated`` sends the ``ETag`` and ``Last-Modified`` of an earlier answer back as
``If-None-Match`` and ``If-Modified-Since``, on every hop, so an unchanged image costs a 304 and no body.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from fetching.deadline import TimeLimit, Watchdog, watched
from fetching.errors import NETWORK_ERRORS, FetchError, network_failure
from fetching.host_slots import HostSlots
from fetching.http_session import (
    READ_TIMEOUT_SETTING,
    TOTAL_TIMEOUT_SETTING,
    FetchLimits,
    address_slots,
    check_url,
    host_for_message,
    read_capped,
    session_for,
    timeouts,
)

__all__ = [
    "MAX_RETRY_AFTER_S",
    "MAX_VALIDATOR_LENGTH",
    "FetchError",
    "FetchLimits",
    "FetchedImage",
    "Validators",
    "fetch_image",
    "fetch_image_revalidated",
    "parse_retry_after",
]


MAX_RETRY_AFTER_S = 60.0
# Validators go back out in a request header, so a value the server sent is kept only if it is short
# and visible ASCII (inner spaces allowed, for an HTTP-date); anything else counts as absent.
MAX_VALIDATOR_LENGTH = 1024
_VALIDATOR = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


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


#: What an image download accepts.
IMAGE_ACCEPT = "image/*,*/*;q=0.8"


def fetch_image(url: str, limits: FetchLimits, slots: HostSlots | None = None, accept: str = IMAGE_ACCEPT) -> bytes:
    """GET url with every guard (address policy, redirects, size cap, deadline); raises FetchError.

    With ``slots``, each request (the first and every redirect hop) first waits for a slot of the address
    it connects to, within the same deadline.
    """
    fetched = fetch_image_revalidated(url, limits, slots, accept=accept)
    assert fetched.data is not None  # an unconditional GET answered 304 raises http_304
    return fetched.data


def fetch_image_revalidated(
    url: str,
    limits: FetchLimits,
    slots: HostSlots | None = None,
    validators: Validators | None = None,
    accept: str = IMAGE_ACCEPT,
) -> FetchedImage:
    """``fetch_image``, conditional on ``validators``: a 304 to them is ``not_modified`` and reads no body.

    The validators go out on every redirect hop, since they belong to what url led to last time. A stored
    value that is not short visible ASCII is not sent. On a 304 the answer's validators replace the ones
    given, field by field, as a cache freshens a stored response (RFC 9111, 4.3.4).

    Raises:
        FetchError: as ``fetch_image``; ``http_304`` when a GET that sent no validators is answered 304.
    """
    given = validators or Validators()
    sent = _clean_validators(given.etag, given.last_modified)
    session = session_for(limits)
    with watched(TimeLimit(limits.total_timeout_s, TOTAL_TIMEOUT_SETTING)) as watchdog:
        check_url(url, limits, watchdog)
        return _get_following_redirects(session, url, limits, watchdog, sent, slots, accept)


def _get_following_redirects(
    session: requests.Session,
    url: str,
    limits: FetchLimits,
    watchdog: Watchdog,
    sent: Validators,
    slots: HostSlots | None,
    accept: str,
) -> FetchedImage:
    conditional = _conditional_headers(sent)
    current, host = url, host_for_message(url)
    try:
        for _hop in range(limits.max_redirects + 1):
            host = host_for_message(current)
            # Each hop's slot is let go before the next is waited for: holding one while waiting could
            # deadlock two fetches redirected across each other's hosts.
            with address_slots(slots, watchdog):
                response = session.get(
                    current,
                    headers={"Accept": accept, **conditional},
                    stream=True,
                    allow_redirects=False,
                    timeout=timeouts(limits, watchdog, host, TimeLimit(limits.read_timeout_s, READ_TIMEOUT_SETTING)),
                )
                with response:
                    target = session.get_redirect_target(response)
                    if target is None:
                        return _answer(response, limits, watchdog, host, sent)
            current = urljoin(response.url, target)
            check_url(current, limits, watchdog)
    except NETWORK_ERRORS as exc:
        raise network_failure(exc, watchdog, host, "fetch from") from exc
    raise FetchError(
        "too_many_redirects", f"The URL redirected more than {limits.max_redirects} times.", transient=False
    )


def _answer(
    response: requests.Response, limits: FetchLimits, watchdog: Watchdog, host: str, sent: Validators
) -> FetchedImage:
    answered = _clean_validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
    if response.status_code == 304 and (sent.etag is not None or sent.last_modified is not None):
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
    data = read_capped(response, limits, watchdog, host)
    return FetchedImage(data=data, validators=answered, not_modified=False)
