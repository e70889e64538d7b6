"""Borders: the content box inside a uniform border, and whether that border is an added frame round a picture."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

#: A box in Pillow's crop convention: left, top, right, bottom, with right and bottom exclusive.
Box = tuple[int, int, int, int]

#: A frame's band is at least this thick on every side, in pixels ...
FRAME_MIN_PX = 2
#: ... and at least this share of the image's width (left and right bands) or height (top and bottom bands).
FRAME_MIN_SHARE = 0.005
#: The share of the one-pixel ring just inside the band that must differ from the band colour.
FRAME_MIN_INNER_CONTENT = 0.6
#: A frame's bands differ in thickness by at most this share of the image's shorter side (or FRAME_MIN_PX): one
#: drawn round a picture is even; the margins round a product seldom are.
FRAME_EVEN_SHARE = 0.03
#: How far a side of the content box may move in past a lossy encoder's ringing (within its 8 px block): pixels
#: of the band that differ from its colour, in front of a line that is all picture.
ARTEFACT_INSET_PX = 7
_MOSTLY_BAND, _ALL_PICTURE = 0.9, 0.97

_MODES = frozenset({"RGB", "L"})


@dataclass(frozen=True)
class Frame:
    """A band of one uniform colour on all four sides of an image, with content right inside it."""

    colour: tuple[int, int, int]
    #: The band's thickness on each side: left, top, right, bottom.
    widths: tuple[int, int, int, int]


@dataclass(frozen=True)
class _Border:
    """The colour read from the corners, the box of what differs from it, and the mask that box was read from."""

    colour: tuple[int, ...]
    box: Box
    mask: Image.Image


def uniform_border_box(image: Image.Image, tolerance: int) -> Box | None:
    """The box of the content inside a uniform border, or None when there is no border or nothing but border.

    The border colour is the one most of the four corners share; a pixel is border when every channel is within
    ``tolerance`` of it. None when all four corners disagree, when no side has a border (the box would be the
    whole image) or when every pixel is border.

    Raises:
        ValueError: the image is neither RGB nor L, or ``tolerance`` is outside 0..255.
    """
    border = _find_border(image, tolerance)
    return None if border is None else border.box


def frame(image: Image.Image, tolerance: int) -> Frame | None:
    """The added border or uniform frame round a picture, or None when the image has none.

    A frame is a uniform band (see uniform_border_box) on all four sides, each side at least
    max(FRAME_MIN_PX, FRAME_MIN_SHARE of that dimension) thick and all about as thick (FRAME_EVEN_SHARE), whose
    inner edge is mostly content: at least
    FRAME_MIN_INNER_CONTENT of the one-pixel ring just inside the band differs from the band colour. A product on
    a plain background touches the box of its outline only here and there, so it is no frame; a product whose
    outline is itself an upright rectangle fills that ring, and reads as one only when it is centred with even
    margins.

    Raises:
        ValueError: the image is neither RGB nor L, or ``tolerance`` is outside 0..255.
    """
    border = _find_border(image, tolerance)
    if border is None:
        return None
    width, height = image.size
    left, top, right, bottom = border.box
    widths = (left, top, width - right, height - bottom)
    thinnest_across = min(widths[0], widths[2])
    thinnest_down = min(widths[1], widths[3])
    if thinnest_across < max(FRAME_MIN_PX, FRAME_MIN_SHARE * width):
        return None
    if thinnest_down < max(FRAME_MIN_PX, FRAME_MIN_SHARE * height):
        return None
    if max(widths) - min(widths) > max(FRAME_MIN_PX, FRAME_EVEN_SHARE * min(width, height)):
        return None
    if _inner_ring_content(border.mask, border.box) < FRAME_MIN_INNER_CONTENT:
        return None
    colour = border.colour * 3 if len(border.colour) == 1 else border.colour
    return Frame(colour=(colour[0], colour[1], colour[2]), widths=widths)


def _find_border(image: Image.Image, tolerance: int) -> _Border | None:
    if image.mode not in _MODES:
        raise ValueError(f"borders are read from RGB or L images, not {image.mode}")
    if not 0 <= tolerance <= 255:
        raise ValueError(f"tolerance must be within 0..255, not {tolerance}")
    colour = _corner_colour(image, tolerance)
    if colour is None:
        return None
    mask = _content_mask(image, colour, tolerance)
    box = mask.getbbox()
    if box is None:
        return None
    box = _past_ringing(mask, box)
    if box == (0, 0, *image.size):
        return None
    return _Border(colour=colour, box=box, mask=mask)


def _past_ringing(mask: Image.Image, box: Box) -> Box:
    """``box`` with each side moved in past the encoder's ringing: when the box's edge line is mostly band and a
    line at most ARTEFACT_INSET_PX further in is all picture, the side moves to that line. A product's outline
    reaches no line that is all picture so near its extreme point: its box stays."""
    left, top, right, bottom = box
    pixels = np.asarray(mask)
    content = pixels.any(axis=2) if pixels.ndim == 3 else pixels > 0
    region = content[top:bottom, left:right]
    if region.shape[0] <= 2 * ARTEFACT_INSET_PX or region.shape[1] <= 2 * ARTEFACT_INSET_PX:
        return box
    insets = [
        _inset(region[:, : ARTEFACT_INSET_PX + 1].mean(axis=0)),
        _inset(region[: ARTEFACT_INSET_PX + 1, :].mean(axis=1)),
        _inset(region[:, -ARTEFACT_INSET_PX - 1 :].mean(axis=0)[::-1]),
        _inset(region[-ARTEFACT_INSET_PX - 1 :, :].mean(axis=1)[::-1]),
    ]
    return left + insets[0], top + insets[1], right - insets[2], bottom - insets[3]


def _inset(shares: np.ndarray) -> int:
    """How far in (0 to ARTEFACT_INSET_PX) the first line that is all picture lies, given each line's share of
    picture from the edge in; 0 when the edge line is picture enough or no line near it is all picture."""
    if shares[0] >= _MOSTLY_BAND:
        return 0
    for inset, share in enumerate(shares):
        if share >= _ALL_PICTURE:
            return inset
    return 0


def _corner_colour(image: Image.Image, tolerance: int) -> tuple[int, ...] | None:
    """The colour of the corner most others agree with (the first such in reading order), or None unless at
    least three corners share it."""
    width, height = image.size
    corners = [_pixel(image, xy) for xy in ((0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1))]

    def agreeing(colour: tuple[int, ...]) -> int:
        return sum(_within(colour, other, tolerance) for other in corners)

    best = max(corners, key=agreeing)
    # A border runs round the picture, through at least three corners; a band along one side touches two.
    return best if agreeing(best) >= 3 else None


def _pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    return tuple(value) if isinstance(value, tuple) else (int(value),)  # type: ignore[arg-type]


def _within(one: tuple[int, ...], other: tuple[int, ...], tolerance: int) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(one, other, strict=True))


def _content_mask(image: Image.Image, colour: tuple[int, ...], tolerance: int) -> Image.Image:
    """An image of the same mode, each channel 255 where it differs from ``colour`` beyond tolerance, else 0."""
    # One lookup pass over the pixels: no full-size image of the colour, no difference image.
    table = [0 if abs(value - channel) <= tolerance else 255 for channel in colour for value in range(256)]
    return image.point(table)


def _inner_ring_content(mask: Image.Image, box: Box) -> float:
    """The share of the one-pixel ring just inside ``box``'s edge whose pixels are content in ``mask``."""
    left, top, right, bottom = box
    strips = [(left, top, right, top + 1)]
    if bottom - top > 1:
        strips.append((left, bottom - 1, right, bottom))
    if bottom - top > 2:
        strips.append((left, top + 1, left + 1, bottom - 1))
        if right - left > 1:
            strips.append((right - 1, top + 1, right, bottom - 1))
    bands = len(mask.getbands())
    content = total = 0
    for strip in strips:
        pixels = np.asarray(mask.crop(strip)).reshape(-1, bands)
        content += int(pixels.any(axis=1).sum())
        total += len(pixels)
    return content / total
