"""CORS_ORIGINS: preflights answered for the origins given and no others, and a page on another origin
calling the API from a real browser (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import requests
from support.api import csv_of
from support.backing import REQUIRE_SERVICES
from support.handlers import respond
from support.images import jpeg_bytes
from support.services import ApiServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

CHROMIUM = Path("/usr/bin/chromium")
KEY = "cors-" + uuid.uuid4().hex
ELSEWHERE = "https://catalog.example.com"


def _serve(overrides: dict):
    return ApiServer.serving(api_keys=(KEY,), **overrides)


@pytest.fixture(scope="module")
def page_origin(source_server) -> str:
    return source_server.url("").rstrip("/")


@pytest.fixture(scope="module")
def open_to_page(service, page_origin):
    server = _serve({"cors_origins": (page_origin, ELSEWHERE)})
    yield server.base_url
    server.stop()


@pytest.fixture(scope="module")
def closed_to_page(service):
    server = _serve({"cors_origins": (ELSEWHERE,)})
    yield server.base_url
    server.stop()


@pytest.fixture(scope="module")
def default_api(service):
    server = _serve({})
    yield server.base_url
    server.stop()


def preflight(base_url: str, origin: str, path: str = "/api/upload", method: str = "POST") -> requests.Response:
    return requests.options(
        base_url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, idempotency-key",
        },
        timeout=10,
    )


def test_a_preflight_from_an_allowed_origin_is_answered_without_a_key(open_to_page, page_origin):
    for _ in range(3):
        answer = preflight(open_to_page, page_origin)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Access-Control-Allow-Origin"] == page_origin
        assert set(answer.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "OPTIONS"}
        allowed = answer.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "idempotency-key" in allowed
        assert "Access-Control-Allow-Credentials" not in answer.headers
    status = preflight(open_to_page, ELSEWHERE, path=f"/api/status/{uuid.uuid4()}", method="GET")
    assert status.headers["Access-Control-Allow-Origin"] == ELSEWHERE


def test_preflights_are_not_counted_against_the_rate_limits(service, page_origin):
    limited = _serve({"cors_origins": (page_origin,), "rate_limit_reads": "1/minute", "rate_limit_uploads": "1/minute"})
    try:
        for path, method in [(f"/api/status/{uuid.uuid4()}", "GET"), ("/api/upload", "POST")] * 3:
            answer = preflight(limited.base_url, page_origin, path=path, method=method)
            assert answer.status_code == 200, answer.text
    finally:
        limited.stop()


def test_the_answer_to_an_allowed_origin_exposes_the_headers_a_script_needs(open_to_page, page_origin):
    answer = requests.get(
        f"{open_to_page}/api/status/{uuid.uuid4()}",
        headers={"Origin": page_origin, "Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert answer.status_code == 404
    assert answer.headers["Access-Control-Allow-Origin"] == page_origin
    exposed = {name.strip().lower() for name in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"location", "etag", "idempotent-replayed", "retry-after", "x-ratelimit-remaining"} <= exposed


def test_other_origins_and_the_default_get_no_cors_headers(open_to_page, default_api):
    for base_url, origin in ((open_to_page, "http://127.0.0.3:9"), (default_api, ELSEWHERE)):
        answer = preflight(base_url, origin)
        assert not [name for name in answer.headers if name.lower().startswith("access-control-")], answer.headers


def test_a_malformed_origin_stops_start_up():
    from config import Settings, SettingsError

    for bad in ("catalog.example.com", "https://catalog.example.com/shop", "ftp://x", "*,https://a.example"):
        with pytest.raises(SettingsError, match="CORS_ORIGINS"):
            Settings.from_env({"CORS_ORIGINS": bad})
    assert Settings.from_env({"CORS_ORIGINS": " https://a.example , http://[::1]:8080 "}).cors_origins == (
        "https://a.example",
        "http://[::1]:8080",
    )


# Uploads a CSV with FormData and a bearer key (a preflighted call), then reads the status it points at.
PAGE = """<!doctype html><html><body><pre id="result">running</pre><script>
const [API, KEY, CSV] = ARGUMENTS;
(async () => {
  const result = document.getElementById("result");
  try {
    const form = new FormData();
    form.append("file", new Blob([CSV], {type: "text/csv"}), "products.csv");
    const auth = {Authorization: "Bearer " + KEY};
    const made = await fetch(API + "/api/upload", {method: "POST", body: form, headers: auth});
    const body = await made.json();
    const status = await fetch(API + "/api/status/" + body.request_id, {headers: auth});
    const read = (await status.json()).request_id;
    result.textContent = ["ok", made.status, read, made.headers.get("Location")].join(" ");
  } catch (error) {
    result.textContent = "error " + error.name + ": " + error.message;
  }
})();
</script></body></html>"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        pytest.fail(message, pytrace=False) if REQUIRE_SERVICES else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


def _run_page(browser, source_server, api: str) -> str:
    image = f"/{uuid.uuid4().hex}.jpg"
    source_server.route(image, respond(200, jpeg_bytes(), {"Content-Type": "image/jpeg"}))
    csv_text = csv_of([(1, "Cup", [source_server.url(image)])]).decode()
    path = f"/page-{uuid.uuid4().hex}.html"
    html = PAGE.replace("ARGUMENTS", json.dumps([api, KEY, csv_text]), 1)
    source_server.route(path, respond(200, html.encode(), {"Content-Type": "text/html"}))
    page = browser.new_page()
    try:
        page.goto(source_server.url(path))
        page.wait_for_function("document.getElementById('result').textContent !== 'running'", timeout=30_000)
        return page.text_content("#result")
    finally:
        page.close()


def test_a_page_on_an_allowed_origin_uploads_and_reads_the_status(browser, source_server, open_to_page):
    result = _run_page(browser, source_server, open_to_page)
    assert result.startswith("ok "), result
    ok, status, request_id, location = result.split(" ")
    assert (ok, status) == ("ok", "202"), result
    assert location == f"{open_to_page}/api/status/{request_id}"


def test_a_page_on_another_origin_is_stopped_by_the_browser(browser, source_server, closed_to_page):
    result = _run_page(browser, source_server, closed_to_page)
    assert result == "error TypeError: Failed to fetch", result
    listing = requests.get(f"{closed_to_page}/api/requests", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert listing.json()["requests"] == [], "the preflight failed, so the upload was never sent"
