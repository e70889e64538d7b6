"""When a running batch takes the images of the queue's next message, so that their downloads overlap its
encodes (``processing/batch.py`` runs the batch)."""

from __future__ import annotations

import time
from concurrent.futures import Future

from config import Settings
from lifecycle import claims
from outputs import making

#: A batch takes the queue's next message while the downloads it holds, done and not encoded, are under this.
HELD_BYTES_TO_TAKE_MORE = 64 * 1024 * 1024
#: For how much of its soft time limit, and for how many batches' worth of images in all, a batch takes more.
TAKE_MORE_FOR_SHARE_OF_LIMIT = 0.25
TAKE_MORE_BATCHES = 8


class TakingMore:
    """When a running batch takes the images of the queue's next message: once no more of its own are in hand
    than a batch, so the next downloads overlap these encodes; while what it holds downloaded is small; and
    for a bounded time and count, so that the task ends and its process is recycled as Celery would."""

    def __init__(self, settings: Settings, taken: int) -> None:
        self.batch_size = settings.image_batch_size
        self.until = time.monotonic() + settings.task_soft_time_limit_s * TAKE_MORE_FOR_SHARE_OF_LIMIT
        self.taken = taken
        self.most = settings.image_batch_size * TAKE_MORE_BATCHES
        self.queue_empty = False

    def wanted(self, fetching: dict[Future, claims.ImageWork]) -> bool:
        if self.queue_empty or len(fetching) > self.batch_size or self.taken >= self.most:
            return False
        return time.monotonic() < self.until and _held_bytes(fetching) < HELD_BYTES_TO_TAKE_MORE

    def took(self, works: list[claims.ImageWork]) -> None:
        self.taken += len(works)
        self.queue_empty = not works


def _held_bytes(fetching: dict[Future, claims.ImageWork]) -> int:
    """The bytes of the downloads done and not yet encoded."""
    held = 0
    for future in fetching:
        if (
            future.done()
            and future.exception() is None
            and isinstance(fetched := future.result(), making.FetchedSource)
        ):
            held += sum(len(data) for data in fetched.download)
    return held
