"""The decode budget: the most memory an image takes on its way through the pipeline, estimated from its header
before a pixel is decoded, and refused (``image_too_large``) past the budget.

The estimate is the largest of what each step holds at once, in bytes per pixel of the size it works at:

- decoding: the pixels as Pillow stores them (bands x bytes per sample: 1 for L and P, 2 for 16-bit grey, 4 for
  RGB, RGBA, CMYK and 32-bit modes), a progressive JPEG's coefficients (2 bytes a sample, for the whole image
  even when it is drafted smaller) and WebP's decoder (two canvases and the frame, 12 bytes a pixel);
- bringing them to RGB, L or CMYK: a copy of 1 or 4 bytes a pixel beside them (alpha flattened: 4, and 4 more
  for the RGBA copy a palette or LA-style mode makes first);
- resampling, orienting and converting to RGB: the image before and after;
- encoding: the RGB image (4 bytes a pixel) and the encoder's own memory, ENCODER_BYTES_PER_PIXEL.

Each figure is the peak RSS measured on 7071x7071 sources and 1500-4500 px RGB images (tests/unit/test_decode_budget.py
checks the estimate against a measured peak), rounded up; FIXED_BYTES covers what does not grow with the pixels.
"""

from __future__ import annotations

from PIL import Image

from imaging import colour, orientation
from imaging.errors import ImageProcessingError
from imaging.work import Work

MiB = 1 << 20
#: The budget when none is given: what a worker process may take for one image beyond its own baseline.
DEFAULT_BUDGET = 384 * MiB
#: What an image takes whatever its size: the decoders' and encoders' tables and buffers, Python's objects.
FIXED_BYTES = 16 * MiB
#: What each encoder takes beyond the RGB image, in bytes per output pixel, at a fixed quality and at
#: quality=auto (which also scores a mosaic and decodes the full output once or more: WebP's decoder is big).
#: Measured: JPEG 0.3 / 4.6-5.8, WebP 5.8-7.9 / 17.8-21.6, AVIF 23.2-27.9 / 25.1.
ENCODER_BYTES_PER_PIXEL = {
    ("jpeg", False): 0.5,
    ("jpeg", True): 6.0,
    ("webp", False): 8.0,
    ("webp", True): 22.0,
    ("avif", False): 28.0,
    ("avif", True): 28.0,
}
#: A progressive JPEG's coefficients: 64 of 2 bytes for each 8x8 block of each component, whatever the draft.
COEFFICIENT_BYTES = 2
#: WebP's decoder: its two RGBA canvases and the frame it hands over, beside the image it fills.
WEBP_DECODER_BYTES_PER_PIXEL = 12
_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
_TWO_BYTE_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def stored_bytes_per_pixel(mode: str) -> int:
    """Bytes a pixel of ``mode`` takes in Pillow's memory: bands x bytes per sample, 3 bands padded to 4."""
    if mode in _ONE_BYTE_MODES:
        return 1
    return 2 if mode in _TWO_BYTE_MODES else 4


def estimate(work: Work) -> int:
    """The most memory, in bytes, ``work`` will take at once on its way, from its header (see the module)."""
    im = work.image
    full = work.source_size[0] * work.source_size[1]
    decoded = im.width * im.height  # after the draft a JPEG is decoded at
    out = work.target[0] * work.target[1] if work.target is not None else decoded
    # The download stays until the pixels are decoded (or all along, when never_bigger may keep it), and a
    # decoder may copy it.
    held = 2 * work.source_bytes
    pixels = decoded * stored_bytes_per_pixel(im.mode)
    mode = colour.working_mode(im)
    depth = stored_bytes_per_pixel(mode)
    steps = [held + pixels + _decoder_bytes(im, work.source_format, full)]
    if mode != im.mode or "transparency" in im.info:
        steps.append(held + pixels + decoded * _conversion_bytes_per_pixel(im, depth))
    if work.target is not None:
        steps.append(held + (decoded + out) * depth)
    if _may_turn(im, work.source_format):
        steps.append(held + 2 * out * depth)
    if mode != "RGB":
        steps.append(held + out * (depth + 4))
    steps.append(held + out * (4 + ENCODER_BYTES_PER_PIXEL[work.output_format, work.auto]))
    return round(max(steps)) + FIXED_BYTES


def check(work: Work) -> None:
    """Step, before decoding (after the draft): refuse an image whose estimate is past its decode budget."""
    if work.decode_budget is None:
        return
    needed = estimate(work)
    if needed > work.decode_budget:
        width, height = work.source_size
        raise ImageProcessingError(
            "image_too_large",
            f"The image ({width}x{height}, {work.image.mode}, {work.source_format}) would take about "
            f"{_mib(needed)} MiB of memory to make as {work.output_format.upper()}; the per-image budget is "
            f"{_mib(work.decode_budget)} MiB (IMAGE_DECODE_BUDGET_MB). A smaller source, a max_dimension "
            "(for a JPEG source, which then decodes smaller) or JPEG output takes less.",
        )


def _decoder_bytes(im: Image.Image, source_format: str, full: int) -> float:
    """What the decoder holds beside the pixels while it runs."""
    if source_format == "WEBP":
        return full * WEBP_DECODER_BYTES_PER_PIXEL
    if source_format == "JPEG" and im.info.get("progressive"):
        return full * COEFFICIENT_BYTES * _samples_per_pixel(im)
    return 0


def _samples_per_pixel(im: Image.Image) -> float:
    """A JPEG's coded samples per pixel: its components, the subsampled ones counted at their share."""
    layers = getattr(im, "layer", None) or []
    if not layers:
        return len(im.getbands())
    h_max = max(layer[1] for layer in layers)
    v_max = max(layer[2] for layer in layers)
    return sum(layer[1] * layer[2] for layer in layers) / (h_max * v_max)


def _conversion_bytes_per_pixel(im: Image.Image, depth: int) -> int:
    """What colour.to_working_mode makes beside the decoded pixels, in bytes a pixel."""
    if depth == 1:
        return 1  # to L; 16-bit grey a strip at a time
    if im.mode in ("RGBA", "LA"):
        return 4  # flattened onto white
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return 8  # an RGBA copy first, then flattened
    return 4


def _may_turn(im: Image.Image, source_format: str) -> bool:
    """Whether orientation.apply may make a turned copy: the EXIF orientation, or unknown before decoding."""
    # A PNG's eXIf chunk may come after its pixels, where Pillow reads it only by decoding them.
    if source_format == "PNG" and "exif" not in im.info:
        return True
    return orientation.exif_orientation(im) != 1


def _mib(size: float) -> int:
    return -(-int(size) // MiB)


def check_rendition(
    base: tuple[int, int],
    content: tuple[int, int],
    drawn: tuple[int, int],
    output_format: str,
    auto: bool,
    decode_budget: int | None,
    max_pixels: int,
) -> None:
    """Refuse a rendition that would be too large to make: past ``max_pixels`` (``too_many_pixels``), or, with the
    decoded source (``base``) held beside it, its scaled content and its canvas (``drawn``) encoded, past the
    decode budget (``image_too_large``). An upscaled or padded rendition can be far larger than its source.

    Raises:
        ImageProcessingError: as above.
    """
    width, height = drawn
    if width * height > max_pixels:
        raise ImageProcessingError(
            "too_many_pixels",
            f"A rendition would be {width}x{height} ({width * height} pixels); the limit is {max_pixels}: a smaller "
            "box, min_dimension or max_dimension would fit.",
        )
    if decode_budget is None:
        return
    encoder = ENCODER_BYTES_PER_PIXEL[output_format, auto]
    needed = 4 * (base[0] * base[1] + content[0] * content[1]) + (4 + encoder) * width * height + FIXED_BYTES
    if needed > decode_budget:
        raise ImageProcessingError(
            "image_too_large",
            f"A {width}x{height} rendition would take about {_mib(needed)} MiB of memory to make as "
            f"{output_format.upper()}; the per-image budget is {_mib(decode_budget)} MiB (IMAGE_DECODE_BUDGET_MB). "
            "A smaller box, min_dimension or max_dimension would fit.",
        )
