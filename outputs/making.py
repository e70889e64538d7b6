"""Making an image's output: fetch or revalidate the source, then reuse its variant's output or encode and store one."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass

from flask import current_app

import storage
from config import Settings
from database import DATABASE_ERRORS
from fetching import fetcher
from fetching.limits import fetch_limits
from imaging import pipeline
from observability import metrics
from outputs import variants

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MadeOutput:
    """The output an image points at: made for it, or reused."""

    key: str
    output_id: int
    figures: variants.EncodedFigures
    reused: bool


def make_output(owner: str, source_url: str, options: variants.OutputOptions, settings: Settings) -> MadeOutput:
    """Download (or revalidate) ``owner``'s source and find its output, or encode and store it.

    The same bytes with the same options are encoded once per caller: an earlier output of their variant is
    reused. A URL that sent validators is revalidated, when its last bytes' output exists: a 304 costs no
    download and no encode.
    """
    secret = current_app.extensions["variant_secret"]
    known = variants.known_source(owner, source_url)
    revalidated = None
    if known is not None:
        revalidated = variants.find_stored(variants.variant_key(secret, owner, known.content_sha256, options))
    validators = fetcher.Validators(known.etag, known.last_modified) if known and revalidated else None
    started = time.monotonic()
    fetched = fetcher.fetch_image_revalidated(
        source_url, fetch_limits(settings), current_app.extensions["host_slots"], validators
    )
    metrics.DOWNLOAD_SECONDS.observe(time.monotonic() - started)
    if fetched.not_modified and known is not None and revalidated is not None:
        kept = fetched.validators
        _remember(owner, source_url, known, variants.KnownSource(kept.etag, kept.last_modified, known.content_sha256))
        return _reused(revalidated)
    # The download's only reference is handed to compress, which frees it once the pixels are decoded.
    download = [fetched.data or b""]
    metrics.DOWNLOADED_BYTES.inc(len(download[0]))
    sent = fetched.validators
    del fetched
    content_sha256 = hashlib.sha256(download[0]).hexdigest()
    _remember(owner, source_url, known, variants.KnownSource(sent.etag, sent.last_modified, content_sha256))
    variant = variants.variant_key(secret, owner, content_sha256, options)
    found = variants.claim_or_find(
        variant, options.output_format, stale_after_s=settings.task_time_limit_s + 60.0, wait_s=peer_wait_s(settings)
    )
    if isinstance(found, variants.StoredOutput):
        return _reused(found)
    output_id, key = found
    storing = False
    try:
        # Each option is the encoder's argument of the same name: all that the variant covers reaches the encoder.
        compressed = pipeline.compress(
            download.pop(), max_pixels=settings.max_image_pixels, **dataclasses.asdict(options)
        )
        storing = True
        current_app.extensions["storage"].put(key, compressed.data, storage.media_type(key))
    except BaseException:
        if storing:
            # A store cut short (a time limit striking as it ends) may have written the object all the same:
            # deleted while the claim, and so the key, is still this worker's, before it is given up.
            _delete_own_object(output_id, key, "a store cut short")
        _abandon(output_id)
        raise
    metrics.DECODE_SECONDS.observe(compressed.decode_s)
    metrics.ENCODE_SECONDS.observe(compressed.encode_s)
    metrics.STORED_BYTES.inc(len(compressed.data))
    encoded = variants.EncodedFigures(
        bytes_in=compressed.source_bytes,
        bytes_out=len(compressed.data),
        width=compressed.width,
        height=compressed.height,
        quality=compressed.quality,
        score=compressed.score,
        kept_source=compressed.kept_source,
    )
    stored = variants.mark_stored(output_id, encoded)
    if stored is None:
        _delete_superseded(output_id, key)
        raise variants.EncodeSuperseded(f"output {output_id}: the encode was taken over while this worker ran")
    return MadeOutput(key, output_id, stored.figures, reused=False)


def peer_wait_s(settings: Settings) -> float:
    """How long to wait for a worker encoding the same variant: ``WAIT_FOR_PEER_S``, but at most a quarter of
    the soft time limit.

    A wait that ran into the limit would fail the image as ``processing_timeout`` for the peer's sake, and a
    dead worker's claim holds until it is stale, longer than any limit; the rest of the limit is left to the
    download before the wait and the encode after it. A wait cut short is retried (``output_busy``).
    """
    return min(variants.WAIT_FOR_PEER_S, settings.task_soft_time_limit_s / 4)


def _remember(owner: str, source_url: str, known: variants.KnownSource | None, seen: variants.KnownSource) -> None:
    """Keep what the URL answered for its next conditional GET; no write when nothing changed lately."""
    if known is None and seen.etag is None and seen.last_modified is None:
        return
    if seen == known and known.is_fresh():
        return
    variants.remember_source(owner, source_url, seen.etag, seen.last_modified, seen.content_sha256)


def _reused(stored: variants.StoredOutput) -> MadeOutput:
    return MadeOutput(stored.storage_key, stored.id, stored.figures, reused=True)


def _delete_superseded(output_id: int, key: str) -> None:
    log.warning("output %s: the encode was taken over while this worker ran; its object is deleted", output_id)
    _delete_own_object(output_id, key, "a superseded encode")


def _delete_own_object(output_id: int, key: str, whose: str) -> None:
    # The key is this claim's alone (a take-over stores under a key of its own): no other output is touched.
    try:
        current_app.extensions["storage"].delete(key)
    except storage.StorageError as error:
        log.warning("output %s: the object of %s was not removed: %s", output_id, whose, error)


def _abandon(output_id: int) -> None:
    try:
        variants.abandon_output(output_id)
    except DATABASE_ERRORS as error:
        # The claim then looks like a dead worker's, and the next encode of the variant takes it over.
        log.warning("output %s: the failed encode's claim was not removed: %s", output_id, error)
