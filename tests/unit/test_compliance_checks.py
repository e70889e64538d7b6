"""compliance.checks: each rule at its threshold, the verdict on one image, and the summary over many."""

from __future__ import annotations

import dataclasses

import pytest

from compliance import checks
from compliance.measure import ImageFacts
from compliance.rules import RULES, ProfileRules

GOOD = ImageFacts(
    width=1000,
    height=1000,
    byte_count=500_000,
    format="JPEG",
    has_alpha=False,
    white_ring=1.0,
    fill=0.9,
    frame=False,
)


def failed(rules: ProfileRules, **facts) -> list[str]:
    return checks.failures(dataclasses.replace(GOOD, **facts), rules)


def test_every_rule_has_a_one_line_description():
    assert list(RULES) == [
        "min_size",
        "min_longest_side",
        "max_size",
        "max_pixels",
        "max_bytes",
        "aspect_ratio",
        "format",
        "white_background",
        "product_fill",
        "added_border",
        "transparency",
    ]
    assert all(text and "\n" not in text for text in RULES.values())


def test_rules_left_unset_check_nothing():
    worst = ImageFacts(
        width=1, height=99_999, byte_count=10**12, format="TIFF", has_alpha=True, white_ring=0.0, fill=0.0, frame=True
    )

    assert checks.failures(worst, ProfileRules()) == []


@pytest.mark.parametrize(
    ("rules", "facts", "code"),
    [
        (ProfileRules(min_width=1000), {"width": 999}, "min_size"),
        (ProfileRules(min_height=1000), {"height": 999}, "min_size"),
        (ProfileRules(min_longest_side=1600), {"width": 1599, "height": 1200}, "min_longest_side"),
        (ProfileRules(max_side=2000), {"height": 2001}, "max_size"),
        (ProfileRules(max_pixels=1_000_000), {"width": 1001}, "max_pixels"),
        (ProfileRules(max_bytes=500_000), {"byte_count": 500_001}, "max_bytes"),
        (ProfileRules(formats=frozenset({"JPEG", "PNG"})), {"format": "WEBP"}, "format"),
        (ProfileRules(white_background=True), {"white_ring": 0.979}, "white_background"),
        (ProfileRules(min_fill=0.85), {"fill": 0.849}, "product_fill"),
        (ProfileRules(no_border=True), {"frame": True}, "added_border"),
        (ProfileRules(no_transparency=True), {"has_alpha": True}, "transparency"),
    ],
)
def test_each_rule_fails_just_past_its_limit(rules, facts, code):
    assert failed(rules, **facts) == [code]


@pytest.mark.parametrize(
    ("rules", "facts"),
    [
        (ProfileRules(min_width=1000, min_height=1000), {}),
        (ProfileRules(min_longest_side=1600), {"width": 1600, "height": 1200}),
        (ProfileRules(min_longest_side=1600), {"width": 900, "height": 1600}),
        (ProfileRules(max_side=2000), {"width": 2000, "height": 2000}),
        (ProfileRules(max_pixels=1_000_000), {}),
        (ProfileRules(max_bytes=500_000), {}),
        (ProfileRules(formats=frozenset({"JPEG", "PNG"})), {"format": "PNG"}),
        (ProfileRules(white_background=True), {"white_ring": 0.98}),
        (ProfileRules(min_fill=0.85), {"fill": 0.85}),
        (ProfileRules(no_border=True), {}),
        (ProfileRules(no_transparency=True), {}),
    ],
)
def test_each_rule_passes_at_its_limit(rules, facts):
    assert failed(rules, **facts) == []


@pytest.mark.parametrize(
    ("size", "passes"),
    [((1000, 1000), True), ((1010, 1000), True), ((990, 1000), True), ((1011, 1000), False), ((989, 1000), False)],
)
def test_a_square_ratio_allows_one_percent_either_way(size, passes):
    width, height = size

    assert (failed(ProfileRules(aspect=(1, 1)), width=width, height=height) == []) is passes


@pytest.mark.parametrize(
    ("size", "tolerance", "passes"),
    [
        ((1000, 1440), 0.01, True),
        ((990, 1440), 0.01, True),  # 0.6875 against 0.69444: 1.0% under
        ((989, 1440), 0.01, False),
        ((1440, 1000), 0.01, False),  # turned sideways
        ((1050, 1440), 0.05, True),
        ((1051, 1440), 0.05, False),
    ],
)
def test_a_portrait_ratio_is_matched_relative_to_itself(size, tolerance, passes):
    width, height = size
    rules = ProfileRules(aspect=(1, 1.44), aspect_tolerance=tolerance)

    assert (failed(rules, width=width, height=height) == []) is passes


def test_failures_come_in_the_order_of_rules():
    rules = ProfileRules(
        min_width=2000, max_bytes=1000, formats=frozenset({"PNG"}), no_transparency=True, aspect=(4, 3), min_fill=0.95
    )

    assert failed(rules, has_alpha=True) == [
        "min_size",
        "max_bytes",
        "aspect_ratio",
        "format",
        "product_fill",
        "transparency",
    ]


@pytest.mark.parametrize(
    ("source", "output", "expected"),
    [
        ([], [], "pass"),
        (["white_background", "max_bytes"], [], "fixed"),
        (["white_background"], ["white_background"], "failing"),
        (["min_size"], ["min_size", "max_bytes"], "failing"),
        ([], ["max_bytes"], "failing"),  # the delivered output decides, even when the source passed
    ],
)
def test_verdict(source, output, expected):
    assert checks.verdict(source, output) == expected


def test_summary_counts_verdicts_and_images_per_rule_in_the_order_of_rules():
    images = [
        ([], []),
        ([], []),
        (["white_background", "added_border"], []),
        (["transparency", "min_size"], ["min_size"]),
        (["added_border"], ["added_border"]),
    ]

    assert checks.summarize(iter(images)) == {
        "passing_as_uploaded": 2,
        "fixed": 1,
        "still_failing": 2,
        "by_rule": {
            "min_size": {"source": 1, "output": 1},
            "white_background": {"source": 1, "output": 0},
            "added_border": {"source": 2, "output": 1},
            "transparency": {"source": 1, "output": 0},
        },
    }


def test_summary_of_nothing():
    assert checks.summarize([]) == {"passing_as_uploaded": 0, "fixed": 0, "still_failing": 0, "by_rule": {}}


def test_summary_counts_an_image_once_per_rule_and_keeps_codes_it_does_not_know_last():
    summary = checks.summarize([(["max_bytes", "max_bytes", "retired_rule"], ["retired_rule"])])

    assert list(summary["by_rule"]) == ["max_bytes", "retired_rule"]
    assert summary["by_rule"]["max_bytes"] == {"source": 1, "output": 0}
    assert summary["by_rule"]["retired_rule"] == {"source": 1, "output": 1}
