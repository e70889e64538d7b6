"""A labelled Prometheus counter's increments kept per thread and added to it in batches."""

from __future__ import annotations

import os
import threading
import time

from prometheus_client import Counter


class BatchedCounts:
    """Increments of a labelled counter kept per thread and added to it in batches.

    In multiprocess mode every value of a process shares one lock in prometheus_client and each increment
    writes the process's file: an API process's 80 threads queued on it for every response (28% of their
    samples under 50 pollers). Here a thread adds to counts of its own, under a lock only it and a flush
    take, and hands them over every ``EVERY`` counts or ``FLUSH_S`` seconds; a scrape of this process hands
    over every thread's first, and a timer those of threads gone quiet, so another process's scrape lags
    by at most ``FLUSH_S``.
    """

    EVERY = 64
    FLUSH_S = 0.5

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._local = threading.local()
        self._threads: list[tuple[threading.Lock, dict[tuple[str, ...], int]]] = []
        self._threads_lock = threading.Lock()
        self._timer_pid: int | None = None

    def inc(self, *labels: str) -> None:
        mine = getattr(self._local, "counts", None)
        if mine is None:
            mine = self._local.counts = self._register()
        lock, counts = mine
        with lock:
            counts[labels] = counts.get(labels, 0) + 1
            due = sum(counts.values()) >= self.EVERY
        if due:
            self._hand_over(lock, counts)

    def flush(self) -> None:
        """Hand every thread's counts of this process to the counter."""
        with self._threads_lock:
            threads = list(self._threads)
        for lock, counts in threads:
            self._hand_over(lock, counts)

    def _register(self) -> tuple[threading.Lock, dict[tuple[str, ...], int]]:
        mine: tuple[threading.Lock, dict[tuple[str, ...], int]] = (threading.Lock(), {})
        with self._threads_lock:
            if self._timer_pid != os.getpid():  # first count of this process (a forked worker starts anew)
                self._threads = []
                self._timer_pid = os.getpid()
                threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()
            self._threads.append(mine)
        return mine

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_S)
            self.flush()

    def _hand_over(self, lock: threading.Lock, counts: dict[tuple[str, ...], int]) -> None:
        with lock:
            taken = dict(counts)
            counts.clear()
        for labels, amount in taken.items():
            self.counter.labels(*labels).inc(amount)
