"""Turn untrusted downloaded bytes into a small, metadata-free RGB JPEG, WebP or AVIF.

``compress`` decodes, shrinks, orients and flattens (``prepare``), then encodes at a fixed quality or at the
lowest one that meets an SSIM-luma target (``perceptual``); ``never_bigger`` keeps a JPEG source's own data,
stripped of its metadata (``jpeg_metadata``), when re-encoding would not make it smaller.
"""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError, features

from imaging import jpeg_metadata, perceptual

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
OUTPUT_FORMATS = ("jpeg", "webp", "avif")
#: quality=auto's default target: SSIM on luma 0.965 matches SSIMULACRA2 70 on the bench's photos
#: (bench/QUALITY.md). A target may be chosen from TARGET_SCORE_MIN to TARGET_SCORE_MAX.
DEFAULT_TARGET_SCORE = 0.965
TARGET_SCORE_MIN = 0.5
TARGET_SCORE_MAX = 0.999

# Measured on the bench's photos up to 4 MP at quality 50 (bench/bench_quality_auto.py, bench/RESULTS.md):
# each is where one step slower costs over twice the CPU for under 10% fewer bytes. WebP method 2 -> 3:
# 2.5x the CPU, -8% (0 -> 2 cost 1.5x for -15%); AVIF speed 9 -> 8: 2.2x, -4% (6: 9x, -12%; 10 is 9).
WEBP_METHOD = 2
AVIF_SPEED = 9
#: Full-size encodes quality=None may add after the search when the whole image misses the target.
AUTO_EXTRA_ENCODES = 2
_QUALITY_CAP = 95
_WEBP_MAX_SIDE = 16383

# Exceptions Pillow's decoders are known to raise on malformed input. Anything else
# propagates untouched on purpose: MemoryError (the worker should fail loudly, not mark
# the image corrupt) and timeouts such as Celery's SoftTimeLimitExceeded, which derive
# straight from Exception and must reach the task runner.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    struct.error,
    EOFError,
    LookupError,
    TypeError,
    ArithmeticError,
    AttributeError,
    AssertionError,
    RuntimeError,
)

_ORIENTATION_TAG = 0x0112
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Source modes whose samples are RGB (or index an RGB palette), so an RGB profile applies.
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# 16-bit samples map to 8 bits by /257 (65535 -> 255); Pillow's own I -> L clips instead.
# Mode I (32-bit) is read as 16-bit too; values outside 0..65535 clamp to black/white.
_SIXTEEN_TO_EIGHT = [round(value / 257) for value in range(65536)]
_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 3.0


class ImageProcessingError(Exception):
    """A file that cannot be turned into an output image; ``code`` is stable, ``message`` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
    against the prepared image meets ``target_score`` (see _encode_auto). ``never_bigger`` hands back the
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

    with _image_errors():
        started = time.perf_counter()
        prepared = _prepare(stream, source_bytes, max_dimension, max_pixels, keep_jpeg)
        decoded = time.perf_counter()
        try:
            im = prepared.image
            encode = functools.partial(_encode, output_format=output_format, icc=prepared.icc)
            score = None
            if quality is None:
                quality, score, encoded = _encode_auto(im, target_score, encode, output_format)
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
    with _image_errors():
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


@contextlib.contextmanager
def _image_errors() -> Iterator[None]:
    """Turn what Pillow raises on a bad file into ImageProcessingError, whichever step raised it."""
    # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that; make it
    # fatal. Our own max_pixels check is the primary guard; this only matters when a
    # caller allows more pixels than Pillow's default limit, so the filter being
    # process-wide (not thread-safe) cannot weaken the limit.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(str(exc)) from None
        except UnidentifiedImageError:
            raise ImageProcessingError(
                "not_an_image",
                "The file is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, BMP).",
            ) from None
        except _DECODE_ERRORS as exc:
            raise _corrupt(exc) from None


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
        raise _too_many_pixels(f"The image is {width}x{height} ({width * height} pixels); the limit is {max_pixels}.")
    # Multi-picture JPEGs (phone cameras) open as MPO through the JPEG plugin.
    source_format = "JPEG" if source.format == "MPO" else source.format
    if source_format not in ALLOWED_FORMATS:
        raise ImageProcessingError("not_an_image", f"Unsupported image format {source.format!r}.")

    target = _target_size(width, height, max_dimension)
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

    orientation = _orientation(source)
    # A gray or CMYK source's profile does not describe the RGB output.
    keep_icc = icc if source.mode in _RGB_MODES and _is_rgb_profile(icc) else None
    # Pillow keeps its file open after load() (TIFF reads EXIF from it); nothing reads it from
    # here on, and closing it frees the source bytes while a resize needs the most memory.
    stream.close()

    im = _replace(source, _to_working_mode(source))
    if target is not None and im.size != target:
        im = _replace(im, im.resize(target, _RESAMPLE, box=box, reducing_gap=_REDUCING_GAP))
    if orientation in _TRANSPOSE_FOR_ORIENTATION:
        im = _replace(im, im.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation]))
    if im.mode == "CMYK":
        im = _replace(im, _cmyk_to_rgb(im, icc))
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
        profile_fits = not icc or _is_rgb_profile(icc)
    elif source.mode == "L":
        profile_fits = not icc or (isinstance(icc, bytes) and _is_profile(icc, b"GRAY"))
    else:
        return False
    return profile_fits and "transparency" not in source.info and _orientation(source) == 1


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
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        return None  # the source decoded, so the output it would have been is the safe answer
    return stripped if same else None


def _encode(im: Image.Image, quality: int, *, output_format: str, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    if output_format == "jpeg":
        # Deliberately no optimize/progressive (+25-150% CPU).
        im.save(out, "JPEG", quality=quality, icc_profile=icc, exif=b"", xmp=b"", comment=b"")
    elif output_format == "webp":
        im.save(out, "WEBP", quality=quality, method=WEBP_METHOD, icc_profile=icc or b"", exif=b"", xmp=b"")
    else:
        # One thread: a worker process per core already keeps every core busy; threads only add overhead.
        im.save(
            out, "AVIF", quality=quality, speed=AVIF_SPEED, max_threads=1, icc_profile=icc or b"", exif=b"", xmp=b""
        )
    return out.getvalue()


def _encode_auto(
    im: Image.Image, target: float, encode: Callable[[Image.Image, int], bytes], output_format: str
) -> tuple[int, float, bytes]:
    """(quality, score, data): the lowest quality whose full-image SSIM-luma meets ``target``, as far as
    perceptual.choose_quality's tile estimate and up to AUTO_EXTRA_ENCODES steps of its correction reach.

    The search scores a mosaic of tiles (exact per tile for JPEG, an estimate for WebP and AVIF, whose blocks
    predict from their neighbours); the chosen encode is then scored whole, and while it misses the target the
    quality goes up by QUALITY_STEP, at most AUTO_EXTRA_ENCODES times and never past 95. The score returned
    is always that of ``data`` against all of ``im``: when it misses the target, the top quality tried did.
    """
    max_tiles = perceptual.MAX_TILES if output_format != "webp" else _WEBP_MAX_SIDE // perceptual.TILE
    choice = perceptual.choose_quality(im, target, encode=encode, max_tiles=max_tiles)
    quality, score, data = choice.quality, choice.score, choice.data
    reference = None
    if not choice.scored_whole:
        reference = perceptual.SsimReference(perceptual.luma_uint8(im))
        score = reference.score(_decoded_luma(data))
    for _ in range(AUTO_EXTRA_ENCODES):
        if score >= target or quality >= _QUALITY_CAP:
            break
        if reference is None:
            reference = perceptual.SsimReference(perceptual.luma_uint8(im))
        quality = min(quality + perceptual.QUALITY_STEP, _QUALITY_CAP)
        data = encode(im, quality)
        score = reference.score(_decoded_luma(data))
    return quality, score, data


def _decoded_luma(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return perceptual.luma_uint8(im)


def _target_size(width: int, height: int, max_dimension: int | None) -> tuple[int, int] | None:
    """Size with the longest side at max_dimension, or None when no shrinking is needed."""
    if max_dimension is None or max(width, height) <= max_dimension:
        return None
    if width >= height:
        return max_dimension, max(1, round(height * max_dimension / width))
    return max(1, round(width * max_dimension / height)), max_dimension


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation, or 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        # Broken EXIF is metadata we drop anyway; it is no reason to refuse the pixels.
        return 1
    return value if isinstance(value, int) else 1


def _to_working_mode(im: Image.Image) -> Image.Image:
    """Bring the image to RGB, L or CMYK (all resample well), flattening alpha onto white.

    Returns ``im`` itself when it already is in one of those modes, so RGB costs no copy.
    """
    mode = im.mode
    if mode in ("RGB", "L", "CMYK") and "transparency" not in im.info:
        return im
    if mode in _SIXTEEN_BIT_MODES:
        wide = im if mode == "I" else im.convert("I")
        gray = wide.point(_SIXTEEN_TO_EIGHT, "L")
        if wide is not im:
            wide.close()
        return gray
    if mode in ("1", "F"):
        # F (float TIFF) has no defined range; values are taken as 0..255 and clipped.
        return im.convert("L")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        alpha = im if mode in ("RGBA", "LA") else im.convert("LA" if mode == "La" else "RGBA")
        # Compositing onto white before resampling equals premultiplied resampling followed
        # by compositing, and avoids Pillow's full-size RGBa round trip in resize().
        flat = Image.new("RGB", im.size, _WHITE)
        flat.paste(alpha, mask=alpha)
        if alpha is not im:
            alpha.close()
        return flat
    return im.convert("RGB")


def _cmyk_to_rgb(im: Image.Image, icc: object) -> Image.Image:
    """Convert CMYK through its embedded profile to sRGB, or naively without a usable one."""
    if isinstance(icc, bytes) and icc:
        try:
            return ImageCms.profileToProfile(
                im,
                ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                _srgb_profile(),
                outputMode="RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    return im.convert("RGB")


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _is_rgb_profile(icc: object) -> bool:
    """Whether ``icc`` looks like an ICC profile for RGB data (header checks only)."""
    return isinstance(icc, bytes) and _is_profile(icc, b"RGB ")


def _is_profile(icc: bytes, colour_space: bytes) -> bool:
    return len(icc) >= 128 and icc[36:40] == b"acsp" and icc[16:20] == colour_space


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    """Free ``old``'s pixels as soon as ``new`` exists, keeping peak memory at two images."""
    if old is not new:
        old.close()
    return new


def _too_many_pixels(detail: str) -> ImageProcessingError:
    return ImageProcessingError("too_many_pixels", f"The image has too many pixels. {detail}")


def _corrupt(exc: BaseException) -> ImageProcessingError:
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        message = "The image file is truncated: it ends before all of its pixel data."
    else:
        # The detail comes from the decoder, which may quote the file; keep it short.
        detail = f"{type(exc).__name__}: {exc}"[:200]
        message = f"The image file is corrupt and could not be decoded ({detail})."
    return ImageProcessingError("corrupt_image", message)
