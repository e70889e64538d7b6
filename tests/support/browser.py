"""The web page in a real browser: Debian's chromium driven by Playwright (never a browser of Playwright's own),
one page per test, and screenshots kept for a person to look at.

Chromium missing is a failure, not a skip, when TEST_REQUIRE_SERVICES=1 (as in CI, which installs it).
Screenshots go to the test's tmp_path and are copied to TEST_SCREENSHOTS_DIR (artifacts/screenshots/ at the
repository's root by default, which git ignores).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.backing import REQUIRE_SERVICES

CHROMIUM = Path("/usr/bin/chromium")
FINAL_WAIT_MS = 90_000
SCREENSHOTS_DIR = Path(
    os.environ.get("TEST_SCREENSHOTS_DIR") or Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
)

# Every text the page writes into #percent, in order: what arrived, event after event.
RECORD_PROGRESS = """
window.__percents = [];
document.addEventListener("DOMContentLoaded", () => {
  const percent = document.getElementById("percent");
  new MutationObserver(() => window.__percents.push(percent.textContent))
    .observe(percent, { childList: true, characterData: true, subtree: true });
});
"""


def _missing(message: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -r requirements-dev.txt")
    with sync_playwright() as playwright:
        # As root (CI, containers) chromium runs only without its sandbox; the pages are our own.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


class PageUnderTest:
    """One browser page on the service, counting its calls to the events endpoint, the status API and uploads."""

    def __init__(self, browser, service) -> None:
        # Reduced motion: the bar's segments take their widths at once, for measuring and screenshots.
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
        self.page = self.context.new_page()
        self.page.set_default_timeout(FINAL_WAIT_MS)
        self.page.add_init_script(RECORD_PROGRESS)
        self.event_streams: list[str] = []
        self.status_polls: list[str] = []
        self.status_pages: list[str] = []
        self.uploads: list[str] = []
        self.page.on("request", self._count)
        self.page.goto(service.url("/"))

    def _count(self, request) -> None:
        if re.search(r"/api/status/[^/?]+/events", request.url):
            self.event_streams.append(request.url)
        elif re.search(r"/api/status/[^/?]+\?per_page=1$", request.url):
            self.status_polls.append(request.url)  # the fallback's polls (the pages of images ask for more)
        elif re.search(r"/api/status/[^/?]+\?", request.url):
            self.status_pages.append(request.url)
        elif request.url.endswith("/api/upload") and request.method == "POST":
            self.uploads.append(request.url)

    def upload(self, csv_bytes: bytes, name: str = "p.csv") -> str:
        """Upload through the form; the id of the request it made (not the one the page showed before)."""
        before = self.page.text_content("#request-id") or ""
        self.page.set_input_files("#file", files=[{"name": name, "mimeType": "text/csv", "buffer": csv_bytes}])
        self.page.click("#submit")
        shown = self.page.wait_for_function(
            """(before) => {
              const id = document.getElementById("request-id").textContent;
              return id && id !== before && !document.getElementById("result").hidden ? id : null;
            }""",
            arg=before,
        )
        return shown.json_value()

    def wait_status(self, status: str) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("#status")).to_have_text(status, timeout=FINAL_WAIT_MS)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser, service) -> Iterator[PageUnderTest]:
    under_test = PageUnderTest(browser, service)
    yield under_test
    under_test.close()


@pytest.fixture
def screenshot(tmp_path) -> Callable[[PageUnderTest, str], Path]:
    """Save the whole page as <name>.png under tmp_path, and a copy in SCREENSHOTS_DIR."""

    def take(under_test: PageUnderTest, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        under_test.page.screenshot(path=str(path), full_page=True)
        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS_DIR / path.name)
        return path

    return take
