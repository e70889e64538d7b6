"""The canvas an output is made on: fit (contain, pad or cover) to a box or an aspect ratio, trim, margin,
background, minimum size and upscaling. ``layout`` plans it from sizes alone; ``make`` draws it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from imaging import borders

FITS = ("contain", "pad", "cover")
GRAVITIES = ("centre", "attention")
_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Canvas:
    """What shapes an output beyond its encoding; the defaults make today's output (contain, no box)."""

    #: ``contain``: fit inside the box (``max_dimension`` is a square box); ``pad``: fit inside, then fill the
    #: box with ``background``; ``cover``: fill the box, cropping what is outside it.
    fit: str = "contain"
    width: int | None = None
    height: int | None = None
    #: The canvas's width to height, for ``pad`` and ``cover`` when no width and height are given.
    aspect: tuple[float, float] | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    #: Remove a uniform border whose pixels are within this tolerance (0-255) of the corners' colour; None: off.
    trim: int | None = None
    #: A share of the canvas left empty on each side around the content (0 to 0.4).
    margin: float = 0.0
    #: The shortest side's least length. A padded canvas grows to it, and the content with ``upscale``; a contained
    #: one is its content, so it reaches it only with ``upscale``.
    min_dimension: int | None = None
    upscale: bool = False
    #: ``cover``'s crop: centred, or where libvips finds the most attention.
    gravity: str = "centre"

    @property
    def is_plain(self) -> bool:
        """Whether this canvas is today's: contain, no box, nothing added or removed."""
        return self == Canvas(background=self.background) and self.background == (255, 255, 255)


@dataclass(frozen=True)
class Layout:
    """Sizes planned for one output: the content scaled to ``content``, placed at ``offset`` on ``canvas``
    (negative for ``cover``, whose content overflows the canvas and is cropped)."""

    canvas: tuple[int, int]
    content: tuple[int, int]
    offset: tuple[int, int]


def layout(source: tuple[int, int], canvas: Canvas, max_dimension: int | None) -> Layout:
    """The output's sizes for content of size ``source`` (already trimmed and upright)."""
    width, height = source
    box = _box(width, height, canvas) or (float(width), float(height))
    box = _bounded(box, max_dimension, canvas.min_dimension)
    # Cover fills the whole canvas: a margin has no room there.
    kept = 1.0 if canvas.fit == "cover" else 1 - 2 * canvas.margin
    inner = (box[0] * kept, box[1] * kept)
    if canvas.fit == "cover":
        scale = max(inner[0] / width, inner[1] / height)
    else:
        scale = min(inner[0] / width, inner[1] / height)
    if scale > 1 and not canvas.upscale:
        if canvas.fit == "cover":
            box = (box[0] / scale, box[1] / scale)
        scale = 1.0
    content = (max(1, round(width * scale)), max(1, round(height * scale)))
    if canvas.fit == "contain":
        # A contain canvas is the content and its margin, never more of the box.
        box = (min(box[0], content[0] / kept), min(box[1], content[1] / kept))
    size = (max(1, round(box[0])), max(1, round(box[1])))
    if canvas.fit != "cover":
        content = (min(content[0], size[0]), min(content[1], size[1]))
    if canvas.fit == "cover":
        # Where compose crops the centred overflow from: a negative offset.
        offset = (-((content[0] - size[0]) // 2), -((content[1] - size[1]) // 2))
    else:
        offset = ((size[0] - content[0]) // 2, (size[1] - content[1]) // 2)
    return Layout(size, content, offset)


def _box(width: int, height: int, canvas: Canvas) -> tuple[float, float] | None:
    """The box the canvas is fitted to, before the size bounds; None: the content's own size."""
    if canvas.width is not None and canvas.height is not None:
        return float(canvas.width), float(canvas.height)
    if canvas.aspect is not None and canvas.fit != "contain":
        ratio = canvas.aspect[0] / canvas.aspect[1]
        wider = width / height > ratio
        if (canvas.fit == "pad") == wider:
            return float(width), width / ratio
        return height * ratio, float(height)
    if canvas.width is not None:
        return float(canvas.width), math.inf
    if canvas.height is not None:
        return math.inf, float(canvas.height)
    return None


def _bounded(box: tuple[float, float], max_dimension: int | None, min_dimension: int | None) -> tuple[float, float]:
    """The box scaled down to ``max_dimension`` on its longest side, or up to ``min_dimension`` on its shortest."""
    width, height = box
    if max_dimension is not None and max(width, height) > max_dimension:
        if math.isinf(width) or math.isinf(height):
            width, height = min(width, max_dimension), min(height, max_dimension)
        else:
            factor = max_dimension / max(width, height)
            width, height = width * factor, height * factor
    if min_dimension is not None and min(width, height) < min_dimension:
        factor = min_dimension / min(width, height)
        width, height = width * factor, height * factor
        if max_dimension is not None and max(width, height) > max_dimension:
            factor = max_dimension / max(width, height)
            width, height = width * factor, height * factor
    return width, height


def trimmed(image: Image.Image, tolerance: int | None) -> Image.Image:
    """``image`` without its uniform border (see borders.uniform_border_box); itself when there is none."""
    if tolerance is None:
        return image
    box = borders.uniform_border_box(image, tolerance)
    return image if box is None else image.crop(box)


def compose(scaled: Image.Image, plan: Layout, canvas: Canvas) -> Image.Image:
    """The canvas drawn from content already scaled to ``plan.content``: cropped (cover) or padded."""
    if scaled.size == plan.canvas:
        return scaled
    if canvas.fit == "cover":
        left, top = _crop_origin(scaled, plan.canvas, canvas.gravity)
        return scaled.crop((left, top, left + plan.canvas[0], top + plan.canvas[1]))
    drawn = Image.new("RGB", plan.canvas, canvas.background)
    drawn.paste(scaled, plan.offset)
    return drawn


def scaled(content: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``content`` resampled to ``size``; itself when it already is that size."""
    if content.size == size:
        return content
    return content.resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP)


def _crop_origin(scaled: Image.Image, size: tuple[int, int], gravity: str) -> tuple[int, int]:
    if gravity == "attention":
        from imaging import attention

        found = attention.crop_origin(scaled, size)
        if found is not None:
            return found
    return (scaled.width - size[0]) // 2, (scaled.height - size[1]) // 2
