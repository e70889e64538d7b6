"""Measure: the facts about one image that a marketplace profile's rules are checked against."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

from compliance.rules import WHITE_BACKGROUND_MIN_RING
from imaging import borders

#: A channel at or above 255 - WHITE_TOLERANCE counts as white.
WHITE_TOLERANCE = 8
#: The tolerance borders.frame reads an added border with.
FRAME_TOLERANCE = 12
#: The outer ring is this share of each side's length thick (at least one pixel).
RING_SHARE = 0.02
#: The longest side of the copy measured; box-averaging down to it keeps measuring cheap next to a JPEG encode.
MEASURE_SIDE = 512

_MODES = frozenset({"RGB", "L"})


@dataclass(frozen=True)
class ImageFacts:
    """What the compliance rules read from one image: its size, file, white ring, product fill and frame."""

    width: int
    height: int
    byte_count: int
    #: Pillow's format name, e.g. "JPEG", "PNG".
    format: str
    has_alpha: bool
    #: The share (0..1) of the outer ring's pixels whose channels are all near-white.
    white_ring: float
    #: The product's fill of the frame (0..1): the larger of the width and height shares of the box round the
    #: pixels that are not near-white; 1.0 when no pixel is white, 0.0 when all are.
    fill: float
    #: Whether borders.frame finds an added border or uniform frame.
    frame: bool


def measure(
    image: Image.Image,
    *,
    byte_count: int,
    format: str,
    has_alpha: bool,
    width: int | None = None,
    height: int | None = None,
) -> ImageFacts:
    """The facts about ``image`` (RGB or L pixels), read from a copy at most MEASURE_SIDE pixels long.

    ``width`` and ``height`` default to the image's size; pass the real size when ``image`` is a reduced copy.
    The ring and fill are shares, so they read the same at any scale; from the reduced copy, the fill is right
    to about two of its pixels (2 / MEASURE_SIDE), and a hairline lighter than the white threshold after
    averaging can go unseen. The caller's image is never modified.

    Raises:
        ValueError: the image is neither RGB nor L.
    """
    if image.mode not in _MODES:
        raise ValueError(f"compliance measures RGB or L images, not {image.mode}")
    factor = math.ceil(max(image.size) / MEASURE_SIDE)
    small = reduced(image)
    white = np.asarray(_darkest_channel(small)) >= 255 - WHITE_TOLERANCE
    return ImageFacts(
        width=image.width if width is None else width,
        height=image.height if height is None else height,
        byte_count=byte_count,
        format=format,
        has_alpha=has_alpha,
        white_ring=_white_ring(white),
        fill=_fill(~white, factor, image.size),
        frame=borders.frame(small, FRAME_TOLERANCE) is not None,
    )


def padded(output: ImageFacts, source: ImageFacts, background: tuple[int, int, int]) -> ImageFacts:
    """``output``'s facts as delivered when it was padded onto ``background``: padding is no background of the
    picture's, so the background is white only if the source's was; and white padding round a source whose edge
    is not white draws bars round it, which is an added border."""
    if background != (255, 255, 255):
        return output
    source_white = source.white_ring >= WHITE_BACKGROUND_MIN_RING
    return dataclasses.replace(
        output,
        white_ring=min(output.white_ring, source.white_ring),
        frame=output.frame or not source_white,
    )


def _darkest_channel(image: Image.Image) -> Image.Image:
    """Each pixel's lowest channel, as an L image: white where every channel is (Pillow's per-band minimum is
    ten times as fast as numpy's over the channel axis)."""
    if image.mode == "L":
        return image
    red, green, blue = image.split()
    return ImageChops.darker(ImageChops.darker(red, green), blue)


def reduced(image: Image.Image) -> Image.Image:
    """The copy of ``image`` that ``measure`` reads: at most MEASURE_SIDE pixels long (``image`` itself when it
    is that small already), for a caller that reads other things from it too."""
    factor = math.ceil(max(image.size) / MEASURE_SIDE)
    return image.reduce(factor) if factor > 1 else image


def _white_ring(white: np.ndarray) -> float:
    """The share of white pixels in the outer ring, RING_SHARE of each side thick."""
    height, width = white.shape
    across = max(1, round(RING_SHARE * width))
    down = max(1, round(RING_SHARE * height))
    ring = np.ones_like(white)
    ring[down : height - down, across : width - across] = False
    return float(white[ring].mean())


def _fill(content: np.ndarray, factor: int, size: tuple[int, int]) -> float:
    """How far the box round ``content`` (a mask of the copy reduced by ``factor``) spans the full ``size``."""
    columns = np.flatnonzero(content.any(axis=0))
    rows = np.flatnonzero(content.any(axis=1))
    if columns.size == 0:
        return 0.0
    width, height = size
    # Image.reduce rounds the size up: the last reduced pixel covers what is left, hence the min().
    box_width = min((int(columns[-1]) + 1) * factor, width) - int(columns[0]) * factor
    box_height = min((int(rows[-1]) + 1) * factor, height) - int(rows[0]) * factor
    return max(box_width / width, box_height / height)
