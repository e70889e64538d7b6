"""The periodic work beat starts: the dispatcher's tick, the sweep that recovers what was lost, and retention."""

from __future__ import annotations

import logging
import uuid

from flask import current_app

from config import Settings
from delivery import outbox
from intake import idempotency
from lifecycle import creation, finalize, leases, orphans, recovery, retention
from observability import metrics
from queueing import broker, dispatch, task_names

log = logging.getLogger(__name__)

# A webhook message unclaimed this long after it was sent was lost with the broker.
WEBHOOK_LOST_AFTER_S = 60.0
# Messages being published when the sweeper counts the queue are not mistaken for lost ones.
QUEUE_GRACE_S = 5.0
# An import not done this long after it was sent is sent again (a running one is skipped).
IMPORT_LOST_AFTER_S = 60.0


def dispatch_due_work(settings: Settings) -> dict[str, int]:
    """Refill the image queue and send the webhook attempts that fell due; beat runs it every second."""
    report = {
        "images": dispatch.fill_queue(settings.image_queue_depth, batch_size=settings.image_batch_size),
        "webhooks": 0,
    }
    for event_id in outbox.take_due_events(WEBHOOK_LOST_AFTER_S):
        report["webhooks"] += broker.send(task_names.DELIVER_TASK, event_id)
    # Every second: a line only when it handed work on, so that an idle service logs nothing.
    log.log(logging.INFO if any(report.values()) else logging.DEBUG, "dispatch: queued %s", report)
    return report


# A retention run stops after this long (well within the task's time limit); the next run goes on.
RETENTION_BUDGET_S = 60.0
# Looking for orphaned temporary files lists every output folder: once an hour is enough.
TEMPORARIES_EVERY_S = 3600.0
# The sweep's look for orphaned objects stops after this long; the next sweep goes on.
ORPHANS_BUDGET_S = 20.0


def _writers_gone_after_s(settings: Settings) -> float:
    # No task outlives its hard time limit: past it (and a margin), nothing still writes what it started.
    return settings.task_time_limit_s + 60.0


def _delete_orphaned_temporaries(settings: Settings) -> int:
    # The lease is left to expire, not released: it spaces the scans out, across every sweeper.
    if not leases.try_acquire("temporaries", f"sweep-{uuid.uuid4().hex}", ttl_s=TEMPORARIES_EVERY_S):
        return 0
    return current_app.extensions["storage"].delete_orphaned_temporaries(_writers_gone_after_s(settings))


def delete_orphaned_objects(settings: Settings) -> orphans.OrphanReport:
    """Delete the objects of given-up output claims, and a page of the objects no row names; part of the sweep."""
    budget_s = max(1.0, min(ORPHANS_BUDGET_S, settings.task_soft_time_limit_s / 4))
    return orphans.sweep_orphans(current_app.extensions["storage"], _writers_gone_after_s(settings), budget_s)


def apply_retention(settings: Settings) -> dict[str, int] | None:
    """Delete the requests past ``RETENTION_DAYS`` and the outputs no image points at any more; one run at a time."""
    if settings.retention_days <= 0:
        return None
    holder = f"retention-{uuid.uuid4().hex}"
    budget_s = max(1.0, min(RETENTION_BUDGET_S, settings.task_soft_time_limit_s / 2))
    if not leases.try_acquire("retention", holder, ttl_s=settings.task_time_limit_s + 60.0):
        return None
    try:
        report = retention.apply(settings.retention_days, current_app.extensions["storage"], budget_s=budget_s)
    finally:
        leases.release("retention", holder)
    figures = report.as_dict()
    if any(figures.values()):
        log.info("retention: %s", figures)
    return figures


def _sweep_host_slots() -> int:
    # Slots remove their own traces when released; what is left was held by processes that died.
    slots = current_app.extensions["host_slots"]
    return 0 if slots is None else slots.sweep()


def _fail_stuck_images(max_requeues: int, base_url: str) -> int:
    failed = recovery.fail_exhausted_images(max_requeues, base_url)
    metrics.count_image_failed("stuck", failed)
    return failed


def sweep(settings: Settings) -> dict[str, int] | None:
    """Recover what was lost: abandoned and lost images, unfinalised requests, orphaned files and objects.
    One sweep at a time."""
    holder = f"sweep-{uuid.uuid4().hex}"
    if not leases.try_acquire("sweep", holder, ttl_s=max(60.0, 4.0 * settings.sweep_interval_s)):
        log.info("sweep: another sweep is running; skipped")
        return None
    try:
        base_url = settings.public_base_url
        report = {
            "failed": _fail_stuck_images(settings.image_max_attempts, base_url),
            "abandoned": len(recovery.release_stale_images(settings.stale_image_after_s)),
            "lost": len(
                dispatch.release_lost_images(
                    settings.stale_image_after_s, QUEUE_GRACE_S, broker.messages_held(broker.IMAGES_QUEUE)
                )
            ),
            "finalized": finalize.finalize_finished_requests(base_url),
            "expired_keys": idempotency.delete_expired(settings.idempotency_key_ttl_s),
            "temporaries": _delete_orphaned_temporaries(settings),
            "orphaned_objects": delete_orphaned_objects(settings).deleted(),
            "host_slots": _sweep_host_slots(),
            "imports": sum(
                broker.send(task_names.IMPORT_TASK, str(request_id))
                for request_id in creation.imports_to_resend(IMPORT_LOST_AFTER_S)
            ),
        }
        report["queued"] = dispatch.fill_queue(settings.image_queue_depth, batch_size=settings.image_batch_size)
    finally:
        leases.release("sweep", holder)
    if any(report.values()):
        log.info("sweep: %s", report)
    return report
