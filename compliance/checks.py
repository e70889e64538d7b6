"""Checks: which rules an image's facts fail, the verdict on one image, and the summary over many."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from compliance.measure import ImageFacts
from compliance.rules import RULES, WHITE_BACKGROUND_MIN_RING, ProfileRules

PASS = "pass"  # noqa: S105  (a verdict, not a password)
FIXED = "fixed"
FAILING = "failing"

_RATIO_SLACK = 1e-9


def failures(facts: ImageFacts, rules: ProfileRules) -> list[str]:
    """The codes of the rules ``facts`` fail, in the order of RULES; limits are inclusive (a value at one passes)."""
    longest = max(facts.width, facts.height)
    failed = {
        "min_size": _below(facts.width, rules.min_width) or _below(facts.height, rules.min_height),
        "min_longest_side": _below(longest, rules.min_longest_side),
        "max_size": _above(longest, rules.max_side),
        "max_pixels": _above(facts.width * facts.height, rules.max_pixels),
        "max_bytes": _above(facts.byte_count, rules.max_bytes),
        "aspect_ratio": rules.aspect is not None and not _aspect_matches(facts, rules.aspect, rules.aspect_tolerance),
        "format": rules.formats is not None and facts.format not in rules.formats,
        "white_background": rules.white_background and facts.white_ring < WHITE_BACKGROUND_MIN_RING,
        "product_fill": _below(facts.fill, rules.min_fill),
        "added_border": rules.no_border and facts.frame,
        "transparency": rules.no_transparency and facts.has_alpha,
    }
    return [code for code in RULES if failed[code]]


def verdict(source_failures: list[str], output_failures: list[str]) -> str:
    """FAILING when the output fails any rule, else FIXED when the source failed one, else PASS."""
    # The output is what gets delivered, so its failures decide even when the source passed.
    if output_failures:
        return FAILING
    return FIXED if source_failures else PASS


def summarize(images: Iterable[tuple[list[str], list[str]]]) -> dict:
    """Counts of verdicts and of images failing each rule, over (source_failures, output_failures) per image.

    ``by_rule`` holds only codes some image failed, in the order of RULES (codes RULES no longer knows, after).
    """
    verdicts: Counter[str] = Counter()
    source: Counter[str] = Counter()
    output: Counter[str] = Counter()
    for source_failures, output_failures in images:
        verdicts[verdict(source_failures, output_failures)] += 1
        source.update(set(source_failures))
        output.update(set(output_failures))
    seen = source.keys() | output.keys()
    codes = [code for code in RULES if code in seen] + sorted(seen - RULES.keys())
    return {
        "passing_as_uploaded": verdicts[PASS],
        "fixed": verdicts[FIXED],
        "still_failing": verdicts[FAILING],
        "by_rule": {code: {"source": source[code], "output": output[code]} for code in codes},
    }


def _below(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit


def _above(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


def _aspect_matches(facts: ImageFacts, aspect: tuple[float, float], tolerance: float) -> bool:
    aspect_width, aspect_height = aspect
    # |(w / h) / (aw / ah) - 1| <= tolerance, cross-multiplied; the slack, far below one pixel in any real size,
    # keeps an image exactly at the tolerance passing when the ratio (e.g. 1.44) has no exact binary form.
    difference = abs(facts.width * aspect_height - facts.height * aspect_width)
    return difference <= (tolerance + _RATIO_SLACK) * facts.height * aspect_width
