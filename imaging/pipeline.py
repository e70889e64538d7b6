"""Turn untrusted downloaded bytes into a small, metadata-free RGB JPEG, WebP or AVIF.

``compress`` runs PREPARE_STEPS in order (decode, shrink, orient, flatten: ``prepare``), then encodes at a
fixed quality or at the lowest one that meets an SSIM-luma target (``quality_search``); ``never_bigger`` keeps
a JPEG source's own data, stripped of its metadata (``keep_source``), when re-encoding would not make it
smaller. Each step is a function of one module, named for its concern.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, features

from imaging import budget, colour, decode, encode, keep_source, libvips_jpeg, orientation, quality_search, resize
from imaging.decode import ALLOWED_FORMATS
from imaging.encode import AVIF_SPEED, WEBP_METHOD
from imaging.errors import ImageProcessingError
from imaging.quality_search import AUTO_EXTRA_ENCODES, DEFAULT_TARGET_SCORE, TARGET_SCORE_MAX, TARGET_SCORE_MIN
from imaging.work import Step, Work

__all__ = [
    "ALLOWED_FORMATS",
    "AUTO_EXTRA_ENCODES",
    "AVIF_SPEED",
    "DEFAULT_TARGET_SCORE",
    "OUTPUT_FORMATS",
    "PREPARE_STEPS",
    "TARGET_SCORE_MAX",
    "TARGET_SCORE_MIN",
    "WEBP_METHOD",
    "CompressedImage",
    "ImageProcessingError",
    "compress",
    "encodable_formats",
    "memory_needed",
    "open_prepared",
    "prepare",
]

OUTPUT_FORMATS = ("jpeg", "webp", "avif")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
#: The pixel limit when none is given (the service's MAX_IMAGE_PIXELS default).
MAX_PIXELS = 50_000_000

#: What ``prepare`` does to an opened source, in order. Header checks and choices come before ``decode.load``
#: (nothing is decoded for a refused image, and a JPEG is drafted smaller before its memory is counted); the
#: file is read for the last time before ``decode.close_file``.
PREPARE_STEPS: tuple[Step, ...] = (
    decode.check_header,
    resize.plan,
    keep_source.hold,
    resize.draft,
    budget.check,
    decode.load,
    orientation.read,
    colour.choose_profile,
    decode.close_file,
    colour.to_working_mode,
    resize.shrink,
    orientation.apply,
    colour.to_rgb,
    encode.strip_metadata,
)


@dataclass(frozen=True)
class CompressedImage:
    """The encoded image and what it was made from."""

    data: bytes
    width: int
    height: int
    source_format: str
    #: The size of the file it was decoded from.
    source_bytes: int
    #: One of OUTPUT_FORMATS.
    format: str
    #: The quality it was encoded at; None when the source's own JPEG data was kept.
    quality: int | None
    #: SSIM on luma of ``data`` against the prepared image (see prepare), for quality=None only (1.0 when the
    #: source was kept); None for a fixed quality.
    score: float | None
    #: Whether ``data`` is the source JPEG itself with its metadata removed (never_bigger).
    kept_source: bool
    #: Seconds spent decoding and preparing the pixels (see prepare), then encoding them.
    decode_s: float = 0.0
    encode_s: float = 0.0


def encodable_formats() -> frozenset[str]:
    """The OUTPUT_FORMATS the installed Pillow can encode."""
    return frozenset(name for name in OUTPUT_FORMATS if name == "jpeg" or features.check(name))


def compress(
    data: bytes,
    *,
    quality: int | None = 50,
    max_dimension: int | None = None,
    max_pixels: int = MAX_PIXELS,
    output_format: str = "jpeg",
    target_score: float | None = None,
    never_bigger: bool = False,
    decode_budget: int | None = budget.DEFAULT_BUDGET,
) -> CompressedImage:
    """Decode ``data``, shrink, orient and flatten it (see prepare), and encode it as ``output_format``.

    JPEG is baseline, 4:2:0; WebP and AVIF are lossy, 4:2:0. A side longer than the output format holds
    (encode.MAX_SIDE) is shrunk to fit, as max_dimension would. Only an RGB ICC profile is carried over, never
    EXIF, XMP or comments. ``quality=None`` ("auto") encodes at the lowest quality whose SSIM-luma score
    against the prepared image meets ``target_score`` (see quality_search.encode_auto). ``never_bigger`` hands
    back the source's own JPEG data, without its metadata, when the output would be no smaller and the source
    needs no change (a JPEG, RGB or gray, no resize, no rotation): same pixels, fewer bytes.

    Raises ImageProcessingError with code ``not_an_image``, ``too_many_pixels``, ``image_too_large`` (the
    memory it would take, estimated before decoding, is past ``decode_budget`` bytes: see budget; None is no
    limit) or ``corrupt_image`` for what Pillow refuses in the source (see decode.image_errors); ValueError for
    out-of-range arguments or a format Pillow cannot encode here.
    Anything else (a bug of ours, MemoryError, a task time limit) propagates.

    A caller that passes the only reference to ``data`` has its memory back as soon as the
    pixels are decoded, before the resize and the encoding (unless never_bigger may keep the source).
    """
    if quality is None:
        if isinstance(target_score, bool) or not isinstance(target_score, (int, float)) or not 0 < target_score < 1:
            raise ValueError(f"quality=None needs a target_score in (0, 1), got {target_score!r}")
    elif isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"quality must be an int in 1..95 or None, got {quality!r}")
    elif target_score is not None:
        raise ValueError("target_score applies to quality=None only")
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if output_format not in encodable_formats():
        raise ValueError(f"this Pillow cannot encode {output_format}")
    _check_limits(max_dimension, max_pixels)
    if decode_budget is not None and (isinstance(decode_budget, bool) or not isinstance(decode_budget, int)):
        raise ValueError(f"decode_budget must be an int (bytes) or None, got {decode_budget!r}")
    keep_jpeg = bool(never_bigger) and output_format == "jpeg"
    stream, source_bytes = decode.open_stream(data)
    del data

    started = time.perf_counter()
    work = _open(
        stream,
        source_bytes,
        max_dimension,
        max_pixels,
        keep_jpeg,
        output_format=output_format,
        auto=quality is None,
        decode_budget=decode_budget,
    )
    if libvips_jpeg.applies(work, quality):
        return _libvips_jpeg(work, quality, started)
    _finish_preparing(work)
    decoded = time.perf_counter()
    try:
        im = work.image
        encoder = functools.partial(encode.encode_image, output_format=output_format, icc=work.icc)
        score = None
        if quality is None:
            quality, score, encoded = quality_search.encode_auto(im, target_score, encoder, output_format)
        else:
            encoded = encoder(im, quality)
        kept = keep_source.kept_source(work, len(encoded))
        if kept is not None:
            encoded, quality, score = kept, None, None if score is None else 1.0
        return CompressedImage(
            encoded,
            im.width,
            im.height,
            work.source_format,
            source_bytes,
            format=output_format,
            quality=quality,
            score=score,
            kept_source=kept is not None,
            decode_s=decoded - started,
            encode_s=time.perf_counter() - decoded,
        )
    finally:
        work.image.close()


def prepare(data: bytes, *, max_dimension: int | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The RGB pixels compress encodes for ``data``: decoded, shrunk, oriented, flattened onto white.

    Raises ImageProcessingError and ValueError as compress.
    """
    _check_limits(max_dimension, max_pixels)
    stream, source_bytes = decode.open_stream(data)
    del data
    return _prepare(stream, source_bytes, max_dimension, max_pixels, keep_jpeg=False).image


def open_prepared(
    data: bytes,
    *,
    max_dimension_for: Callable[[tuple[int, int], int], int | None],
    max_pixels: int = MAX_PIXELS,
    decode_budget: int | None = budget.DEFAULT_BUDGET,
    output_format: str = "jpeg",
    auto: bool = False,
    background: tuple[int, int, int] = (255, 255, 255),
    on_open: Callable[[Image.Image], None] | None = None,
) -> Work:
    """``data`` through PREPARE_STEPS, shrunk to the longest side ``max_dimension_for(header size, EXIF
    orientation)`` gives (None: whole): a Work whose image is upright RGB, alpha flattened onto ``background``.
    ``on_open`` is handed the source as opened, before a pixel is decoded. The caller closes the image.

    Raises ImageProcessingError and ValueError as compress.
    """
    _check_limits(None, max_pixels)
    stream, source_bytes = decode.open_stream(data)
    del data
    work = Work(
        decode.open_image(stream),
        stream,
        source_bytes,
        None,
        max_pixels,
        False,
        output_format=output_format,
        auto=auto,
        decode_budget=decode_budget,
        background=background,
    )
    im = work.image
    work.source_icc = im.info.get("icc_profile")
    work.had_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
    _run(work, (decode.check_header,))
    try:
        if on_open is not None:
            on_open(im)
        work.max_dimension = max_dimension_for(work.source_size, orientation.exif_orientation(im))
    except BaseException:
        im.close()
        raise
    _run(work, PREPARE_STEPS)
    return work


def memory_needed(
    data: bytes, *, output_format: str = "jpeg", quality: int | None = 50, max_dimension: int | None = None
) -> int:
    """The most memory, in bytes, compress would take for ``data`` with these options: the estimate its
    ``decode_budget`` is checked against (see budget), read from the header alone.

    Raises ImageProcessingError and ValueError as compress (with its default max_pixels).
    """
    _check_limits(max_dimension, MAX_PIXELS)
    stream, source_bytes = decode.open_stream(data)
    del data
    source = decode.open_image(stream)
    work = Work(source, stream, source_bytes, max_dimension, MAX_PIXELS, False, output_format=output_format)
    work.auto = quality is None
    try:
        for step in PREPARE_STEPS[: PREPARE_STEPS.index(budget.check)]:
            step(work)
        return budget.estimate(work)
    finally:
        work.image.close()


def _check_limits(max_dimension: object, max_pixels: object) -> None:
    if max_dimension is not None and (
        isinstance(max_dimension, bool) or not isinstance(max_dimension, int) or max_dimension < 1
    ):
        raise ValueError(f"max_dimension must be a positive int or None, got {max_dimension!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")


#: The steps that read the header alone, before anything is decoded: every check and every choice.
HEADER_STEPS = PREPARE_STEPS[: PREPARE_STEPS.index(decode.load)]


def _prepare(
    stream: io.BytesIO,
    source_bytes: int,
    max_dimension: int | None,
    max_pixels: int,
    keep_jpeg: bool,
    **asked: Any,
) -> Work:
    """Open the source and run PREPARE_STEPS over it; the image is closed if a step fails.

    ``asked``: the Work's other fields (output_format, auto, decode_budget).
    """
    work = _open(stream, source_bytes, max_dimension, max_pixels, keep_jpeg, **asked)
    _finish_preparing(work)
    return work


def _open(
    stream: io.BytesIO,
    source_bytes: int,
    max_dimension: int | None,
    max_pixels: int,
    keep_jpeg: bool,
    **asked: Any,
) -> Work:
    """Open the source and run HEADER_STEPS over it; the image is closed if a step fails."""
    # The Work holds the only reference to the source: a step that replaces the image frees it, decoder and all.
    work = Work(decode.open_image(stream), stream, source_bytes, max_dimension, max_pixels, keep_jpeg, **asked)
    work.source_icc = work.image.info.get("icc_profile")
    _run(work, HEADER_STEPS)
    return work


def _finish_preparing(work: Work) -> None:
    """Run the rest of PREPARE_STEPS, from the decode on."""
    _run(work, PREPARE_STEPS[len(HEADER_STEPS) :])


def _run(work: Work, steps: tuple[Step, ...]) -> None:
    try:
        for step in steps:
            step(work)
    except BaseException:
        work.image.close()
        raise


def _libvips_jpeg(work: Work, quality: int, started: float) -> CompressedImage:
    """The output made by libvips (see libvips_jpeg), from the header Pillow has read and checked."""
    try:
        orientation.read(work)
        colour.choose_profile(work)
        data, width, height = libvips_jpeg.compress(work, quality, work.orientation, work.icc is not None)
    finally:
        work.image.close()
        work.stream.close()
    return CompressedImage(
        data,
        width,
        height,
        work.source_format,
        work.source_bytes,
        format="jpeg",
        quality=quality,
        score=None,
        kept_source=False,
        decode_s=time.perf_counter() - started,
    )
