"""libvips for the JPEGs that are shrunk: decoded at the smallest scale that still covers the target
(shrink-on-load), resampled, turned upright and encoded by libvips, with about half the CPU of Pillow's path
when the decode cannot be scaled (`bench/bench_libvips_parity.py`). At full size libvips makes the very same
bytes as Pillow, no faster, and where a scaled decode did most of the shrinking Pillow is as fast: Pillow
keeps those.

Pillow still reads the header first (the format by its magic bytes, the pixel limit, the memory budget):
libvips only ever sees a JPEG that passed them. Everything else stays Pillow's: other formats, CMYK,
no resize, quality=auto (its search compares Pillow images), WebP and AVIF.
The output is what Pillow's path makes, to the pixel size: upright, RGB, baseline 4:2:0, no metadata but
the source's own RGB profile.

libvips is set up for untrusted input in a worker: its unfuzzed loaders blocked, no operation cache, one
thread (a worker process per core already keeps every core busy). It is loaded by the first image that
needs it, in the process that encodes: a worker's pool processes are forked from a parent that never
started libvips, so none inherits its threads or locks.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

from imaging.errors import ImageProcessingError
from imaging.work import Work

log = logging.getLogger(__name__)


@functools.cache
def _libvips() -> ModuleType | None:
    try:
        import pyvips
    except (ImportError, OSError) as error:  # the wheel missing, or its shared library not loadable
        log.warning("libvips is unavailable, Pillow shrinks every image: %s", error)
        return None
    pyvips.block_untrusted_set(True)
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.concurrency_set(1)
    return pyvips


#: The source modes (as Pillow reads them from the header) whose JPEG libvips decodes to the same pixels.
_MODES = frozenset({"RGB", "L"})


def available() -> bool:
    return _libvips() is not None


def library() -> ModuleType | None:
    """pyvips, set up for untrusted input (see the module); None when it cannot be loaded."""
    return _libvips()


def applies(work: Work, quality: int | None) -> bool:
    """Whether libvips makes this output: a JPEG source in RGB or gray, shrunk by less than half (so that its
    decode could not be scaled), encoded as JPEG at a fixed quality."""
    return (
        work.source_format == "JPEG"
        and work.target is not None
        # Where libjpeg's scaled decode (Pillow's draft) already did most of the shrinking, Pillow is as fast.
        and work.image.size == work.source_size
        and work.output_format == "jpeg"
        and quality is not None
        and work.image.mode in _MODES
        and available()
    )


def compress(work: Work, quality: int, orientation: int, keep_profile: bool) -> tuple[bytes, int, int]:
    """The encoded JPEG of ``work``'s source at its target size, upright; with its width and height.

    ``keep_profile``: whether the source's profile (an RGB one) is embedded in the output.
    Raises ImageProcessingError ``corrupt_image`` for what libvips refuses in the source.
    """
    pyvips = _libvips()
    source = work.stream.getbuffer()
    try:
        # Never libvips's own reading of the EXIF orientation: turned upright by the one Pillow read, as Pillow's
        # path does (an EXIF block Pillow cannot parse means no rotation there). The target is the stored
        # image's, before it is turned.
        width, height = work.target
        # size="force": exactly the target Pillow's path computes (the aspect ratio rounded the same way).
        image = pyvips.Image.thumbnail_buffer(
            source, width, height=height, size="force", no_rotate=True, option_string="fail_on=truncated"
        )
        image = _upright(image, orientation)
        if image.bands == 1:
            image = image.colourspace("srgb")
        # The source's profile rides along untouched (no colour transform, as in Pillow's path); it is kept
        # in the output only when Pillow's path would embed it, an RGB one.
        keep = pyvips.ForeignKeep.ICC if keep_profile else pyvips.ForeignKeep.NONE
        data = image.jpegsave_buffer(Q=quality, keep=keep, subsample_mode="on", optimize_coding=False)
    except pyvips.Error as error:
        raise ImageProcessingError(
            "corrupt_image", f"The image file is corrupt and could not be decoded ({_reason(error)})."
        ) from None
    finally:
        source.release()
    return data, image.width, image.height


def _upright(image, orientation: int):
    """``image`` turned as the EXIF ``orientation`` says (Pillow's ImageOps.exif_transpose, in libvips)."""
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        # Turning reads out of order; the thumbnail, at its target size, is small enough to hold.
        image = image.copy_memory()
    if orientation == 2:
        return image.fliphor()
    if orientation == 3:
        return image.rot180()
    if orientation == 4:
        return image.flipver()
    if orientation == 5:
        return image.rot90().fliphor()
    if orientation == 6:
        return image.rot90()
    if orientation == 7:
        return image.rot270().fliphor()
    if orientation == 8:
        return image.rot270()
    return image


def _reason(error: Exception) -> str:
    """What libvips said of the source, in a few words: its loader's line, not the operation that failed."""
    detail = (getattr(error, "detail", "") or str(error)).strip().splitlines()
    reason = detail[0].split(": ", 1)[-1].strip()[:200] if detail and detail[0].strip() else "libvips refused it"
    return f"truncated: {reason}" if "premature end" in reason else reason
