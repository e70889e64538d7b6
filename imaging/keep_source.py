"""never_bigger: a JPEG source that needs no change is held, and handed back without its metadata when the
encoded output would be no smaller (same pixels, fewer bytes)."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from imaging import jpeg_metadata
from imaging.colour import is_profile, is_rgb_profile
from imaging.decode import DECODE_ERRORS
from imaging.orientation import exif_orientation
from imaging.work import Work


def hold(work: Work) -> None:
    """Step, before decoding: hold the source file when never_bigger may hand it back as it is."""
    if (
        work.keep_jpeg
        and work.source_format == "JPEG"
        and work.target is None
        and _needs_no_change(work.image, work.source_icc)
    ):
        work.source_jpeg = work.stream.getvalue()  # the very bytes object passed in, when it was bytes: no copy


def kept_source(work: Work, encoded_bytes: int) -> bytes | None:
    """The source JPEG without its metadata, when it is held, valid and no larger than the encoded output."""
    source, work.source_jpeg = work.source_jpeg, None
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
            same = kept.size == work.image.size and kept.mode in ("RGB", "L")
    except (UnidentifiedImageError, *DECODE_ERRORS):
        return None  # the source decoded, so the output it would have been is the safe answer
    return stripped if same else None


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
    return profile_fits and "transparency" not in source.info and exif_orientation(source) == 1
