"""libvips for the JPEGs that are shrunk: decoded at the smallest scale that still covers the target
(shrink-on-load), resampled, turned upright and encoded by libvips, with less CPU than Pillow's path
(bench/RESULTS.md).

Pillow still reads the header first (the format by its magic bytes, the pixel limit, the memory budget):
libvips only ever sees a JPEG that passed them. Everything else stays Pillow's: other formats, CMYK,
no resize (Pillow is as fast there), quality=auto (its search compares Pillow images), WebP and AVIF.
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
#: Orientations that swap width and height.
_TRANSPOSED = frozenset({5, 6, 7, 8})


def available() -> bool:
    return _libvips() is not None


def applies(work: Work, quality: int | None) -> bool:
    """Whether libvips makes this output: a JPEG source in RGB or gray, shrunk, encoded as JPEG at a fixed quality."""
    return (
        work.source_format == "JPEG"
        and work.target is not None
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
    width, height = work.target
    if orientation in _TRANSPOSED:
        width, height = height, width
    source = work.stream.getbuffer()
    try:
        # size="force": exactly the target Pillow's path computes (the aspect ratio rounded the same way).
        image = pyvips.Image.thumbnail_buffer(
            source, width, height=height, size="force", option_string="fail_on=truncated"
        )
        if image.bands == 1:
            image = image.colourspace("srgb")
        # The source's profile rides along untouched (no colour transform, as in Pillow's path); it is kept
        # in the output only when Pillow's path would embed it, an RGB one.
        keep = pyvips.ForeignKeep.ICC if keep_profile else pyvips.ForeignKeep.NONE
        data = image.jpegsave_buffer(Q=quality, keep=keep, subsample_mode="on", optimize_coding=False)
    except pyvips.Error as error:
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else "libvips refused it"
        raise ImageProcessingError(
            "corrupt_image", f"The image file is corrupt and could not be decoded ({detail})."
        ) from None
    finally:
        source.release()
    return data, image.width, image.height
