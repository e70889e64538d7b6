"""Swagger UI rendering the OpenAPI document offline in a real browser (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support.backing import REQUIRE_SERVICES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).parents[2] / "docs" / "swagger-ui.png"


def test_swagger_ui_renders_the_operations_in_chromium(service):
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        pytest.fail(message) if REQUIRE_SERVICES else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def only_loopback(route):
        host = urlsplit(route.request.url).hostname or ""
        if host.startswith("127.") or host in ("localhost", "::1"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", only_loopback)
            page.goto(service.url("/api/docs"))
            upload_operation = page.locator(".opblock-post .opblock-summary-path", has_text="/api/upload").first
            upload_operation.wait_for(timeout=30_000)
            assert page.locator(".btn.authorize").count() == 1
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert outside == []
