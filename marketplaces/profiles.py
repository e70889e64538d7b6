"""The marketplace profiles: for each marketplace, the upload options it presets and the image rules it
checks, with where each rule comes from. A request names one with ``profile=`` and may override any option.
Every profile checks for an added border or a uniform frame.

The options are written as an upload's fields would give them, and go through the same validation.
"""

from __future__ import annotations

from dataclasses import dataclass

from compliance.rules import ProfileRules

MB = 1_000_000
#: The tolerance (0-255) of the trim every profile asks: a uniform border, an added frame or a plain
#: background around the product, is cut before the canvas is drawn.
TRIM = 12


@dataclass(frozen=True)
class Profile:
    """A marketplace's image rules and the options that meet them."""

    name: str
    title: str
    #: Upload fields and their values, overridable by the request's own.
    options: dict[str, str]
    rules: ProfileRules
    #: The rules' sources, as the README cites them.
    sources: tuple[str, ...]


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            "google_merchant",
            "Google Merchant Center",
            {
                "fit": "contain",
                "trim": str(TRIM),
                "min_dimension": "500",
                "upscale": "true",
                "max_dimension": "2048",
                "max_bytes": str(16 * MB),
                "format": "jpeg",
            },
            ProfileRules(
                min_width=500,
                min_height=500,
                max_pixels=64_000_000,
                max_bytes=16 * MB,
                formats=frozenset({"JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"}),
                no_border=True,
            ),
            (
                "https://support.google.com/merchants/answer/6324350 (image_link: at least 500x500 px from "
                "31 January 2027, 1500x1500 recommended, up to 64 MP and 16 MB, no borders or overlays)",
            ),
        ),
        Profile(
            "amazon_main",
            "Amazon main image",
            {
                "fit": "pad",
                "aspect": "1:1",
                "background": "#ffffff",
                "trim": str(TRIM),
                "margin": "0.04",
                "min_dimension": "1000",
                "upscale": "true",
                "max_dimension": "2000",
                "format": "jpeg",
            },
            ProfileRules(
                min_longest_side=1000,
                max_side=10_000,
                formats=frozenset({"JPEG", "PNG", "TIFF", "GIF"}),
                white_background=True,
                min_fill=0.85,
                no_border=True,
                no_transparency=True,
            ),
            (
                "https://sellercentral.amazon.com/help/hub/reference/external/G1881 (product image "
                "requirements: pure white RGB 255,255,255 background, the product filling 85% of the frame, "
                "no borders, 1,000 px on the longest side for zoom, 500 px least, 10,000 px most; JPEG, PNG, "
                "TIFF, GIF)",
            ),
        ),
        Profile(
            "amazon_additional",
            "Amazon additional image",
            {
                "fit": "contain",
                "min_dimension": "1000",
                "upscale": "true",
                "max_dimension": "3000",
                "format": "jpeg",
            },
            ProfileRules(
                min_longest_side=1000,
                max_side=10_000,
                formats=frozenset({"JPEG", "PNG", "TIFF", "GIF"}),
                no_border=True,
            ),
            (
                "https://sellercentral.amazon.com/help/hub/reference/external/G1881 (as the main image, but any "
                "background)",
            ),
        ),
        Profile(
            "zalando",
            "Zalando",
            {
                "fit": "pad",
                "width": "1801",
                "height": "2600",
                "background": "#ffffff",
                "trim": str(TRIM),
                "margin": "0.03",
                "upscale": "true",
                "max_bytes": str(20 * MB),
                "format": "jpeg",
            },
            ProfileRules(
                min_width=762,
                min_height=1100,
                aspect=(1, 1.44),
                formats=frozenset({"JPEG"}),
                max_bytes=20 * MB,
                white_background=True,
                no_border=True,
                no_transparency=True,
            ),
            (
                "Zalando Partner Program image guidelines (aspect ratio 1:1.44, at least 762x1100 px, 1801x2600 "
                "best, JPEG, up to 20 MB, white-background packshots)",
            ),
        ),
        Profile(
            "ebay",
            "eBay",
            {
                "fit": "contain",
                "trim": str(TRIM),
                "min_dimension": "500",
                "upscale": "true",
                "max_dimension": "1600",
                "format": "jpeg",
            },
            ProfileRules(min_longest_side=500, no_border=True),
            (
                "https://www.ebay.com/help/selling/listings/creating-managing-listings/add-pictures-listings "
                "(at least 500 px on the longest side; no added borders, text or watermarks)",
            ),
        ),
        Profile(
            "shopify",
            "Shopify",
            {
                "fit": "contain",
                "max_dimension": "2048",
                "max_bytes": str(20 * MB),
                "format": "jpeg",
            },
            ProfileRules(max_side=4472, max_pixels=4472 * 4472, max_bytes=20 * MB, no_border=True),
            (
                "https://help.shopify.com/en/manual/online-store/images/theme-images (up to 4472x4472 px and "
                "20 MB; a 2048x2048 square is the usual product image)",
            ),
        ),
    )
}
