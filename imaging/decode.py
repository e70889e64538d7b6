"""Opening and decoding untrusted bytes: the formats allowed, and Pillow's failures as ImageProcessingError."""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Iterator

from PIL import Image, UnidentifiedImageError

from imaging.errors import ImageProcessingError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")

# Exceptions Pillow's decoders are known to raise on malformed input. Anything else
# propagates untouched on purpose: MemoryError (the worker should fail loudly, not mark
# the image corrupt) and timeouts such as Celery's SoftTimeLimitExceeded, which derive
# straight from Exception and must reach the task runner.
DECODE_ERRORS: tuple[type[BaseException], ...] = (
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


@contextlib.contextmanager
def image_errors() -> Iterator[None]:
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
            raise too_many_pixels(str(exc)) from None
        except UnidentifiedImageError:
            raise ImageProcessingError(
                "not_an_image",
                "The file is not an image in a supported format (JPEG, PNG, WebP, GIF, TIFF, BMP).",
            ) from None
        except DECODE_ERRORS as exc:
            raise _corrupt(exc) from None


def too_many_pixels(detail: str) -> ImageProcessingError:
    """The error for an image over the pixel limit; ``detail`` says by how much."""
    return ImageProcessingError("too_many_pixels", f"The image has too many pixels. {detail}")


def _corrupt(exc: BaseException) -> ImageProcessingError:
    if isinstance(exc, OSError) and "truncated" in str(exc).lower():
        message = "The image file is truncated: it ends before all of its pixel data."
    else:
        # The detail comes from the decoder, which may quote the file; keep it short.
        detail = f"{type(exc).__name__}: {exc}"[:200]
        message = f"The image file is corrupt and could not be decoded ({detail})."
    return ImageProcessingError("corrupt_image", message)
