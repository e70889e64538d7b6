"""Handing an accepted request's work to the broker: after its commit, and never the caller's failure.

Once an upload or a retry has committed, the database holds everything the workers need, and the
caller is answered ``202`` whatever happens next. Beat's dispatcher tick queues waiting images every
``DISPATCH_INTERVAL_S`` and the sweeper sends an import again when it is not done a minute after it
was sent, so a broker (or database) failing at this moment costs a delay, logged and counted, never
an error that the caller would answer by sending the upload again.
"""

from __future__ import annotations

import logging
import uuid

from models import db
from observability import metrics
from queueing import broker, dispatch, task_names

log = logging.getLogger(__name__)


def queue_images(depth: int, batch_size: int = 1) -> None:
    """Queue and publish waiting images now; whatever fails is left to the dispatcher's next fill."""
    try:
        share = dispatch.queue_state() == dispatch.QueueState(queued=0, processing=0)
        image_ids = dispatch.take_images_to_queue(depth, batch_size=batch_size)
        if dispatch.publish(image_ids, batch_size, share=share) == len(image_ids):
            return
    except Exception:  # a database or broker error, after the commit: the tick starts over from the rows
        log.warning("images not queued now; the dispatcher will queue them", exc_info=True)
        _roll_back()
    metrics.HANDOFFS_DEFERRED.labels("images").inc()


def send_import(request_id: uuid.UUID) -> None:
    """Send the import task of a big upload; if it cannot be sent, the sweeper sends it later."""
    try:
        if broker.send(task_names.IMPORT_TASK, str(request_id)):
            return
    except Exception:
        log.warning("import of %s not sent now; the sweeper will send it", request_id, exc_info=True)
    metrics.HANDOFFS_DEFERRED.labels("import").inc()


def _roll_back() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection is gone; the session is removed with the request anyway
        log.debug("rollback after a failed hand-off failed", exc_info=True)
