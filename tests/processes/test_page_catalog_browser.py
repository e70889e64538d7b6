"""The web page as a catalog team uses it, in Debian's chromium driven by Playwright: image rows that fill in
while a slow request runs, a cancel that asks first and shows what it cancelled, a retry that says what it
did, the failed images of a whole request, a wrong file named in words, and the recent requests.

Each test saves screenshots (see support/browser.py) for a person to look at.
"""

from __future__ import annotations

import io
import re
import time
import uuid
import zipfile

import pytest
from support.api import csv_of
from support.images import SlowImages, jpeg_bytes

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

SIZE = r"[\d.]+ (bytes|KiB|MiB)"

# Every text the page writes into #retry-note, in order.
RECORD_RETRY_NOTES = """() => {
  window.__notes = [];
  const note = document.getElementById("retry-note");
  new MutationObserver(() => window.__notes.push(note.textContent))
    .observe(note, { childList: true, characterData: true, subtree: true });
}"""


def _recent_item(page, request_id: str):
    return page.page.locator(f'#recent li[data-id="{request_id}"]')


def _missing_after(source_server, delay_s: float) -> str:
    """A URL on the image server that answers 404 after ``delay_s``."""
    path = f"/{uuid.uuid4().hex}/missing.jpg"

    def slow_404(request) -> None:
        time.sleep(delay_s)
        request.send(404, b"not here")

    source_server.route(path, slow_404)
    return source_server.url(path)


def test_image_rows_fill_in_while_a_slow_request_runs(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    slow = SlowImages(source_server, 10, delay_s=1.5, prefix="page-rows")
    request_id = page.upload(
        csv_of([(n + 1, f"SKU{n + 1}", slow.urls[n * 2 : n * 2 + 2]) for n in range(5)]), "spring.csv"
    )

    # The first output in the table, and the request's status at that same moment.
    seen = page.page.wait_for_function(
        """() => {
          const thumbs = document.querySelectorAll("#images tbody tr[data-status=COMPLETED] img.thumb");
          const loaded = [...thumbs].filter((img) => img.complete && img.naturalWidth > 0).length;
          return loaded ? { loaded, status: document.getElementById("status").textContent } : null;
        }"""
    ).json_value()

    assert seen["status"] == "PROCESSING", seen
    rows = page.page.locator("#images tbody tr")
    expect(rows).to_have_count(10)  # every image has its row from the start; the unfinished ones wait
    assert page.page.locator("#images tbody tr:not([data-status=COMPLETED])").count() > 0
    done = page.page.locator("#images tbody tr[data-status=COMPLETED]").first.locator("td").all_text_contents()
    assert re.fullmatch(r"(\d)\. SKU\1image [12] of 2", done[0]), done[0]
    assert done[3].startswith("Done")
    assert re.fullmatch(SIZE, done[4]) and re.match(SIZE, done[5])
    assert re.fullmatch(SIZE + r" \(\d+%\)", done[6]), done[6]
    expect(page.page.locator("#file-name")).to_have_text("spring.csv")
    recent = _recent_item(page, request_id)
    expect(recent.locator("button.open")).to_have_text("spring.csv")
    expect(recent.locator(".badge")).to_have_text("Processing")
    expect(recent.locator(".counts")).to_have_text(re.compile(r"^\d of 10 images done$"))
    screenshot(page, "rows-while-running")

    page.wait_status("COMPLETED")

    expect(page.page.locator("#status-badge")).to_have_text("Completed")
    expect(page.page.locator("#images tbody tr[data-status=COMPLETED] img.thumb")).to_have_count(10)
    expect(recent.locator(".badge")).to_have_text("Completed")
    expect(recent.locator(".counts")).to_have_text("10 of 10 images done")
    screenshot(page, "rows-completed")


def test_cancel_asks_first_and_the_bar_shows_the_cancelled_images(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    slow = SlowImages(source_server, 20, delay_s=1.5, prefix="page-cancelled")
    page.upload(csv_of([(n + 1, f"SKU{n + 1}", [slow.urls[n]]) for n in range(20)]), "summer.csv")
    page.page.wait_for_function("Number(document.getElementById('bar').dataset.completed) >= 2")
    cancels: list[str] = []
    page.page.on("request", lambda request: cancels.append(request.url) if request.url.endswith("/cancel") else None)

    page.page.click("#cancel")
    dialog = page.page.locator("#cancel-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("summer.csv")
    expect(dialog).to_contain_text("cannot be retried")
    screenshot(page, "cancel-asks-first")
    page.page.click("#cancel-keep")
    expect(dialog).to_be_hidden()
    assert cancels == []  # kept running: nothing was sent
    expect(page.page.locator("#status")).to_have_text("PROCESSING")

    page.page.click("#cancel")
    page.page.click("#cancel-confirm")

    page.wait_status("CANCELLED")
    expect(page.page.locator("#status-badge")).to_have_text("Cancelled")
    assert len(cancels) == 1
    expect(page.page.locator("#percent")).to_have_text(re.compile(r"^\d+\.\d% done, \d+\.\d% cancelled$"))
    cancelled = int(page.page.get_attribute("#bar", "data-cancelled"))
    completed = int(page.page.get_attribute("#bar", "data-completed"))
    assert cancelled > 0 and completed >= 2 and completed + cancelled <= 20
    widths = page.page.evaluate(
        """() => Object.fromEntries(["bar", "seg-done", "seg-failed", "seg-cancelled"].map((name) => [name,
             (name === "bar" ? document.getElementById("bar") : document.querySelector("#bar ." + name))
               .getBoundingClientRect().width]))"""
    )
    # Cancelled images fill their own (striped) part of the bar; "done" is only what was processed.
    assert widths["seg-cancelled"] == pytest.approx(widths["bar"] * cancelled / 20, abs=3)
    assert widths["seg-done"] == pytest.approx(widths["bar"] * completed / 20, abs=3)
    expect(page.page.locator("#images tbody tr[data-status=CANCELLED]")).to_have_count(cancelled)
    expect(page.page.locator("#retry")).to_be_hidden()
    screenshot(page, "cancelled")


def test_a_retry_says_what_it_did_and_what_changed(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    good = SlowImages(source_server, 1, delay_s=0, prefix="page-retried")
    missing = [_missing_after(source_server, 0.8) for _ in range(2)]
    page.upload(csv_of([(1, "Boot", [good.urls[0], missing[0]]), (2, "Sandal", [missing[1]])]), "autumn.csv")
    page.wait_status("COMPLETED_WITH_ERRORS")
    expect(page.page.locator("#status-badge")).to_have_text("Completed, 2 errors")
    failed = page.page.locator("#images tbody tr[data-status=FAILED]")
    expect(failed).to_have_count(2)
    words = failed.first.locator("td").nth(4).text_content()
    assert "Not found: the source server has no image at this address" in words
    assert "answered with HTTP status 404" in words and "http_404" in words
    page.page.evaluate(RECORD_RETRY_NOTES)

    page.page.click("#retry")

    note = page.page.locator("#retry-note")
    expect(note).to_have_text("2 retried: 0 recovered, 2 failed again.")
    assert page.page.evaluate("window.__notes")[0] == "Retrying 2 failed images…"
    expect(page.page.locator("#status")).to_have_text("COMPLETED_WITH_ERRORS")
    expect(page.page.locator("#images tbody tr[data-status=FAILED]")).to_have_count(2)
    screenshot(page, "retried")


def test_failed_only_lists_the_failed_images_of_the_whole_request(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    good = SlowImages(source_server, 30, delay_s=0, prefix="page-failed-only")
    failing = {2, 14, 26}
    missing = {n: _missing_after(source_server, 0) for n in failing}
    rows = [(n + 1, f"SKU{n + 1}", [missing[n]] if n in failing else [good.urls[n]]) for n in range(30)]
    page.upload(csv_of(rows), "winter.csv")
    page.wait_status("COMPLETED_WITH_ERRORS")
    page.page.select_option("#per-page", "10")
    expect(page.page.locator("#page-info")).to_have_text("Page 1 of 3 · products 1–10 of 30")
    expect(page.page.locator("#images tbody tr[data-status=FAILED]")).to_have_count(1)
    expect(page.page.locator("#failures tbody tr")).to_have_count(3)
    asked_before = len(page.status_pages)

    page.page.check("#failed-only")

    expect(page.page.locator("#page-info")).to_have_text("Page 1 of 1 · 3 products with failed images")
    rows_shown = page.page.locator("#images tbody tr")
    expect(rows_shown).to_have_count(3)
    assert [row.get_attribute("data-status") for row in rows_shown.all()] == ["FAILED"] * 3
    names = [row.locator("td").first.text_content() for row in rows_shown.all()]
    assert names == ["3. SKU3", "15. SKU15", "27. SKU27"]
    assert "Not found" in rows_shown.first.text_content()
    assert any("image_status=FAILED" in url for url in page.status_pages[asked_before:])  # the API filters
    expect(page.page.locator("#next-page")).to_be_disabled()
    screenshot(page, "failed-only")


def _xlsx_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "mime", "data", "said"),
    [
        ("photo.jpg", "image/jpeg", jpeg_bytes((16, 16)), "This looks like a JPEG image, not a CSV file."),
        ("products.csv", "text/csv", jpeg_bytes((16, 16)), "This looks like a JPEG image, not a CSV file."),
        (
            "catalog.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            _xlsx_bytes(),
            "This looks like an Excel workbook (.xlsx), not a CSV file. In your spreadsheet app, save or download "
            "it as 'CSV UTF-8' and upload that file.",
        ),
    ],
    ids=["jpeg-by-name", "jpeg-named-csv", "xlsx"],
)
def test_a_file_that_is_not_a_csv_is_refused_in_words(page, service, screenshot, name, mime, data, said):
    from playwright.sync_api import expect

    page.page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])
    message = page.page.locator("#error-message")
    expect(message).to_have_text(re.compile("^" + re.escape(said)))
    page.page.click("#submit")

    expect(message).to_have_text(re.compile("^" + re.escape(said)))
    expect(page.page.locator("#result")).to_be_hidden()
    assert page.uploads == []  # refused before anything was sent
    if name == "products.csv":
        screenshot(page, "wrong-file")


def test_recent_requests_show_the_file_name_and_counts_and_reopen_on_click(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    good = SlowImages(source_server, 3, delay_s=0, prefix="page-recent")
    first = page.upload(csv_of([(1, "Hat", good.urls[:2])]), "hats.csv")
    page.wait_status("COMPLETED")
    second = page.upload(csv_of([(1, "Scarf", [good.urls[2], _missing_after(source_server, 0)])]), "scarves.csv")
    page.wait_status("COMPLETED_WITH_ERRORS")

    items = page.page.locator("#recent li")
    expect(items).to_have_count(2)
    expect(items.nth(0).locator("button.open")).to_have_text("scarves.csv")
    expect(items.nth(0).locator(".badge")).to_have_text("Completed, 1 error")
    expect(items.nth(0).locator(".counts")).to_have_text("1 of 2 images done, 1 failed")
    expect(items.nth(0)).to_have_attribute("aria-current", "true")
    expect(items.nth(1).locator("button.open")).to_have_text("hats.csv")
    expect(items.nth(1).locator(".badge")).to_have_text("Completed")
    expect(items.nth(1).locator(".counts")).to_have_text("2 of 2 images done")

    items.nth(1).locator("button.open").click()

    expect(page.page.locator("#request-id")).to_have_text(first)
    expect(page.page.locator("#file-name")).to_have_text("hats.csv")
    page.wait_status("COMPLETED")
    expect(page.page.locator("#images tbody tr[data-status=COMPLETED] img.thumb")).to_have_count(2)
    expect(page.page.locator("#failures")).to_be_hidden()
    expect(_recent_item(page, first)).to_have_attribute("aria-current", "true")
    assert page.page.evaluate("location.hash") == f"#{first}"
    screenshot(page, "recent-reopened")

    page.page.goto(service.url(f"/#{second}"))  # a link with the request's id opens it, name and all

    expect(page.page.locator("#request-id")).to_have_text(second)
    expect(page.page.locator("#file-name")).to_have_text("scarves.csv")
    page.wait_status("COMPLETED_WITH_ERRORS")
