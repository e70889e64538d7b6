"""The page with a marketplace profile, in Debian's chromium driven by Playwright: the upload form sends the
profile and the renditions, each image shows its source beside its output with a pass, fixed or failing badge
and the reasons, and the request shows its compliance summary.

The test saves a screenshot (see support/browser.py) for a person to look at.
"""

from __future__ import annotations

import re

import pytest
from support.api import csv_of
from support.images import jpeg_bytes
from support.loopback import serve

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]


def test_a_profile_request_shows_before_and_after_with_badges_reasons_and_the_summary(
    page, service, source_server, screenshot
):
    from playwright.sync_api import expect

    small = serve(source_server, jpeg_bytes((300, 200)), name="small.jpg")
    large = serve(source_server, jpeg_bytes((900, 700), color=(30, 90, 160)), name="large.jpg")
    page.page.select_option("#profile", "google_merchant")
    page.page.fill("#renditions", "main:1200,thumb:200x200:pad")
    page.page.fill("#max_dimension", "")
    request_id = page.upload(csv_of([(1, "Small", [small]), (2, "Large", [large])]), "profile.csv")
    page.wait_status("COMPLETED")

    rows = page.page.locator("#images tbody tr[data-status=COMPLETED]")
    expect(rows).to_have_count(2)
    small_row, large_row = rows.nth(0), rows.nth(1)
    for row in (small_row, large_row):
        expect(row.locator(".before-after figure")).to_have_count(2)
        expect(row.locator(".before-after figcaption")).to_have_text(["before", "after"])
        expect(row.locator(".renditions a")).to_have_count(2)
    # The 300x200 source is under Google's 500x500: upscaled, so fixed, and the reason named.
    expect(small_row.locator(".badge", has_text="Fixed")).to_be_visible()
    expect(small_row.locator("ul.reasons")).to_contain_text("fixed: smaller than the minimum size (min_size)")
    expect(small_row.locator("ul.reasons")).to_contain_text("upscaled")
    expect(large_row.locator(".badge", has_text="Passes")).to_be_visible()
    expect(large_row.locator(".renditions")).to_contain_text("thumb 200×200")
    # Both thumbnails of both images load: the source from its own server, the output from the service.
    page.page.wait_for_function(
        """() => {
          const images = [...document.querySelectorAll(".before-after img")];
          return images.length === 4 && images.every((img) => img.complete && img.naturalWidth > 0);
        }"""
    )

    summary = page.page.locator("#compliance")
    expect(summary).to_be_visible()
    expect(summary).to_contain_text("1 pass as uploaded, 1 fixed by the service, 0 still failing")
    expect(summary).to_contain_text(re.compile(r"smaller than the minimum size \(min_size\): 1 as uploaded, 0 after"))
    screenshot(page, f"compliance-{request_id[:8]}")
