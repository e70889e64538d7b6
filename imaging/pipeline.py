"""Turn untrusted downloaded bytes into a small, metadata-free RGB JPEG, WebP or AVIF.

``compress`` decodes, shrinks, orients and flattens (``prepare``), then encodes at a fixed quality or at the
lowest one that meets an SSIM-luma target (``perceptual``); ``never_bigger`` keeps a JPEG source's own data,
stripped of its metadata (``jpeg_metadata``), when re-encoding would not make it smaller.
"""

from __future__ import annotations

import functools
import io
import time
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError, features

from imaging import jpeg_metadata
from imaging.colour import RGB_MODES, cmyk_to_rgb, is_profile, is_rgb_profile, to_working_mode
from imaging.decode import ALLOWED_FORMATS, DECODE_ERRORS, image_errors, too_many_pixels
from imaging.encode import AVIF_SPEED, WEBP_METHOD, encode_image
from imaging.errors import ImageProcessingError
from imaging.orientation import TRANSPOSE_FOR_ORIENTATION, read_orientation
from imaging.quality_search import (
    AUTO_EXTRA_ENCODES,
    DEFAULT_TARGET_SCORE,
    TARGET_SCORE_MAX,
    TARGET_SCORE_MIN,
    encode_auto,
)
from imaging.resize import REDUCING_GAP, RESAMPLE, target_size

__all__ = [
    "ALLOWED_FORMATS",
    "AUTO_EXTRA_ENCODES",
    "AVIF_SPEED",
    "DEFAULT_TARGET_SCORE",
    "OUTPUT_FORMATS",
    "TARGET_SCORE_MAX",
    "TARGET_SCORE_MIN",
    "WEBP_METHOD",
    "CompressedImage",
    "ImageProcessingError",
    "compress",
    "encodable_formats",
    "prepare",
]

OUTPUT_FORMATS = ("jpeg", "webp", "avif")


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


@dataclass
class _Prepared:
    image: Image.Image
    source_format: str
    source_bytes: int
    #: The source's RGB profile, to embed in the output.
    icc: bytes | None
    #: The source file, held only when it is a JPEG that could be kept as it is (see compress).
    source_jpeg: bytes | None


def encodable_formats() -> frozenset[str]:
    """The OUTPUT_FORMATS the installed Pillow can encode."""
    return frozenset(name for name in OUTPUT_FORMATS if name == "jpeg" or features.check(name))


def compress(
    data: bytes,
    *,
    quality: int | None = 50,
    max_dimension: int | None = None,
    max_pixels: int = 50_000_000,
    output_format: str = "jpeg",
    target_score: float | None = None,
    never_bigger: bool = False,
) -> CompressedImage:
    """Decode ``data``, shrink, orient and flatten it (see prepare), and encode it as ``output_format``.

    JPEG is baseline, 4:2:0; WebP and AVIF are lossy, 4:2:0. Only an RGB ICC profile is carried over, never
    EXIF, XMP or comments. ``quality=None`` ("auto") encodes at the lowest quality whose SSIM-luma score
    against the prepared image meets ``target_score`` (see quality_search.encode_auto). ``never_bigger`` hands back the
    source's own JPEG data, without its metadata, when the output would be no smaller and the source needs
    no change (a JPEG, RGB or gray, no resize, no rotation): same pixels, fewer bytes.

    Raises ImageProcessingError with code ``not_an_image``, ``too_many_pixels`` or
    ``corrupt_image``; ValueError for out-of-range arguments or a format Pillow cannot encode here.
    MemoryError and exceptions that are not decoder errors (e.g. task time limits) propagate.

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
    keep_jpeg = bool(never_bigger) and output_format == "jpeg"
    stream, source_bytes = _open_stream(data)
    del data

    with image_errors():
        started = time.perf_counter()
        prepared = _prepare(stream, source_bytes, max_dimension, max_pixels, keep_jpeg)
        decoded = time.perf_counter()
        try:
            im = prepared.image
            encode = functools.partial(encode_image, output_format=output_format, icc=prepared.icc)
            score = None
            if quality is None:
                quality, score, encoded = encode_auto(im, target_score, encode, output_format)
            else:
                encoded = encode(im, quality)
            kept = _keep_source(prepared, len(encoded))
            if kept is not None:
                encoded, quality, score = kept, None, None if score is None else 1.0
            return CompressedImage(
                encoded,
                im.width,
                im.height,
                prepared.source_format,
                source_bytes,
                format=output_format,
                quality=quality,
                score=score,
                kept_source=kept is not None,
                decode_s=decoded - started,
                encode_s=time.perf_counter() - decoded,
            )
        finally:
            prepared.image.close()


def prepare(data: bytes, *, max_dimension: int | None = None, max_pixels: int = 50_000_000) -> Image.Image:
    """The RGB pixels compress encodes for ``data``: decoded, shrunk, oriented, flattened onto white.

    Raises ImageProcessingError and ValueError as compress.
    """
    _check_limits(max_dimension, max_pixels)
    stream, source_bytes = _open_stream(data)
    del data
    with image_errors():
        return _prepare(stream, source_bytes, max_dimension, max_pixels, keep_jpeg=False).image


def _check_limits(max_dimension: object, max_pixels: object) -> None:
    if max_dimension is not None and (
        isinstance(max_dimension, bool) or not isinstance(max_dimension, int) or max_dimension < 1
    ):
        raise ValueError(f"max_dimension must be a positive int or None, got {max_dimension!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")


def _open_stream(data: bytes) -> tuple[io.BytesIO, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not data:
        raise ImageProcessingError("not_an_image", "The file is empty.")
    return io.BytesIO(data), len(data)


def _prepare(
    stream: io.BytesIO, source_bytes: int, max_dimension: int | None, max_pixels: int, keep_jpeg: bool
) -> _Prepared:
    source = Image.open(stream, formats=ALLOWED_FORMATS)
    try:
        return _prepare_source(source, stream, source_bytes, max_dimension, max_pixels, keep_jpeg)
    except BaseException:
        source.close()
        raise


def _prepare_source(
    source: Image.Image,
    stream: io.BytesIO,
    source_bytes: int,
    max_dimension: int | None,
    max_pixels: int,
    keep_jpeg: bool,
) -> _Prepared:
    width, height = source.size
    if width <= 0 or height <= 0:
        raise ImageProcessingError("not_an_image", "The image has no pixels.")
    if width * height > max_pixels:
        raise too_many_pixels(f"The image is {width}x{height} ({width * height} pixels); the limit is {max_pixels}.")
    # Multi-picture JPEGs (phone cameras) open as MPO through the JPEG plugin.
    source_format = "JPEG" if source.format == "MPO" else source.format
    if source_format not in ALLOWED_FORMATS:
        raise ImageProcessingError("not_an_image", f"Unsupported image format {source.format!r}.")

    target = target_size(width, height, max_dimension)
    icc = source.info.get("icc_profile")
    source_jpeg = None
    if keep_jpeg and source_format == "JPEG" and target is None and _needs_no_change(source, icc):
        source_jpeg = stream.getvalue()  # the very bytes object passed in, when it was bytes: no copy
    box: tuple[float, float, float, float] | None = None
    if target is not None:
        # JPEG only (a no-op elsewhere): let libjpeg decode at 1/2, 1/4 or 1/8 scale, still
        # at least as large as the target. Must happen before load().
        drafted = source.draft(source.mode, target)
        if drafted is not None:
            box = drafted[1]
    source.load()

    orientation = read_orientation(source)
    # A gray or CMYK source's profile does not describe the RGB output.
    keep_icc = icc if source.mode in RGB_MODES and is_rgb_profile(icc) else None
    # Pillow keeps its file open after load() (TIFF reads EXIF from it); nothing reads it from
    # here on, and closing it frees the source bytes while a resize needs the most memory.
    stream.close()

    im = _replace(source, to_working_mode(source))
    if target is not None and im.size != target:
        im = _replace(im, im.resize(target, RESAMPLE, box=box, reducing_gap=REDUCING_GAP))
    if orientation in TRANSPOSE_FOR_ORIENTATION:
        im = _replace(im, im.transpose(TRANSPOSE_FOR_ORIENTATION[orientation]))
    if im.mode == "CMYK":
        im = _replace(im, cmyk_to_rgb(im, icc))
    elif im.mode != "RGB":
        im = _replace(im, im.convert("RGB"))
    # The encoders fall back to the source's info for some metadata (AVIF: the profile; JPEG: the comment).
    im.info.clear()
    return _Prepared(im, source_format, source_bytes, keep_icc, source_jpeg)


def _needs_no_change(source: Image.Image, icc: object) -> bool:
    """Whether the output's pixels would be the source's as they are (read from the header, before decoding).

    That is: RGB or gray, opaque, upright, and with no profile or one for its colour space.
    """
    if source.mode == "RGB":
        profile_fits = not icc or is_rgb_profile(icc)
    elif source.mode == "L":
        profile_fits = not icc or (isinstance(icc, bytes) and is_profile(icc, b"GRAY"))
    else:
        return False
    return profile_fits and "transparency" not in source.info and read_orientation(source) == 1


def _keep_source(prepared: _Prepared, encoded_bytes: int) -> bytes | None:
    """The source JPEG without its metadata, when it is held, valid and no larger than the encoded output."""
    source, prepared.source_jpeg = prepared.source_jpeg, None
    if source is None:
        return None
    try:
        stripped = jpeg_metadata.strip_metadata(source)
        frame = jpeg_metadata.frame_marker(stripped)
    except jpeg_metadata.JpegStructureError:
        return None  # a file Pillow decodes but the marker walk refuses: encode it normally
    if len(stripped) > encoded_bytes or frame not in jpeg_metadata.WEB_FRAMES:
        return None
    try:
        with Image.open(io.BytesIO(stripped), formats=("JPEG",)) as kept:
            same = kept.size == prepared.image.size and kept.mode in ("RGB", "L")
    except (UnidentifiedImageError, *DECODE_ERRORS):
        return None  # the source decoded, so the output it would have been is the safe answer
    return stripped if same else None


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """Free ``old``'s pixels as soon as ``new`` exists, keeping peak memory at two images."""
    if old is not new:
        old.close()
    return new
