"""Status pages rendered once per version and served from memory."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models import FINAL_REQUEST_STATUSES


@dataclass(frozen=True)
class RenderedPage:
    etag: str
    body: bytes
    status: str
    rendered_at: float


class RenderedPages:
    """Status pages rendered once per version and served from memory, so polls cost a lookup, not a build.

    While a request runs, each image it finishes is a new version; rendering every one of them for
    every poller would cost more than the images. So while the request's status stays the same and
    is not final, a page rendered at most ``max_lag_s`` ago is served, under its own ETag; a change of
    status (the final one above all) always shows at once. Concurrent polls of one page wait for one
    render instead of each making their own. Bounded, least recently used out first.
    """

    def __init__(self, capacity: int = 256, max_lag_s: float = 0.5) -> None:
        self.capacity = capacity
        self.max_lag_s = max_lag_s
        self._pages: OrderedDict[tuple[Any, ...], RenderedPage] = OrderedDict()
        self._lock = threading.Lock()
        self._render_locks = [threading.Lock() for _ in range(64)]

    def serve(self, key: tuple[Any, ...], etag: str, status: str, render: Callable[[], bytes]) -> RenderedPage:
        """The page for ``key`` at version ``etag`` (``status``), or a recent one as above."""
        found = self._usable(key, etag, status)
        if found is not None:
            return found
        with self._render_locks[hash(key) % len(self._render_locks)]:
            found = self._usable(key, etag, status)
            if found is not None:
                return found
            rendered = RenderedPage(etag, render(), status, time.monotonic())
            with self._lock:
                self._pages[key] = rendered
                self._pages.move_to_end(key)
                while len(self._pages) > self.capacity:
                    self._pages.popitem(last=False)
            return rendered

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
