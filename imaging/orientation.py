"""The EXIF orientation: read from the source, applied to the pixels, never written to the output."""

from __future__ import annotations

from PIL import Image

from imaging.decode import DECODE_ERRORS
from imaging.work import Work

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


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation, or 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except DECODE_ERRORS:
        # Broken EXIF is metadata we drop anyway; it is no reason to refuse the pixels.
        return 1
    return value if isinstance(value, int) else 1


def read(work: Work) -> None:
    """Step: note the source's orientation, while its file is still open."""
    work.orientation = exif_orientation(work.image)


def apply(work: Work) -> None:
    """Step: turn the pixels upright."""
    if work.orientation in _TRANSPOSE_FOR_ORIENTATION:
        work.replace(work.image.transpose(_TRANSPOSE_FOR_ORIENTATION[work.orientation]))
