"""Making the outputs of an image whose request has an output plan: each rendition's output found by its
variant, or encoded and stored, every one that is missing made from one decode of the source.

Each rendition is its own variant (see variants.RenditionOptions): reuse holds per rendition. The encodes are
claimed in the order of their variants, so two workers making overlapping renditions of the same bytes never
wait for each other in a circle. Outputs are marked stored as they are made (not in the batch's flush): a plan
makes several outputs per image, and a rendition found by a peer must be findable at once.

The first rendition carries the image's compliance report (the source and the output checked against the
profile's rules) and the source's perceptual hash, both recorded with its output so that reuse keeps them.
"""

from __future__ import annotations

import dataclasses

from flask import current_app
from PIL import Image

import storage
from compliance import checks, measure, report
from config import Settings
from imaging import perceptual_hash, renditions
from observability import metrics
from output_plan.plan import OutputPlan
from outputs import encode_claims, making, variants


def make_planned_from(
    fetched: making.FetchedSource | making.MadeOutput,
    plan: OutputPlan,
    owner: str,
    source_url: str,
    settings: Settings,
    encoder: encode_claims.Encoder | None = None,
    known: variants.KnownSource | None = None,
) -> making.MadeOutput:
    """``make_planned`` for what a fetch gave: the source's bytes, or its first rendition's output when a
    revalidation answered 304 (``known``: what the URL answered before, read with the claim, whose bytes those
    are). Then every other rendition's output is looked up for the same bytes; the source is downloaded again,
    unconditionally, when one is missing."""
    if isinstance(fetched, making.MadeOutput):
        complete = _reused_renditions(fetched, plan, owner, known.content_sha256) if known else None
        if complete is not None:
            return complete
        fetched = making.fetch_known_source(owner, source_url, variants.RenditionOptions.of(plan, 0), settings, None)
        assert isinstance(fetched, making.FetchedSource)  # no validators sent: never a 304
    return make_planned(fetched, plan, owner, settings, encoder)


def _reused_renditions(
    first: making.MadeOutput, plan: OutputPlan, owner: str, content_sha256: str
) -> making.MadeOutput | None:
    """``first`` with the stored outputs of the other renditions of the same bytes; None if one is missing."""
    secret = current_app.extensions["variant_secret"]
    others = []
    for position in range(1, len(plan.renditions)):
        key = variants.variant_key(secret, owner, content_sha256, variants.RenditionOptions.of(plan, position))
        stored = variants.find_stored(key)
        if stored is None:
            return None
        name = plan.renditions[position].name
        others.append(making.MadeRendition(position, name, stored.storage_key, stored.id, stored.figures, True))
    return dataclasses.replace(first, renditions=tuple(others))


def make_planned(
    fetched: making.FetchedSource,
    plan: OutputPlan,
    owner: str,
    settings: Settings,
    encoder: encode_claims.Encoder | None = None,
) -> making.MadeOutput:
    """Every rendition of ``plan`` for the downloaded source: the first as the image's output, the others
    as its renditions."""
    secret = current_app.extensions["variant_secret"]
    options = [variants.RenditionOptions.of(plan, position) for position in range(len(plan.renditions))]
    keys = [variants.variant_key(secret, owner, fetched.content_sha256, option) for option in options]
    found: dict[int, variants.StoredOutput | tuple[int, str]] = {}
    try:
        for position in sorted(range(len(options)), key=keys.__getitem__):
            found[position] = encode_claims.claim_or_find(
                keys[position],
                options[position].output_format,
                stale_after_s=settings.task_time_limit_s + 60.0,
                wait_s=making.peer_wait_s(settings),
                encoder=encoder,
            )
    except BaseException:
        _abandon_claims(found, store_attempted=False)
        raise
    missing = [position for position in range(len(options)) if not isinstance(found[position], variants.StoredOutput)]
    made: dict[int, making.MadeOutput] = {
        position: making.reused(stored) for position, stored in found.items() if position not in missing
    }
    if missing:
        made |= _encode_and_store(fetched, plan, options, missing, found, settings)
    else:
        fetched.download.clear()
    first = made[0]
    names = [item.name for item in plan.renditions]
    others = tuple(
        making.MadeRendition(position, names[position], item.key, item.output_id, item.figures, item.reused)
        for position, item in sorted(made.items())
        if position > 0
    )
    return making.MadeOutput(first.key, first.output_id, first.figures, reused=first.reused, renditions=others)


def _encode_and_store(
    fetched: making.FetchedSource,
    plan: OutputPlan,
    options: list[variants.RenditionOptions],
    missing: list[int],
    found: dict[int, variants.StoredOutput | tuple[int, str]],
    settings: Settings,
) -> dict[int, making.MadeOutput]:
    claimed = {position: found[position] for position in missing}
    checked = 0 in missing and plan.rules is not None
    hashed = 0 in missing and options[0].hashed
    try:
        result = renditions.compress_renditions(
            fetched.download.pop(),
            [plan.renditions[position].spec for position in missing],
            max_pixels=settings.max_image_pixels,
            decode_budget=settings.image_decode_budget_bytes,
            inspect_source=source_inspector(checked, hashed),
            inspect_output=output_inspector if checked else None,
            inspected=(0,) if checked else (),
            keep_metadata=plan.metadata == "keep_rights",
            background=plan.first.spec.canvas.background,
        )
    except BaseException:
        _abandon_claims(claimed, store_attempted=False)
        raise
    made: dict[int, making.MadeOutput] = {}
    for index, position in enumerate(missing):
        rendition = result.renditions[index]
        output_id, key = claimed.pop(position)
        compressed = rendition.compressed
        _store(output_id, key, compressed.data, claimed)
        compliance = None
        phash = None
        if position == 0:
            source_facts, phash = result.source or (None, None)
            if checked:
                output_facts = rendition.inspected
                if "padded" in rendition.changes:
                    output_facts = measure.padded(output_facts, source_facts, plan.first.spec.canvas.background)
                compliance = report.report(
                    checks.failures(source_facts, plan.rules),
                    list(rendition.changes),
                    checks.failures(output_facts, plan.rules),
                )
        figures = making.figures_of(compressed, compliance=compliance, phash=phash)
        metrics.ENCODE_SECONDS.observe(compressed.encode_s)
        metrics.STORED_BYTES.inc(len(compressed.data))
        stored = encode_claims.mark_stored(output_id, figures)
        if stored is None:
            making.delete_superseded(output_id, key)
            _abandon_claims(claimed, store_attempted=False)
            raise encode_claims.EncodeSuperseded(f"output {output_id}: the encode was taken over while this worker ran")
        made[position] = making.MadeOutput(key, output_id, stored.figures, reused=False)
    metrics.DECODE_SECONDS.observe(result.renditions[0].compressed.decode_s)
    return made


def _store(output_id: int, key: str, data: bytes, others: dict[int, variants.StoredOutput | tuple[int, str]]) -> None:
    """Store one rendition's object; on failure its claim and the claims not stored yet are given up."""
    try:
        current_app.extensions["storage"].put(key, data, storage.media_type(key))
    except storage.StorageError:
        making.abandon(output_id, store_attempted=True)
        _abandon_claims(others, store_attempted=False)
        raise
    except BaseException:
        making.delete_own_object(output_id, key, "a store cut short")
        making.abandon(output_id, store_attempted=True)
        _abandon_claims(others, store_attempted=False)
        raise


def _abandon_claims(found: dict[int, variants.StoredOutput | tuple[int, str]], store_attempted: bool) -> None:
    for claim in found.values():
        if not isinstance(claim, variants.StoredOutput):
            making.abandon(claim[0], store_attempted=store_attempted)


def source_inspector(checked: bool, hashed: bool) -> renditions.SourceInspector | None:
    """What is read from the prepared source: its facts for the checks and its perceptual hash, as asked."""
    if not checked and not hashed:
        return None

    def inspect(
        image: Image.Image, size: tuple[int, int], byte_count: int, source_format: str, had_alpha: bool
    ) -> tuple[measure.ImageFacts | None, int | None]:
        # One small copy for both: reducing the full-size source is most of what either costs.
        probe = measure.reduced(image)
        facts = None
        if checked:
            facts = measure.measure(
                probe, byte_count=byte_count, format=source_format, has_alpha=had_alpha, width=size[0], height=size[1]
            )
        phash = perceptual_hash.to_signed(perceptual_hash.dct_hash(probe)) if hashed else None
        return facts, phash

    return inspect


def output_inspector(image: Image.Image, encoded: bytes, output_format: str) -> measure.ImageFacts:
    return measure.measure(image, byte_count=len(encoded), format=output_format.upper(), has_alpha=False)
