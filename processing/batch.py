"""One message's batch of images: claimed in one statement, their sources fetched side by side on threads,
encoded one at a time on the process's own core, and their results recorded a flush at a time.

A batch is the unit of bookkeeping, an image stays the unit of work: each one is retried, failed, cancelled
or superseded on its own, and a batch cut short by its time limit gives back the images it never got to.
A batch whose earlier run died (the worker was killed under it) is not run again as a batch: its images go
back to waiting, and each is then sent alone, so a poison image kills no other image's attempts.

While its last images encode, a batch takes the images of the queue's next message (``taking_more.TakingMore``), so
that their downloads overlap its encodes and the process's core does not wait for the network between
batches; that message, when it is delivered, finds them taken.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from celery.exceptions import SoftTimeLimitExceeded
from flask import Flask, current_app

from config import Settings
from database import DATABASE_ERRORS
from fetching import deadline, fetcher
from imaging import pipeline
from lifecycle import claims
from observability import log_context, metrics
from outputs import encode_claims, making, rendition_making
from processing import outcomes, uninterrupted
from processing.taking_more import TakingMore
from queueing import dispatch
from storage import StorageError

log = logging.getLogger(__name__)

#: How long finished images may wait to be recorded together: a status page and a webhook lag by no more.
FLUSH_EVERY_S = 0.1


class OutOfTime(Exception):
    """The batch's soft time limit fired on an image that took half of it alone: failed, with ``outcome``."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def run(task_id: str, image_ids: list[int], settings: Settings) -> dict[int, str]:
    """Process the batch; returns each image's outcome."""
    found = {image_id: "skipped" for image_id in image_ids}
    if len(image_ids) > 1 and claims.held_by_earlier_run(task_id):
        released = claims.release_batch(image_ids, task_id)
        log.warning("batch %s: an earlier run died under it; its %s images go back, each alone", task_id, len(released))
        return found | dict.fromkeys(released, "released")
    works = claims.claim_images(image_ids, task_id, settings.image_max_attempts, settings.public_base_url)
    if len(works) == 1:
        [work] = works
        found[work.image_id] = _one(task_id, work, settings)
        return found
    if works:
        found |= _many(task_id, works, settings)
    return found


def _one(task_id: str, work: claims.ImageWork, settings: Settings) -> str:
    """An image alone: fetched and encoded on this thread, recorded at once."""
    log_context.bind(image_id=work.image_id, request_id=work.request_id)
    encoder = encode_claims.Encoder(work.image_id, work.claim_token)
    recorder = Recorder(settings.public_base_url, task_id)
    try:
        outcome = _attempt(
            task_id,
            work,
            settings,
            lambda: _make_alone(work, settings, encoder),
            recorder,
            alone=True,
        )
    except OutOfTime as timed_out:
        outcome = timed_out.outcome
    recorder.flush()
    return recorder.changed_outcomes.get(work.image_id, outcome)


def _make_alone(work: claims.ImageWork, settings: Settings, encoder: encode_claims.Encoder) -> making.MadeOutput:
    if work.plan is None:
        return making.make_output(work.owner, work.source_url, work.options, settings, encoder)
    return _made_from(_fetch(work, settings), work, settings, encoder, None)


def _many(task_id: str, works: list[claims.ImageWork], settings: Settings) -> dict[int, str]:
    app = current_app._get_current_object()
    recorder = Recorder(settings.public_base_url, task_id)
    found: dict[int, str] = {}
    left = {work.image_id: work for work in works}
    pool = ThreadPoolExecutor(
        settings.image_fetch_threads,
        thread_name_prefix="fetch",
        initializer=deadline.leave_signals_to_the_main_thread,
    )
    fetching: dict[Future, claims.ImageWork] = {pool.submit(_fetch_in_app, app, work, settings): work for work in works}
    more = TakingMore(settings, len(works))
    try:
        while fetching:
            # A finished image waits for the next to be recorded with it, but no longer than the flush interval.
            done, _ = wait(fetching, timeout=recorder.time_left(), return_when=FIRST_COMPLETED)
            if recorder.due():
                recorder.flush()
            for future in done:
                work = fetching.pop(future)
                del left[work.image_id]
                log_context.bind(image_id=work.image_id, request_id=work.request_id)
                make = _encoder_of(future, work, settings, recorder)
                try:
                    found[work.image_id] = _attempt(task_id, work, settings, make, recorder, alone=False)
                except OutOfTime as timed_out:
                    found[work.image_id] = timed_out.outcome
                    raise
                except SoftTimeLimitExceeded:
                    left[work.image_id] = work
                    raise
                if recorder.due():
                    recorder.flush()
            if more.wanted(fetching):
                # The queue is refilled first, as it is after every batch: this one may run for a while.
                dispatch.fill_queue(settings.image_queue_depth, lazy=True, batch_size=settings.image_batch_size)
                taken = claims.take_next_queued(task_id, settings.image_max_attempts, settings.public_base_url)
                more.took(taken)
                for work in taken:
                    left[work.image_id] = work
                    fetching[pool.submit(_fetch_in_app, app, work, settings)] = work
        recorder.flush()
    except (OutOfTime, SoftTimeLimitExceeded):
        recorder.flush()
        claims.give_back_unstarted(list(left.values()), task_id)
        found |= dict.fromkeys(left, "given_back")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    found |= recorder.changed_outcomes
    return found


def _fetch_in_app(app: Flask, work: claims.ImageWork, settings: Settings) -> making.FetchedSource | making.MadeOutput:
    with app.app_context():
        return _fetch(work, settings)


def _fetch(work: claims.ImageWork, settings: Settings) -> making.FetchedSource | making.MadeOutput:
    return making.fetch_known_source(work.owner, work.source_url, work.options, settings, work.known)


def _encoder_of(
    future: Future, work: claims.ImageWork, settings: Settings, recorder: Recorder
) -> Callable[[], making.MadeOutput]:
    def make() -> making.MadeOutput:
        fetched = future.result()  # raises what the fetch raised
        encoder = encode_claims.Encoder(work.image_id, work.claim_token)
        return _made_from(fetched, work, settings, encoder, recorder.flush)

    return make


def _made_from(
    fetched: making.FetchedSource | making.MadeOutput,
    work: claims.ImageWork,
    settings: Settings,
    encoder: encode_claims.Encoder,
    mark_later: Callable[[], None] | None,
) -> making.MadeOutput:
    """The image's output (and renditions) from what its fetch gave."""
    if work.plan is not None:
        return rendition_making.make_planned_from(
            fetched, work.plan, work.owner, work.source_url, settings, encoder, work.known
        )
    if isinstance(fetched, making.MadeOutput):
        return fetched
    return making.make_from(fetched, settings, encoder, mark_later=mark_later)


def _attempt(
    task_id: str,
    work: claims.ImageWork,
    settings: Settings,
    make: Callable[[], making.MadeOutput],
    recorder: Recorder,
    alone: bool,
) -> str:
    """Make one image's output and hand it to ``recorder``, or record how its attempt ended."""
    base_url = settings.public_base_url
    started = time.monotonic()
    try:
        made = make()
    except fetcher.FetchError as error:
        if error.transient and work.retries < settings.fetch_max_retries:
            delay = outcomes.retry_delay(work.retries, error.retry_after)
            return outcomes.retry(work, task_id, delay, error.code, error.message)
        return outcomes.fail(work, error.code, error.message, base_url)
    except StorageError as error:
        if work.retries < settings.storage_max_retries:
            delay = outcomes.retry_delay(work.retries, None)
            return outcomes.retry(work, task_id, delay, "storage_error", str(error))
        message = f"The output could not be stored after {work.retries + 1} tries: {error}"
        return outcomes.fail(work, "storage_error", message, base_url)
    except (encode_claims.PeerStillEncoding, encode_claims.EncodeSuperseded) as error:
        return outcomes.output_busy(work, task_id, str(error))
    except pipeline.ImageProcessingError as error:
        return outcomes.fail(work, error.code, error.message, base_url)
    except SoftTimeLimitExceeded:
        # The limit is the batch's: the image it fired on is to blame only if it alone took half of it.
        if alone or time.monotonic() - started >= settings.task_soft_time_limit_s / 2:
            limit = f"{settings.task_soft_time_limit_s} s (TASK_SOFT_TIME_LIMIT_S)"
            outcome = outcomes.fail(work, "processing_timeout", f"Processing took longer than {limit}.", base_url)
            raise OutOfTime(outcome) from None
        raise
    except DATABASE_ERRORS:
        raise  # the task retries the batch with back-off; what was recorded stays, the rest is reused
    except Exception:
        return outcomes.unexpected(task_id, work, settings)
    figures = claims.ImageFigures(**dataclasses.asdict(made.figures), reused=made.reused)
    to_mark = None if made.marked else made.figures
    recorder.add(claims.Finished(work, made.key, made.output_id, figures, to_mark, made.renditions), made.reused)
    return outcomes.completed(figures)


class Recorder:
    """Finished images recorded together, in one transaction, at most ``FLUSH_EVERY_S`` after the first, with
    the outputs made for them marked stored."""

    def __init__(self, public_base_url: str, task_id: str) -> None:
        self.public_base_url = public_base_url
        self.task_id = task_id
        self.waiting: list[tuple[claims.Finished, bool]] = []
        self.first_at: float | None = None
        #: The outcomes of the images the flush could not record as finished: refused, or retried.
        self.changed_outcomes: dict[int, str] = {}

    def add(self, finished: claims.Finished, reused: bool) -> None:
        self.waiting.append((finished, reused))
        if self.first_at is None:
            self.first_at = time.monotonic()

    def time_left(self) -> float | None:
        """Seconds until a flush is due; None with nothing waiting."""
        if self.first_at is None:
            return None
        return max(0.0, self.first_at + FLUSH_EVERY_S - time.monotonic())

    def due(self) -> bool:
        return self.time_left() == 0.0

    def flush(self) -> None:
        """Record what is waiting. Held from the soft time limit: once the transaction commits, the objects of
        outputs it could not mark must be deleted, or nothing would name them."""
        if not self.waiting:
            return
        with uninterrupted.soft_limit_held():
            self._flush()

    def _flush(self) -> None:
        waiting, self.waiting, self.first_at = self.waiting, [], None
        reused = {finished.work.image_id: was_reused for finished, was_reused in waiting}
        completion = claims.complete_images([finished for finished, _ in waiting], self.public_base_url)
        refused = completion.refused
        not_recorded = {finished.work.image_id for finished in refused + completion.output_superseded}
        for finished, _ in waiting:
            if finished.work.image_id not in not_recorded:
                metrics.IMAGES_PROCESSED.labels(outcomes.metric_label(finished.figures)).inc()
        for finished in completion.output_superseded:
            # Its output's claim was taken over as a dead worker's (this one froze) before the mark.
            making.delete_superseded(finished.output_id, finished.output_key)
            message = f"output {finished.output_id}: the encode was taken over while this worker ran"
            self.changed_outcomes[finished.work.image_id] = outcomes.output_busy(finished.work, self.task_id, message)
        for finished in refused:
            # Cancelled, or taken over by another worker, while in flight: an output made for this image alone
            # is dropped, not left behind unreferenced.
            _drop_unused(finished, reused[finished.work.image_id])
            self.changed_outcomes[finished.work.image_id] = outcomes.refused(finished.work.image_id)


def _drop_unused(finished: claims.Finished, reused: bool) -> None:
    made = [] if reused else [finished.output_id]
    made += [rendition.output_id for rendition in finished.renditions if not rendition.reused]
    try:
        for output_id in made:
            unused = encode_claims.drop_if_unused(output_id)
            if unused is not None:
                current_app.extensions["storage"].delete(unused)
    except StorageError as error:
        log.warning("image %s: the output of a discarded result was not removed: %s", finished.work.image_id, error)
