"""What a batch's task returns, as Celery logs it: its images' outcomes counted."""

from __future__ import annotations

import image_tasks


def test_one_image_that_completed_reads_completed() -> None:
    assert image_tasks.summary({7: "completed"}) == "completed"
    assert image_tasks.summary({7: "reused"}) == "completed"
    assert image_tasks.summary({7: "http_404"}) == "http_404"


def test_a_batch_counts_each_outcome_with_reuse_among_the_completed() -> None:
    found = {1: "completed", 2: "reused", 3: "retry:timeout", 4: "completed", 5: "skipped"}
    assert image_tasks.summary(found) == "completed:3 retry:timeout:1 skipped:1"
    assert image_tasks.summary({1: "completed", 2: "completed"}) == "completed:2"
