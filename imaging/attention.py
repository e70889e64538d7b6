"""Where a ``cover`` crop goes when asked for attention: libvips' smartcrop finds the most interesting region."""

from __future__ import annotations

from PIL import Image

from imaging import libvips_jpeg


def crop_origin(image: Image.Image, size: tuple[int, int]) -> tuple[int, int] | None:
    """The top-left corner of the ``size`` crop of ``image`` (RGB) that libvips' attention strategy picks;
    None when libvips is unavailable."""
    pyvips = libvips_jpeg.library()
    if pyvips is None:
        return None
    width, height = size
    source = pyvips.Image.new_from_memory(image.tobytes(), image.width, image.height, 3, "uchar")
    _, found = source.smartcrop(width, height, interesting="attention", attention_x=True, attention_y=True)
    # The centre of attention, with the crop kept inside the image around it.
    left = min(max(0, found["attention_x"] - width // 2), image.width - width)
    top = min(max(0, found["attention_y"] - height // 2), image.height - height)
    return left, top
