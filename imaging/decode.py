"""Opening and decoding untrusted bytes: the formats allowed, the pixel limit, Pillow's failures as
ImageProcessingError."""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from collections.abc import Iterator

from PIL import Image, UnidentifiedImageError

from imaging.errors import ImageProcessingError
from imaging.work import Work

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")

# What Pillow raises for bad bytes: its documented OSError (truncated or broken data, decoder errors;
# UnidentifiedImageError is one) and SyntaxError (its plugins' word for a malformed header), and what
# its parsers let through on hostile headers and chunks: ValueError, struct.error, EOFError, IndexError,
# KeyError, ZeroDivisionError, OverflowError, NotImplementedError (its own fuzzing harness lists most),
# and TypeError (a TIFF whose StripOffsets tag is typed UNDEFINED fails in ImageFile.load with
# "'bytes' object cannot be interpreted as an integer"). Only Pillow's calls on the source are guarded
# (see image_errors), so these name the file's faults there, never our own bugs, which propagate, as do
# MemoryError (the worker should fail loudly, not mark the image corrupt) and timeouts such as Celery's
# SoftTimeLimitExceeded, which derive straight from Exception and must reach the task runner.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    struct.error,
    EOFError,
    LookupError,
    TypeError,
    ArithmeticError,
    NotImplementedError,
)
#: What Pillow raises converting decoded pixels by what the file declared (its palette, its transparency).
CONVERSION_ERRORS: tuple[type[BaseException], ...] = (ValueError,)


def open_stream(data: bytes) -> tuple[io.BytesIO, int]:
    """``data`` as a stream for Pillow, and its size; an empty file is not an image."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not data:
        raise ImageProcessingError("not_an_image", "The file is empty.")
    return io.BytesIO(data), len(data)


def open_image(stream: io.BytesIO) -> Image.Image:
    """Read the header of one of the ALLOWED_FORMATS (told apart by their magic bytes); no pixel is decoded.

    Raises ImageProcessingError (see image_errors).
    """
    with image_errors():
        return Image.open(stream, formats=ALLOWED_FORMATS)


@contextlib.contextmanager
def image_errors(errors: tuple[type[BaseException], ...] = DECODE_ERRORS) -> Iterator[None]:
    """Turn what Pillow raises on a bad file (``errors``, bombs, unknown formats) into ImageProcessingError.

    Wrap only Pillow's calls on the source (open, load, a first conversion): what our own code raises must
    propagate, not read as the user's corrupt file.
    """
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
        except errors as exc:
            raise _corrupt(exc) from None


def check_header(work: Work) -> None:
    """Step: refuse, from the header alone, an image with no pixels, too many, or in a format not allowed."""
    source = work.image
    width, height = source.size
    if width <= 0 or height <= 0:
        raise ImageProcessingError("not_an_image", "The image has no pixels.")
    work.source_size = (width, height)
    if width * height > work.max_pixels:
        raise _too_many_pixels(
            f"The image is {width}x{height} ({width * height} pixels); the limit is {work.max_pixels}."
        )
    # Multi-picture JPEGs (phone cameras) open as MPO through the JPEG plugin.
    source_format = "JPEG" if source.format == "MPO" else source.format
    if source_format not in ALLOWED_FORMATS:
        raise ImageProcessingError("not_an_image", f"Unsupported image format {source.format!r}.")
    work.source_format = source_format


def load(work: Work) -> None:
    """Step: decode the pixels. Raises ImageProcessingError (see image_errors)."""
    with image_errors():
        work.image.load()
    if work.source_format == "WEBP":
        # WebP's decoder keeps two canvases of the image's size for as long as the image lives: a copy
        # lets them go (a copy costs no more than the decoder did at its peak).
        work.replace(work.image.copy())


def close_file(work: Work) -> None:
    """Step: close the source file once nothing reads it any more."""
    # Pillow keeps its file open after load() (TIFF reads EXIF from it); nothing reads it from
    # here on, and closing it frees the source bytes while a resize needs the most memory.
    work.stream.close()


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
