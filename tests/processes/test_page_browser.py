"""The web page in a real browser (Debian's chromium, driven by Playwright) against the real service: progress
over the event stream, cancel, retry, and the fallback to polling. The browser and the page are in
support/browser.py."""

from __future__ import annotations

import re
import threading
import uuid

import pytest
import requests
from support.api import csv_of
from support.images import SlowImages, jpeg_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]


def test_the_page_follows_progress_over_the_event_stream(page, service, source_server):
    from playwright.sync_api import expect

    slow = SlowImages(source_server, 12, delay_s=0.4, prefix="page-events")
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")
    rows = [(n + 1, f"SKU{n}", slow.urls[n * 3 : n * 3 + 3]) for n in range(4)] + [(5, "Gone", [missing])]

    page.upload(csv_of(rows))
    expect(page.page.locator("#channel")).to_have_text("live (event stream)")
    page.wait_status("COMPLETED_WITH_ERRORS")

    assert page.event_streams and page.status_polls == []  # progress came over the stream, not by polling
    percents = page.page.evaluate("window.__percents")
    assert len(set(percents)) >= 3 and percents[-1] == "100.0%", percents  # states on the way, then the end
    assert page.page.text_content("#counts").startswith("12 completed, 1 failed")
    assert re.fullmatch(r"[\d.]+ (bytes|KiB|MiB)", page.page.text_content("#bytes-in"))
    assert re.fullmatch(r"[\d.]+ (bytes|KiB|MiB)", page.page.text_content("#bytes-out"))
    assert re.fullmatch(r"-?[\d.]+%", page.page.text_content("#saved"))
    failures = page.page.locator("#failures tbody tr")
    expect(failures).to_have_count(1)
    cells = failures.first.locator("td").all_text_contents()
    assert cells[0] == "5. Gone" and cells[1] == missing and cells[2] == "http_404" and cells[3]
    expect(page.page.locator("#retry")).to_be_visible()
    expect(page.page.locator("#cancel")).to_be_hidden()
    expect(page.page.locator("#announce")).to_have_text("COMPLETED_WITH_ERRORS, 100.0% done")
    report_href = page.page.get_attribute("#report-link", "href")
    expect(page.page.locator("#report-link")).to_be_visible()
    report = requests.get(report_href, timeout=10)
    assert report.status_code == 200 and report.text.count("http_404") == 1


def test_cancel_on_a_slow_request_shows_cancelled(page, service, source_server):
    from playwright.sync_api import expect

    slow = SlowImages(source_server, 20, delay_s=1.5, prefix="page-cancel")
    page.upload(csv_of([(n + 1, f"SKU{n}", [slow.urls[n]]) for n in range(20)]))
    cancel = page.page.locator("#cancel")
    expect(cancel).to_be_visible()

    cancel.click()
    page.page.click("#cancel-confirm")  # the page asks first

    page.wait_status("CANCELLED")
    expect(page.page.locator("#counts")).to_contain_text("cancelled")  # the final event, from the stream
    expect(cancel).to_be_hidden()
    expect(page.page.locator("#retry")).to_be_hidden()
    expect(page.page.locator("#request-error")).to_be_hidden()
    expect(page.page.locator("#output-link")).to_be_visible()  # a cancelled request's CSV is there too
    assert page.event_streams and page.status_polls == []


def test_retry_after_the_sources_are_fixed_ends_completed(page, service, source_server):
    from playwright.sync_api import expect

    fixed = threading.Event()
    image = jpeg_bytes((120, 80))

    def flaky(request) -> None:
        if fixed.is_set():
            request.send(200, image, {"Content-Type": "image/jpeg"})
        else:
            request.send(404, b"not yet")

    paths = [f"/{uuid.uuid4().hex}/{n}.jpg" for n in range(2)]
    for path in paths:
        source_server.route(path, flaky)
    good = SlowImages(source_server, 1, delay_s=0, prefix="page-retry")
    page.upload(
        csv_of([(1, "A", [good.urls[0], source_server.url(paths[0])]), (2, "B", [source_server.url(paths[1])])])
    )
    page.wait_status("COMPLETED_WITH_ERRORS")
    expect(page.page.locator("#failures tbody tr")).to_have_count(2)
    streams_before = len(page.event_streams)

    fixed.set()
    page.page.click("#retry")

    page.wait_status("COMPLETED")
    expect(page.page.locator("#failures")).to_be_hidden()
    expect(page.page.locator("#retry")).to_be_hidden()
    assert page.page.text_content("#counts").startswith("3 completed, 0 failed")
    assert len(page.event_streams) > streams_before  # the retried run was followed over a new stream
    assert page.status_polls == []


def test_a_refused_stream_falls_back_to_polling(page, service, source_server):
    from playwright.sync_api import expect

    page.page.route(re.compile(r".*/api/status/[^/?]+/events"), lambda route: route.abort())
    slow = SlowImages(source_server, 2, delay_s=0.2, prefix="page-poll")
    page.upload(csv_of([(1, "A", slow.urls)]))

    page.wait_status("COMPLETED")
    expect(page.page.locator("#channel")).to_have_text("polling the status API")
    assert len(page.event_streams) == 3  # three tries, then polling
    assert page.status_polls
