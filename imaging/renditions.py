"""Several outputs of one source from one decode: each rendition's canvas (see canvas) drawn from the same
prepared pixels, the largest first, each smaller one shrunk from the one before when it can be.

The source is decoded once, at the smallest size that still covers every rendition's content (a JPEG drafts
smaller), turned upright and flattened onto the background. With ``trim`` it is decoded whole: the border it
removes decides the scale. Each rendition may cap its bytes (``max_bytes``): its quality is lowered a step at
a time until it fits, and the image fails (``max_bytes_unreachable``) when even the lowest does not.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from imaging import budget, canvas, encode, metadata_policy, pipeline, quality_search
from imaging.errors import ImageProcessingError

#: max_bytes' steps: from the asked quality down by QUALITY_STEP to LOWEST_QUALITY.
QUALITY_STEP = 10
LOWEST_QUALITY = 10
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class RenditionSpec:
    """One output to make: its canvas, size bound and encoding."""

    canvas: canvas.Canvas = field(default_factory=canvas.Canvas)
    max_dimension: int | None = None
    output_format: str = "jpeg"
    #: None: chosen to reach ``target_score`` (quality=auto).
    quality: int | None = 50
    target_score: float | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Rendition:
    """A rendition made: the encoded output and what was changed to make it (stable codes, see CHANGES)."""

    compressed: pipeline.CompressedImage
    changes: tuple[str, ...]
    #: What ``inspect`` returned for the drawn canvas and its encoded bytes (None without ``inspect``).
    inspected: object = None


#: What making a rendition may change, in the order reported.
CHANGES = ("flattened", "trimmed", "cropped", "downscaled", "upscaled", "padded", "converted", "quality_lowered")


@dataclass(frozen=True)
class Made:
    """Every rendition of one source, in the order asked, and what ``inspect_source`` said of the source."""

    renditions: list[Rendition]
    source: object = None


#: Called with an upright, flattened RGB image: the source (with its real size, byte count and format, and
#: whether it had alpha), or a rendition's canvas (with its encoded bytes).
SourceInspector = Callable[[Image.Image, tuple[int, int], int, str, bool], object]
OutputInspector = Callable[[Image.Image, bytes, str], object]


def compress_renditions(
    data: bytes,
    specs: Sequence[RenditionSpec],
    *,
    max_pixels: int = pipeline.MAX_PIXELS,
    decode_budget: int | None = None,
    inspect_source: SourceInspector | None = None,
    inspect_output: OutputInspector | None = None,
    inspected: Sequence[int] = (),
    keep_metadata: bool = False,
    background: tuple[int, int, int] | None = None,
) -> Made:
    """Decode ``data`` once and make each of ``specs`` from it; ``inspect_output`` reads the renditions whose
    indexes ``inspected`` lists. With ``keep_metadata`` each output keeps the source's copyright, creator and
    digital source type (see metadata_policy); without, none of its metadata. Transparency is flattened once,
    onto ``background`` (by default the first spec's); each rendition pads with its own.

    Raises ImageProcessingError as pipeline.compress does, and ``max_bytes_unreachable``.
    """
    if not specs:
        raise ValueError("at least one rendition is needed")
    largest = max(specs, key=_memory_weight)
    started = time.perf_counter()
    kept: list[metadata_policy.KeptMetadata] = [metadata_policy.KeptMetadata()]

    def read_metadata(source: Image.Image) -> None:
        if keep_metadata:
            kept[0] = metadata_policy.read_kept(source)

    work = pipeline.open_prepared(
        data,
        max_dimension_for=functools.partial(_base_dimension, specs),
        max_pixels=max_pixels,
        decode_budget=decode_budget,
        output_format=largest.output_format,
        auto=largest.quality is None,
        background=background or specs[0].canvas.background,
        on_open=read_metadata,
    )
    del data
    inspected_indexes = frozenset(inspected)
    source_size = _upright(work.source_size, work.orientation)
    had_alpha = work.had_alpha
    base = work.image
    try:
        decoded = time.perf_counter()
        source_report = None
        if inspect_source is not None:
            source_report = inspect_source(base, source_size, work.source_bytes, work.source_format, had_alpha)
        made: dict[int, Rendition] = {}
        trims: dict[int | None, Image.Image] = {}
        # Largest content first: each smaller one is shrunk from the last one made, not from the source.
        order = sorted(range(len(specs)), key=lambda index: -_content_area(specs[index], source_size))
        previous: dict[int | None, Image.Image] = {}
        for index in order:
            rendition_started = time.perf_counter()
            spec = specs[index]
            tolerance = spec.canvas.trim
            if tolerance not in trims:
                trims[tolerance] = canvas.trimmed(base, tolerance)
            content = trims[tolerance]
            at_source_scale = _at_source_scale(content.size, base.size, source_size)
            plan = canvas.layout(at_source_scale, spec.canvas, _longest_side(spec))
            budget.check_rendition(
                base.size,
                plan.content,
                plan.canvas,
                spec.output_format,
                spec.quality is None,
                decode_budget,
                max_pixels,
            )
            start_from = previous.get(tolerance, content)
            if start_from.width < plan.content[0]:
                start_from = content
            scaled = canvas.scaled(start_from, plan.content)
            previous[tolerance] = scaled
            drawn = canvas.compose(scaled, plan, spec.canvas)
            metadata = metadata_policy.encoder_arguments(kept[0], spec.output_format)
            encoded, quality, score, lowered = _encode(drawn, spec, work.icc, metadata)
            compressed = pipeline.CompressedImage(
                encoded,
                drawn.width,
                drawn.height,
                work.source_format,
                work.source_bytes,
                format=spec.output_format,
                quality=quality,
                score=score,
                kept_source=False,
                decode_s=decoded - started,
                encode_s=time.perf_counter() - rendition_started,
            )
            changes = _changes(work.source_format, had_alpha, content is not base, plan, spec, at_source_scale, lowered)
            facts = None
            if inspect_output is not None and index in inspected_indexes:
                facts = inspect_output(drawn, encoded, spec.output_format)
            made[index] = Rendition(compressed, changes, facts)
        return Made([made[index] for index in range(len(specs))], source_report)
    finally:
        base.close()
        for image in trims.values():
            image.close()


def _encode(
    drawn: Image.Image,
    spec: RenditionSpec,
    icc: bytes | None,
    metadata: dict[str, bytes],
) -> tuple[bytes, int, float | None, bool]:
    encoder = functools.partial(encode.encode_image, output_format=spec.output_format, icc=icc, metadata=metadata)
    score = None
    if spec.quality is None:
        quality, score, encoded = quality_search.encode_auto(drawn, spec.target_score, encoder, spec.output_format)
    else:
        quality = spec.quality
        encoded = encoder(drawn, quality)
    lowered = False
    while spec.max_bytes is not None and len(encoded) > spec.max_bytes:
        if quality <= LOWEST_QUALITY:
            raise ImageProcessingError(
                "max_bytes_unreachable",
                f"Even at quality {quality} the output is {len(encoded)} bytes, past its max_bytes of "
                f"{spec.max_bytes}: a smaller size (max_dimension) or another format would fit.",
            )
        quality, score, lowered = max(LOWEST_QUALITY, quality - QUALITY_STEP), None, True
        encoded = encoder(drawn, quality)
    return encoded, quality, score, lowered


def _changes(
    source_format: str,
    had_alpha: bool,
    trimmed: bool,
    plan: canvas.Layout,
    spec: RenditionSpec,
    content: tuple[int, int],
    lowered: bool,
) -> tuple[str, ...]:
    """What was done to the source (its ``content``, trimmed, in source pixels) to make this rendition."""
    done = {
        "flattened": had_alpha,
        "trimmed": trimmed,
        "cropped": spec.canvas.fit == "cover" and plan.canvas != plan.content,
        "padded": spec.canvas.fit != "cover" and plan.canvas != plan.content,
        "upscaled": plan.content[0] > content[0],
        "downscaled": plan.content[0] < content[0],
        "converted": spec.output_format.upper() != source_format,
        "quality_lowered": lowered,
    }
    return tuple(change for change in CHANGES if done[change])


def _longest_side(spec: RenditionSpec) -> int:
    """The rendition's longest side: its max_dimension, within what its format holds (encode.MAX_SIDE)."""
    holds = encode.MAX_SIDE[spec.output_format]
    return holds if spec.max_dimension is None else min(spec.max_dimension, holds)


def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _upright(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    return (size[1], size[0]) if orientation in _SWAPPING_ORIENTATIONS else size


def _at_source_scale(content: tuple[int, int], base: tuple[int, int], source: tuple[int, int]) -> tuple[int, int]:
    """The size ``content`` (cut from a base decoded at ``base`` size) has in the source's own pixels."""
    factor = source[0] / base[0]
    return max(1, round(content[0] * factor)), max(1, round(content[1] * factor))


def _content_area(spec: RenditionSpec, source: tuple[int, int]) -> int:
    return _area(canvas.layout(source, spec.canvas, _longest_side(spec)).content)


def _memory_weight(spec: RenditionSpec) -> tuple[int, int]:
    return (["jpeg", "webp", "avif"].index(spec.output_format), spec.quality is None)


def _base_dimension(specs: Sequence[RenditionSpec], header_size: tuple[int, int], orientation: int) -> int | None:
    """The longest side to decode the source at: enough for every rendition's content; None for whole."""
    if any(spec.canvas.trim is not None for spec in specs):
        return None
    source = _upright(header_size, orientation)
    longest = 0
    for spec in specs:
        content = canvas.layout(source, spec.canvas, _longest_side(spec)).content
        longest = max(longest, math.ceil(max(content[0] / source[0], content[1] / source[1]) * max(source)))
    return None if longest >= max(source) else longest
