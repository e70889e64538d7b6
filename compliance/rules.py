"""Rules: the stable codes of the compliance rules, and a marketplace profile's settings for them."""

from __future__ import annotations

from dataclasses import dataclass

#: Each rule's stable code and what failing it means, in the order failures are reported.
RULES: dict[str, str] = {
    "min_size": "Smaller than the minimum width or height (a minimum shortest side sets both)",
    "min_longest_side": "Longest side shorter than the minimum",
    "max_size": "A side longer than allowed",
    "max_pixels": "More pixels than allowed",
    "max_bytes": "File larger than allowed",
    "aspect_ratio": "Width-to-height ratio outside the required one's tolerance",
    "format": "File format not accepted",
    "white_background": "Background not white at the image's edges",
    "product_fill": "Product fills too little of the frame",
    "added_border": "Has an added border or frame",
    "transparency": "Has transparency",
}

#: Raised when a check's measure changes: outputs checked before are checked again (it is in their variant).
CHECKS_VERSION = 1

#: The least share of the outer ring that must be white for a white background.
WHITE_BACKGROUND_MIN_RING = 0.98


@dataclass(frozen=True)
class ProfileRules:
    """A marketplace profile's image rules; a field left None (or False) is not checked."""

    min_width: int | None = None
    min_height: int | None = None
    min_longest_side: int | None = None
    #: The longest either side may be.
    max_side: int | None = None
    max_pixels: int | None = None
    max_bytes: int | None = None
    #: The required width-to-height ratio as (width, height), e.g. (1, 1.44).
    aspect: tuple[float, float] | None = None
    #: How far, relative to the required ratio, the image's ratio may be from it.
    aspect_tolerance: float = 0.01
    #: Pillow format names, e.g. frozenset({"JPEG", "PNG"}).
    formats: frozenset[str] | None = None
    #: At least WHITE_BACKGROUND_MIN_RING of the outer ring must be white.
    white_background: bool = False
    #: The least share of the frame the product must fill, e.g. 0.85.
    min_fill: float | None = None
    no_border: bool = False
    no_transparency: bool = False
