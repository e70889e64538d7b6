"""Turn untrusted downloaded bytes into a small, metadata-free RGB JPEG."""

from __future__ import annotations

import functools
import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")

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
    """A file that cannot be turned into a JPEG; ``code`` is stable, ``message`` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CompressedImage:
    """The encoded JPEG and what it was made from."""

    data: bytes
    width: int
    height: int
    source_format: str
    #: The size of the file it was decoded from.
    source_bytes: int


def compress(
    data: bytes,
    *,
    quality: int = 50,
    max_dimension: int | None = None,
    max_pixels: int = 50_000_000,
) -> CompressedImage:
    """Decode ``data``, shrink, orient and flatten it, and encode it as a baseline RGB JPEG.

    Raises ImageProcessingError with code ``not_an_image``, ``too_many_pixels`` or
    ``corrupt_image``; ValueError for out-of-range arguments. MemoryError and exceptions
    that are not decoder errors (e.g. task time limits) propagate.

    A caller that passes the only reference to ``data`` has its memory back as soon as the
    pixels are decoded, before the resize and the encoding.
    """
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95:
        raise ValueError(f"quality must be an int in 1..95, got {quality!r}")
    if max_dimension is not None and (
        isinstance(max_dimension, bool) or not isinstance(max_dimension, int) or max_dimension < 1
    ):
        raise ValueError(f"max_dimension must be a positive int or None, got {max_dimension!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not data:
        raise ImageProcessingError("not_an_image", "The file is empty.")

    # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that; make it
    # fatal. Our own max_pixels check below is the primary guard; this only matters when a
    # caller allows more pixels than Pillow's default limit, so the filter being
    # process-wide (not thread-safe) cannot weaken the limit.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            stream = io.BytesIO(data)
            source_bytes = len(data)
            del data
            source = Image.open(stream, formats=ALLOWED_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(str(exc)) from None
        except UnidentifiedImageError:
            raise ImageProcessingError(
                "not_an_image",
                "The file is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, BMP).",
            ) from None
        except _DECODE_ERRORS as exc:
            raise _corrupt(exc) from None

        with source:
            try:
                return _process(source, stream, source_bytes, quality, max_dimension, max_pixels)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _too_many_pixels(str(exc)) from None
            except _DECODE_ERRORS as exc:
                raise _corrupt(exc) from None


def _process(
    source: Image.Image,
    stream: io.BytesIO,
    source_bytes: int,
    quality: int,
    max_dimension: int | None,
    max_pixels: int,
) -> CompressedImage:
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
    box: tuple[float, float, float, float] | None = None
    if target is not None:
        # JPEG only (a no-op elsewhere): let libjpeg decode at 1/2, 1/4 or 1/8 scale, still
        # at least as large as the target. Must happen before load().
        drafted = source.draft(source.mode, target)
        if drafted is not None:
            box = drafted[1]
    source.load()

    orientation = _orientation(source)
    icc = source.info.get("icc_profile")
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

    out = io.BytesIO()
    # Deliberately no optimize/progressive (+25-150% CPU). Metadata is passed explicitly
    # empty because Pillow falls back to the source's im.info for some of it (comment).
    im.save(out, "JPEG", quality=quality, icc_profile=keep_icc, exif=b"", xmp=b"", comment=b"")
    result = CompressedImage(out.getvalue(), im.width, im.height, source_format, source_bytes)
    im.close()
    return result


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
    return isinstance(icc, bytes) and len(icc) >= 128 and icc[36:40] == b"acsp" and icc[16:20] == b"RGB "


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
