"""The page with platform exports, in Debian's chromium driven by Playwright against the real service: a Shopify
export uploaded as such shows its format and key, its images come as a ZIP named plainly or for Amazon (and a
pack Amazon would refuse is refused in the page, by product), a refused export names its row and column, and
a feed is fetched by URL instead of a file. Sources and feeds are served on 127.0.0.2; nothing leaves loopback.

Each test saves screenshots (see support/browser.py) for a person to look at.
"""

from __future__ import annotations

import io
import re
import zipfile

import pytest
import requests
from support.canaries import CanaryServer
from support.images import jpeg_bytes
from support.loopback import serve

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

SHOPIFY_HEADER = "Handle,Title,Image Src,Image Position\n"


def _photo(seed: int) -> bytes:
    return jpeg_bytes((200 + seed * 16, 150), color=(40 + seed * 60, 90, 160))


def _shopify(front: str, back: str) -> bytes:
    # The back comes first in the file but second by Image Position: the pack follows the position.
    return (SHOPIFY_HEADER + f"red-tee,Redtee,{back},2\nred-tee,,{front},1\n").encode()


# The fields of every upload the page sends, as its FormData holds them (chromium does not show a multipart
# body holding a file to the driver): a file as "<file NAME>".
RECORD_UPLOAD_FIELDS = """() => {
  window.__uploads = [];
  const sent = window.fetch;
  window.fetch = (url, init) => {
    if (String(url).endsWith("/api/upload") && init && init.body instanceof FormData) {
      window.__uploads.push(Object.fromEntries([...init.body.entries()].map(([name, value]) =>
        [name, typeof value === "string" ? value : "<file " + value.name + ">"])));
    }
    return sent(url, init);
  };
}"""


def _submit(page) -> str:
    """Submit the form as it is filled; the id of the request the page then shows."""
    page.page.click("#submit")
    shown = page.page.wait_for_function(
        """() => {
          const id = document.getElementById("request-id").textContent;
          return id && !document.getElementById("result").hidden ? id : null;
        }"""
    )
    return shown.json_value()


def _zip_names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        return archive.namelist()


def test_a_shopify_export_shows_its_format_and_gives_its_images_as_a_zip(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    front = serve(source_server, _photo(1), name="front.jpg")
    back = serve(source_server, _photo(2), name="back.jpg")
    page.page.evaluate(RECORD_UPLOAD_FIELDS)
    page.page.select_option("#input_format", "shopify")
    request_id = page.upload(_shopify(front, back), "products_export.csv")

    sent = page.page.evaluate("window.__uploads")
    assert sent == [{"file": "<file products_export.csv>", "input_format": "shopify"}]
    page.wait_status("COMPLETED")
    shown = page.page.locator("#input-format")
    expect(shown).to_have_attribute("data-format", "shopify")
    expect(shown).to_have_text("Shopify shopify · products keyed by Handle")
    expect(page.page.locator("#output-mode")).to_have_text("Image URLs replaced in place")
    expect(page.page.locator("#feed-url")).to_be_hidden()
    rows = page.page.locator("#images tbody tr[data-status=COMPLETED]")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("td").first).to_contain_text("Handle: red-tee")
    expect(rows.first.locator("td").first).to_contain_text("image 1 of 2")

    # The plain pack: <handle>_<position>.jpg, the position's own output in each.
    plain = page.page.locator("#zip-link")
    expect(plain).to_be_visible()
    expect(plain).to_have_attribute("href", f"/api/requests/{request_id}/images.zip?naming=plain")
    expect(page.page.locator("#zip-hint")).to_contain_text("Handle")
    with page.page.expect_download() as download:
        plain.click()
    assert download.value.suggested_filename == f"{request_id}-images-plain.zip"
    saved = download.value.path().read_bytes()
    assert _zip_names(saved) == ["red-tee_1.jpg", "red-tee_2.jpg"]
    fetched = requests.get(service.url(plain.get_attribute("href")), timeout=30)
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "application/zip"
    assert fetched.content == saved
    status = requests.get(service.url(f"/api/status/{request_id}"), timeout=10).json()
    assert status["input_format"] == "shopify" and status["product_key"] == "Handle"
    outputs = {image["input_url"]: image["output_url"] for image in status["products"][0]["images"]}
    with zipfile.ZipFile(io.BytesIO(saved)) as archive:
        assert archive.read("red-tee_1.jpg") == requests.get(outputs[front], timeout=10).content
        assert archive.read("red-tee_2.jpg") == requests.get(outputs[back], timeout=10).content

    # Amazon names by the key: the Handle holds a dash, which Amazon refuses; the page says so, by product.
    amazon = page.page.locator("#zip-amazon-link")
    expect(page.page.locator("#zip-identifier")).to_have_attribute("placeholder", "Handle")
    expect(amazon).to_have_attribute("href", f"/api/requests/{request_id}/images.zip?naming=amazon")
    amazon.click()
    refusal = page.page.locator("#pack-error")
    expect(refusal).to_be_visible()
    expect(page.page.locator("#pack-error-message")).to_contain_text("(pack_refused)")
    expect(page.page.locator("#pack-error-details li")).to_have_text(
        re.compile(r"^Product “red-tee”: 'red-tee' holds characters Amazon refuses")
    )
    screenshot(page, "formats-pack-refused")

    # ... and by a column of the file, the one the identifier names.
    page.page.fill("#zip-identifier", "Title")
    expect(amazon).to_have_attribute("href", f"/api/requests/{request_id}/images.zip?naming=amazon&identifier=Title")
    with page.page.expect_download() as download:
        amazon.click()
    assert download.value.suggested_filename == f"{request_id}-images-amazon.zip"
    assert _zip_names(download.value.path().read_bytes()) == ["Redtee.MAIN.jpg", "Redtee.PT01.jpg"]
    expect(refusal).to_be_hidden()
    screenshot(page, "formats-shopify-completed")


def test_a_refused_export_names_its_row_and_column(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    image = serve(source_server, _photo(3), name="hat.jpg")
    page.page.select_option("#input_format", "shopify")
    data = (SHOPIFY_HEADER + f"hat,Hat,{image},first\n").encode()
    page.page.set_input_files("#file", files=[{"name": "hats.csv", "mimeType": "text/csv", "buffer": data}])

    page.page.evaluate(RECORD_UPLOAD_FIELDS)
    page.page.click("#submit")

    expect(page.page.locator("#error")).to_be_visible()
    expect(page.page.locator("#error-message")).to_contain_text("(csv_invalid_rows)")
    detail = page.page.locator("#error-details li")
    expect(detail).to_have_count(1)
    expect(detail).to_have_text("Row 2, column “Image Position”: image position must be a whole number from 1: 'first'")
    expect(detail).to_have_attribute("data-row", "2")
    expect(detail).to_have_attribute("data-column", "Image Position")
    expect(page.page.locator("#result")).to_be_hidden()
    assert page.page.evaluate("window.__uploads") == [{"file": "<file hats.csv>", "input_format": "shopify"}]
    screenshot(page, "formats-refused-row")


def test_a_feed_is_fetched_by_url_instead_of_a_file(page, service, source_server, screenshot):
    from playwright.sync_api import expect

    lamp = serve(source_server, _photo(4), name="lamp.jpg")
    side = serve(source_server, _photo(5), name="lamp-side.jpg")
    feed = f"id,title,link,image_link,additional_image_link\nLAMP1,Lamp,http://shop.example/lamp,{lamp},{side}\n"
    feed_url = serve(source_server, feed.encode(), "text/csv", name="feed.csv")
    message = page.page.locator("#error-message")

    # Neither a file nor a URL, then both: said in the page, and nothing is sent.
    page.page.click("#submit")
    expect(message).to_have_text("Choose a file, or give the URL of an export or feed for the service to fetch.")
    page.page.set_input_files("#file", files=[{"name": "a.csv", "mimeType": "text/csv", "buffer": b"x\n"}])
    page.page.fill("#feed_url", feed_url)
    page.page.click("#submit")
    expect(message).to_have_text(re.compile("^Give either a file or a URL to fetch, not both"))
    assert page.uploads == []

    # A feed on an address the service may not fetch from is refused by the service, and said by field.
    with CanaryServer("127.0.0.1") as victim:
        page.page.click("#clear-file")
        expect(page.page.locator("#clear-file")).to_be_hidden()
        page.page.fill("#feed_url", victim.url("/feed.csv"))
        page.page.click("#submit")
        expect(message).to_contain_text("(blocked_address)")
        expect(page.page.locator("#error-details li")).to_have_text(re.compile(r"^feed_url: "))
        assert victim.accepted == 0

    page.page.fill("#feed_url", feed_url)
    page.page.select_option("#output_mode", "append")
    page.page.evaluate(RECORD_UPLOAD_FIELDS)
    request_id = _submit(page)

    assert page.page.evaluate("window.__uploads") == [{"feed_url": feed_url, "output_mode": "append"}]
    page.wait_status("COMPLETED")
    expect(page.page.locator("#output-mode")).to_have_text("An Output Image Urls column added")
    expect(page.page.locator("#file-name")).to_have_text("feed.csv")
    expect(page.page.locator("#feed-url")).to_have_text(feed_url)
    expect(page.page.locator("#input-format")).to_have_attribute("data-format", "google_merchant")
    expect(page.page.locator("#input-format")).to_contain_text("Google Merchant Center")
    expect(page.page.locator("#input-format")).to_contain_text("products keyed by id")
    expect(page.page.locator("#images tbody tr[data-status=COMPLETED]").first).to_contain_text("id: LAMP1")
    pack = requests.get(service.url(page.page.get_attribute("#zip-link", "href")), timeout=30)
    assert pack.status_code == 200 and _zip_names(pack.content) == ["LAMP1_1.jpg", "LAMP1_2.jpg"]
    assert request_id in page.page.get_attribute("#zip-link", "href")
    screenshot(page, "formats-feed")
