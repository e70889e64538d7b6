"""Responses counted per thread and handed to the Prometheus counter in batches, none lost."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter

from observability.batched_counts import BatchedCounts


def _counter() -> tuple[Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    return Counter("probe_responses", "test", ["route", "status"], registry=registry), registry


def _count(registry: CollectorRegistry, route: str, status: str) -> float:
    return registry.get_sample_value("probe_responses_total", {"route": route, "status": status}) or 0.0


def test_every_count_of_many_threads_reaches_the_counter_by_a_flush():
    counter, registry = _counter()
    batched = BatchedCounts(counter)
    go = threading.Barrier(8)

    def respond(n: int) -> None:
        go.wait()
        for i in range(1000):
            batched.inc("/api/status/<id>", "200" if i % 10 else "304")

    threads = [threading.Thread(target=respond, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batched.flush()

    assert _count(registry, "/api/status/<id>", "200") == 7200
    assert _count(registry, "/api/status/<id>", "304") == 800


def test_a_few_counts_reach_the_counter_with_no_flush_asked():
    counter, registry = _counter()
    batched = BatchedCounts(counter)
    batched.inc("/healthz", "200")
    assert _count(registry, "/healthz", "200") == 0  # held by this thread, below a batch

    deadline = time.monotonic() + 10
    while _count(registry, "/healthz", "200") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _count(registry, "/healthz", "200") == 1


def test_a_batch_is_handed_over_as_soon_as_it_is_full():
    counter, registry = _counter()
    batched = BatchedCounts(counter)
    for _ in range(BatchedCounts.EVERY):
        batched.inc("/api/upload", "202")
    assert _count(registry, "/api/upload", "202") == BatchedCounts.EVERY
