"""Which URLs this service fetches or calls: one rule for image URLs, webhook URLs and every redirect hop.

A URL passes when it is http or https, at most ``max_length`` characters, free of white space and
control characters, not two or more URLs run together (``a.jpg;b.jpg``, as catalog exports separate
them), without a user name or password, and names a valid host (a bracketed IPv6
literal, or letters of any script, digits, dots, hyphens and underscores) and a valid port. Whether
the host's address may be reached is ``addresses``' question, asked of the URLs that pass.

Pure and a leaf: no I/O, nothing imported from the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

#: The longest URL accepted anywhere (``MAX_URL_LENGTH`` sets another).
MAX_URL_LENGTH = 2048

_BAD_CHAR_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_HOST_CHARS_RE = re.compile(r"[\w.-]+")
# The common shape, accepted without urlsplit (which is several times slower); anything
# else takes the full path, which reaches the same verdict for what this matches.
_PLAIN_URL_RE = re.compile(
    r"https?://([a-z0-9][a-z0-9.-]*)(?::([0-9]{1,5}))?(?:[/?#][^\s\x00-\x1f\x7f-\x9f]*)?",
    re.IGNORECASE,
)

# Catalog exports separate the URLs of one cell with these; a ``;`` alone is legal in a URL's path,
# so only a split into parts that each start like an http(s) URL counts as several URLs.
_JOINERS_RE = re.compile(r"[;|\s]+")
_URL_START_RE = re.compile(r"https?://[^\s/?#;|]", re.IGNORECASE)


@dataclass(frozen=True)
class UrlProblem:
    """Why a URL is refused: a stable ``code`` and a message that does not repeat the URL."""

    code: str
    message: str


def url_problem(url: str, max_length: int = MAX_URL_LENGTH) -> UrlProblem | None:
    """What is wrong with ``url`` as a URL to fetch or call, or None when nothing is."""
    if not url:
        return UrlProblem("empty", "URL is empty")
    if len(url) > max_length:
        return UrlProblem("too_long", f"URL is {len(url)} characters long; the limit is {max_length}")
    plain = _plain_host(url) is not None
    # The fast path lets ';' and '|' through but never white space.
    joined = joined_urls(url) if not plain or ";" in url or "|" in url else 0
    if joined:
        return UrlProblem("several_urls", f"{joined} URLs run together, separated by ';', '|' or white space")
    if plain:
        return None
    if _BAD_CHAR_RE.search(url):
        return UrlProblem("bad_character", "URL contains white space or a control character")
    try:
        parts = urlsplit(url)
    except ValueError:
        return UrlProblem("unparseable", "not a valid URL")
    if parts.scheme.lower() not in ("http", "https"):
        return UrlProblem("bad_scheme", "not an http(s) URL")
    if "@" in parts.netloc:
        return UrlProblem("userinfo", "URL must not contain a user name or password")
    host = parts.hostname
    if not host:
        return UrlProblem("no_host", "URL has no host")
    # urlsplit has already checked a bracketed (IPv6) host; a name may hold letters
    # (any script, for IDNs), digits, dots, hyphens and underscores, nothing else.
    if not parts.netloc.startswith("[") and (_HOST_CHARS_RE.fullmatch(host) is None or not host.strip(".")):
        return UrlProblem("bad_host", "URL has an invalid host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return UrlProblem("bad_port", "URL has an invalid port")
    return None


def joined_urls(text: str) -> int:
    """How many http(s) URLs ``text`` holds separated by ``;``, ``|`` or white space; 0 unless two or more."""
    parts = [part for part in _JOINERS_RE.split(text) if part]
    if len(parts) < 2 or not all(_URL_START_RE.match(part) for part in parts):
        return 0
    return len(parts)


def url_host(url: str) -> str:
    """The host of a URL that ``url_problem`` passed: lowercased, an IPv6 literal without its brackets."""
    return _plain_host(url) or urlsplit(url).hostname or ""


def _plain_host(url: str) -> str | None:
    plain = _PLAIN_URL_RE.fullmatch(url)
    if plain is None or (plain.group(2) is not None and not 0 < int(plain.group(2)) <= 65535):
        return None
    return plain.group(1).lower()
