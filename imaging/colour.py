"""Colour: the working mode (RGB, L or CMYK), 16-bit samples, alpha flattened onto the background, CMYK and ICC
to sRGB."""

from __future__ import annotations

import functools
import io

from PIL import Image, ImageCms

from imaging import decode
from imaging.work import Work

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Source modes whose samples are RGB (or index an RGB palette), so an RGB profile applies.
_RGB_MODES = frozenset({"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# 16-bit samples map to 8 bits by /257 (65535 -> 255); Pillow's own I -> L clips instead.
# Mode I (32-bit) is read as 16-bit too; values outside 0..65535 clamp to black/white.
_SIXTEEN_TO_EIGHT = [round(value / 257) for value in range(65536)]
# Pixels of 16-bit grey converted at a time (a 4 MiB strip of 32-bit samples).
_STRIP_PIXELS = 1 << 20


def choose_profile(work: Work) -> None:
    """Step, once decoded: keep the source's profile for the output only when it describes RGB samples."""
    # A gray or CMYK source's profile does not describe the RGB output.
    icc = work.source_icc
    work.icc = icc if work.image.mode in _RGB_MODES and is_rgb_profile(icc) else None


def working_mode(im: Image.Image) -> str:
    """The mode to_working_mode brings ``im`` to: L, CMYK or RGB (readable from the header, before decoding)."""
    if im.mode in _SIXTEEN_BIT_MODES or im.mode in ("1", "F"):
        return "L"
    if im.mode in ("L", "CMYK") and "transparency" not in im.info:
        return im.mode
    return "RGB"


def to_working_mode(work: Work) -> None:
    """Step: bring the pixels to RGB, L or CMYK before they are resampled (see _working_image).

    Raises ImageProcessingError when Pillow refuses the palette or transparency the file declared.
    """
    # The first conversion reads what the file declared (its palette, a tRNS chunk): Pillow checks
    # some of it only here, after load(), e.g. "palette index out of range" for an overlong tRNS.
    with decode.image_errors(decode.CONVERSION_ERRORS):
        working = _working_image(work.image, work.background)
    work.replace(working)


def to_rgb(work: Work) -> None:
    """Step: the RGB pixels the encoders take; CMYK goes through its profile to sRGB."""
    im = work.image
    if im.mode == "CMYK":
        work.replace(_cmyk_to_rgb(im, work.source_icc))
    elif im.mode != "RGB":
        work.replace(im.convert("RGB"))


def _working_image(im: Image.Image, background: tuple[int, int, int] = _WHITE) -> Image.Image:
    """Bring the image to RGB, L or CMYK (all resample well), flattening alpha onto ``background``.

    Returns ``im`` itself when it already is in one of those modes, so RGB costs no copy.
    """
    mode = im.mode
    if mode in ("RGB", "L", "CMYK") and "transparency" not in im.info:
        return im
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_to_eight(im)
    if mode in ("1", "F"):
        # F (float TIFF) has no defined range; values are taken as 0..255 and clipped.
        return im.convert("L")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        alpha = im if mode in ("RGBA", "LA") else im.convert("LA" if mode == "La" else "RGBA")
        # Compositing onto white before resampling equals premultiplied resampling followed
        # by compositing, and avoids Pillow's full-size RGBa round trip in resize().
        flat = Image.new("RGB", im.size, background)
        flat.paste(alpha, mask=alpha)
        if alpha is not im:
            alpha.close()
        return flat
    return im.convert("RGB")


def _sixteen_to_eight(im: Image.Image) -> Image.Image:
    """16-bit (or 32-bit I) grey to L by /257, a strip at a time: no 32-bit copy of the whole image is made."""
    gray = Image.new("L", im.size)
    rows = max(1, _STRIP_PIXELS // im.width)
    for top in range(0, im.height, rows):
        box = (0, top, im.width, min(top + rows, im.height))
        strip = im.crop(box)
        wide = strip if strip.mode == "I" else strip.convert("I")
        gray.paste(wide.point(_SIXTEEN_TO_EIGHT, "L"), box[:2])
    return gray


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


def is_rgb_profile(icc: object) -> bool:
    """Whether ``icc`` looks like an ICC profile for RGB data (header checks only)."""
    return isinstance(icc, bytes) and is_profile(icc, b"RGB ")


def is_profile(icc: bytes, colour_space: bytes) -> bool:
    """Whether ``icc`` looks like an ICC profile for ``colour_space`` (header checks only)."""
    return len(icc) >= 128 and icc[36:40] == b"acsp" and icc[16:20] == colour_space
