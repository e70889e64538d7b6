"""Status pages rendered once per version and served from memory, within a budget of bytes."""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from models import FINAL_REQUEST_STATUSES

#: The share of the budget one page may take and still be kept: a bigger page is streamed as it renders.
PAGE_SHARE = 4
#: What each kept page costs beside its body: its key, its record and the dictionary's entry.
ENTRY_OVERHEAD = 512


@dataclass(frozen=True)
class RenderedPage:
    etag: str
    body: bytes
    status: str
    rendered_at: float


@dataclass(frozen=True)
class StreamedPage:
    """A page too big to keep: its parts, sent as they are rendered, under its ETag."""

    etag: str
    parts: Iterator[bytes]


class RenderedPages:
    """Status pages rendered once per version and served from memory, so polls cost a lookup, not a build.

    While a request runs, each image it finishes is a new version; rendering every one of them for
    every poller would cost more than the images. So while the request's status stays the same and
    is not final, a page rendered at most ``max_lag_s`` ago is served, under its own ETag; a change of
    status (the final one above all) always shows at once. Concurrent polls of one page wait for one
    render instead of each making their own.

    Bounded in bytes: the kept pages' bodies (and ENTRY_OVERHEAD each) stay within ``budget_bytes``, least
    recently used out first. A page over ``budget_bytes // PAGE_SHARE`` is never kept: the parts rendered so
    far and the rest of its render are handed back to be streamed (StreamedPage), so one render holds no more
    than that share and one part.
    """

    def __init__(self, budget_bytes: int = 32 << 20, max_lag_s: float = 0.5) -> None:
        self.budget_bytes = budget_bytes
        self.max_page_bytes = budget_bytes // PAGE_SHARE
        self.max_lag_s = max_lag_s
        #: What the kept pages cost now, counted as the budget counts them.
        self.kept_bytes = 0
        self._pages: OrderedDict[tuple[Any, ...], RenderedPage] = OrderedDict()
        self._lock = threading.Lock()
        self._render_locks = [threading.Lock() for _ in range(64)]

    def serve(
        self, key: tuple[Any, ...], etag: str, status: str, render: Callable[[], bytes | Iterable[bytes]]
    ) -> RenderedPage | StreamedPage:
        """The page for ``key`` at version ``etag`` (``status``), or a recent one as above.

        ``render`` makes the page's body, whole or in parts; a page too big to keep comes back as a StreamedPage
        whose remaining parts render as they are read.
        """
        found = self._usable(key, etag, status)
        if found is not None:
            return found
        with self._render_locks[hash(key) % len(self._render_locks)]:
            found = self._usable(key, etag, status)
            if found is not None:
                return found
            rendered = render()
            parts = iter((rendered,) if isinstance(rendered, bytes) else rendered)
            body: list[bytes] = []
            size = 0
            for part in parts:
                body.append(part)
                size += len(part)
                if size > self.max_page_bytes:
                    self._drop(key)
                    return StreamedPage(etag, itertools.chain(body, parts))
            page = RenderedPage(etag, b"".join(body), status, time.monotonic())
            self._keep(key, page)
            return page

    def _keep(self, key: tuple[Any, ...], page: RenderedPage) -> None:
        with self._lock:
            self._forget(key)
            self._pages[key] = page
            self.kept_bytes += len(page.body) + ENTRY_OVERHEAD
            while self.kept_bytes > self.budget_bytes:
                oldest = next(iter(self._pages))
                self._forget(oldest)

    def _drop(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            self._forget(key)

    def _forget(self, key: tuple[Any, ...]) -> None:
        """Remove ``key``'s page, holding ``_lock``."""
        page = self._pages.pop(key, None)
        if page is not None:
            self.kept_bytes -= len(page.body) + ENTRY_OVERHEAD

    def usable(self, key: tuple[Any, ...], etag: str, status: str) -> RenderedPage | None:
        """The kept page for ``key`` at version ``etag`` (``status``), or a recent one as above; None if neither."""
        return self._usable(key, etag, status)

    def _usable(self, key: tuple[Any, ...], etag: str, status: str) -> RenderedPage | None:
        with self._lock:
            page = self._pages.get(key)
            if page is None:
                return None
            recent = (
                page.status == status
                and status not in FINAL_REQUEST_STATUSES
                and time.monotonic() - page.rendered_at <= self.max_lag_s
            )
            if page.etag != etag and not recent:
                return None
            self._pages.move_to_end(key)
            return page
