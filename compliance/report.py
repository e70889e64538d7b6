"""One image's compliance report, as it is recorded and answered: the rules its source failed, what the
service changed, which of those failures that fixed, the rules its output still fails, and the verdict."""

from __future__ import annotations

from typing import Any

from compliance import checks


def report(source_failures: list[str], changes: list[str], output_failures: list[str]) -> dict[str, Any]:
    """The report of one image checked against a profile's rules."""
    return {
        "verdict": checks.verdict(source_failures, output_failures),
        "source_failures": source_failures,
        "changes": changes,
        "fixed": [code for code in source_failures if code not in output_failures],
        "output_failures": output_failures,
    }


def summary(profile: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """A request's summary over its images' reports (see checks.summarize), with the profile named."""
    return {
        "profile": profile,
        "checked": len(reports),
        **checks.summarize((item["source_failures"], item["output_failures"]) for item in reports),
    }
