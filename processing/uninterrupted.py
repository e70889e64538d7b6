"""Sections of a task that the soft time limit must not cut in two."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: billiard's SIG_SOFT_TIMEOUT: the pool's parent sends it to the process when the soft time limit passes.
SOFT_LIMIT_SIGNAL = signal.SIGUSR1


@contextmanager
def soft_limit_held() -> Iterator[None]:
    """Run the block with the soft time limit held back; if it passed meanwhile, it strikes as the block ends.

    For bookkeeping that must finish once started (a transaction committed, then what its answer asks for):
    the limit's exception raised in between would leave the committed half without the rest. The hard time
    limit still ends the process. Python runs signal handlers on the main thread only, so the limit's handler
    is swapped there for one that notes the signal; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    struck: list[tuple[int, FrameType | None]] = []
    previous = signal.signal(SOFT_LIMIT_SIGNAL, lambda signum, frame: struck.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(SOFT_LIMIT_SIGNAL, previous)
        if struck and callable(previous):
            previous(*struck[0])
