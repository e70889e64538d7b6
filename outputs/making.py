"""Making an image's output: fetch or revalidate the source, then reuse its variant's output or encode and store one."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app

import storage
from config import Settings
from database import DATABASE_ERRORS
from fetching import fetcher
from fetching.limits import fetch_limits
from imaging import pipeline
from observability import metrics
from outputs import encode_claims, variants

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MadeOutput:
    """The output an image points at: made for it, or reused."""

    key: str
    output_id: int
    figures: variants.EncodedFigures
    reused: bool
    #: False when the caller marks the output stored (``encode_claims.mark_stored``) itself, with others.
    marked: bool = True
    #: The image's other renditions, when its request asked several (see rendition_making).
    renditions: tuple[MadeRendition, ...] = ()


@dataclass(frozen=True)
class MadeRendition:
    """An image's output beyond its first: a named rendition, made for it or reused."""

    position: int
    name: str
    key: str
    output_id: int
    figures: variants.EncodedFigures
    reused: bool


@dataclass
class FetchedSource:
    """A source downloaded for an image, with the variant its bytes and options make."""

    #: The download's only reference, handed to compress, which frees it once the pixels are decoded.
    download: list[bytes]
    variant: str
    options: variants.OutputOptions | variants.RenditionOptions
    content_sha256: str = ""


def make_output(
    owner: str,
    source_url: str,
    options: variants.OutputOptions | variants.RenditionOptions,
    settings: Settings,
    encoder: encode_claims.Encoder | None = None,
) -> MadeOutput:
    """Download (or revalidate) ``owner``'s source and find its output, or encode and store it, for the image
    claim ``encoder``.

    The same bytes with the same options are encoded once per caller: an earlier output of their variant is
    reused. A URL that sent validators is revalidated, when its last bytes' output exists: a 304 costs no
    download and no encode.
    """
    fetched = fetch_source(owner, source_url, options, settings)
    if isinstance(fetched, MadeOutput):
        return fetched
    return make_from(fetched, settings, encoder)


def fetch_source(
    owner: str, source_url: str, options: variants.OutputOptions | variants.RenditionOptions, settings: Settings
) -> FetchedSource | MadeOutput:
    """The first half of ``make_output``, which waits on the network and so may run on a thread of its own:
    the source's bytes, or the output it already has when a revalidation answered 304."""
    return fetch_known_source(owner, source_url, options, settings, variants.known_source(owner, source_url))


def fetch_known_source(
    owner: str,
    source_url: str,
    options: variants.OutputOptions | variants.RenditionOptions,
    settings: Settings,
    known: variants.KnownSource | None,
) -> FetchedSource | MadeOutput:
    """``fetch_source`` with what the URL answered last (``variants.known_source``) already read."""
    secret = current_app.extensions["variant_secret"]
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
        return reused(revalidated)
    download = [fetched.data or b""]
    metrics.DOWNLOADED_BYTES.inc(len(download[0]))
    sent = fetched.validators
    del fetched
    content_sha256 = hashlib.sha256(download[0]).hexdigest()
    _remember(owner, source_url, known, variants.KnownSource(sent.etag, sent.last_modified, content_sha256))
    variant = variants.variant_key(secret, owner, content_sha256, options)
    return FetchedSource(download, variant, options, content_sha256)


def make_from(
    fetched: FetchedSource,
    settings: Settings,
    encoder: encode_claims.Encoder | None = None,
    mark_later: Callable[[], None] | None = None,
) -> MadeOutput:
    """The second half of ``make_output``, on the process's own core: the variant's output found, or encoded
    from the downloaded bytes and stored. With ``mark_later`` a new output is left for the caller to mark
    stored (``MadeOutput.marked`` False), in a transaction it shares with others; ``mark_later`` itself marks
    those the caller holds, and is called before any wait for another worker's output."""
    options = fetched.options
    found = encode_claims.claim_or_find(
        fetched.variant,
        options.output_format,
        stale_after_s=settings.task_time_limit_s + 60.0,
        wait_s=peer_wait_s(settings),
        encoder=encoder,
        before_waiting=mark_later,
    )
    if isinstance(found, variants.StoredOutput):
        fetched.download.clear()
        return reused(found)
    output_id, key = found
    try:
        # Each option is the encoder's argument of the same name: all that the variant covers reaches the encoder.
        compressed = pipeline.compress(
            fetched.download.pop(),
            max_pixels=settings.max_image_pixels,
            decode_budget=settings.image_decode_budget_bytes,
            **dataclasses.asdict(options),
        )
    except BaseException:
        abandon(output_id, store_attempted=False)
        raise
    try:
        current_app.extensions["storage"].put(key, compressed.data, storage.media_type(key))
    except storage.StorageError:
        # Failed, or its outcome unknown (a timeout): a write may still land. The claim, given up, keeps
        # naming the key, and the sweep deletes the object once no writer can be left.
        abandon(output_id, store_attempted=True)
        raise
    except BaseException:
        # Cut short by this worker's own time limit as the store ended, the object may be written all the
        # same: deleted at once, while the claim, and so the key, is still this worker's; then given up
        # like any store that failed, for whatever may still land.
        delete_own_object(output_id, key, "a store cut short")
        abandon(output_id, store_attempted=True)
        raise
    metrics.DECODE_SECONDS.observe(compressed.decode_s)
    metrics.ENCODE_SECONDS.observe(compressed.encode_s)
    metrics.STORED_BYTES.inc(len(compressed.data))
    encoded = figures_of(compressed)
    if mark_later is not None:
        return MadeOutput(key, output_id, encoded, reused=False, marked=False)
    stored = encode_claims.mark_stored(output_id, encoded)
    if stored is None:
        delete_superseded(output_id, key)
        raise encode_claims.EncodeSuperseded(f"output {output_id}: the encode was taken over while this worker ran")
    return MadeOutput(key, output_id, stored.figures, reused=False)


def figures_of(compressed: pipeline.CompressedImage, **checked: object) -> variants.EncodedFigures:
    """What an encode made, as recorded with its output; ``checked``: its compliance report and hash, if any."""
    return variants.EncodedFigures(
        bytes_in=compressed.source_bytes,
        bytes_out=len(compressed.data),
        width=compressed.width,
        height=compressed.height,
        quality=compressed.quality,
        score=compressed.score,
        kept_source=compressed.kept_source,
        **checked,
    )


def peer_wait_s(settings: Settings) -> float:
    """How long to wait for a worker encoding the same variant: ``WAIT_FOR_PEER_S``, but at most a quarter of
    the soft time limit.

    A wait that ran into the limit would fail the image as ``processing_timeout`` for the peer's sake, and a
    dead worker's claim holds until it is stale, longer than any limit; the rest of the limit is left to the
    download before the wait and the encode after it. A wait cut short is retried (``output_busy``).
    """
    return min(encode_claims.WAIT_FOR_PEER_S, settings.task_soft_time_limit_s / 4)


def _remember(owner: str, source_url: str, known: variants.KnownSource | None, seen: variants.KnownSource) -> None:
    """Keep what the URL answered for its next conditional GET; no write when nothing changed lately."""
    if known is None and seen.etag is None and seen.last_modified is None:
        return
    if seen == known and known.is_fresh():
        return
    variants.remember_source(owner, source_url, seen.etag, seen.last_modified, seen.content_sha256)


def reused(stored: variants.StoredOutput) -> MadeOutput:
    return MadeOutput(stored.storage_key, stored.id, stored.figures, reused=True)


def delete_superseded(output_id: int, key: str) -> None:
    """Delete the object of an encode that was taken over while this worker ran (its claim's key is its own)."""
    log.warning("output %s: the encode was taken over while this worker ran; its object is deleted", output_id)
    delete_own_object(output_id, key, "a superseded encode")


def delete_own_object(output_id: int, key: str, whose: str) -> None:
    # The key is this claim's alone (a take-over stores under a key of its own): no other output is touched.
    # Should this fail, the claim's row still names the key, or the sweep's listing finds it.
    try:
        current_app.extensions["storage"].delete(key)
    except storage.StorageError as error:
        log.warning("output %s: the object of %s was not removed: %s", output_id, whose, error)


def abandon(output_id: int, store_attempted: bool) -> None:
    try:
        encode_claims.abandon_output(output_id, store_attempted)
    except DATABASE_ERRORS as error:
        # The claim then looks like a dead worker's: the next encode of the variant takes it over, and the
        # sweep deletes what it stored once it is older than the hard time limit.
        log.warning("output %s: the failed encode's claim was not given back: %s", output_id, error)
