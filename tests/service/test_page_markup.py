"""The web page at ``/`` over real HTTP: the upload form, self-contained, labelled, beside the API."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

URL_ATTRIBUTES = {"src", "href", "action", "formaction", "srcset", "poster", "data", "background"}


class PageParser(HTMLParser):
    """Every start tag with its attributes, the inline scripts and the inline styles."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        self._inside = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._inside = None

    def handle_data(self, data: str) -> None:
        if self._inside == "script":
            self.scripts.append(data)
        elif self._inside == "style":
            self.styles.append(data)

    def find(self, tag: str, **wanted: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag and all(attrs.get(k) == v for k, v in wanted.items())]


def fetch_page(service) -> tuple[requests.Response, PageParser]:
    response = requests.get(service.url("/"), timeout=10)
    parser = PageParser()
    parser.feed(response.text)
    return response, parser


def test_page_is_served_with_the_upload_form(service):
    response, page = fetch_page(service)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Cache-Control"] == "no-cache"
    file_inputs = page.find("input", type="file")
    assert len(file_inputs) == 1 and file_inputs[0]["name"] == "file"
    for name in ("webhook_url", "quality", "max_dimension"):
        assert page.find("input", name=name), name
    assert page.find("input", id="quality")[0]["placeholder"] == "50"
    script = "".join(page.scripts)
    assert 'fetch("/api/upload"' in script
    assert "/api/requests?per_page=10" in script
    assert "sessionStorage" in script and '"Bearer "' in script


def test_the_form_takes_platform_exports_or_a_feed_url_and_the_page_offers_the_image_zip(service):
    _, page = fetch_page(service)

    accepted = page.find("input", type="file")[0]["accept"].split(",")
    assert {".csv", ".tsv", ".txt"} <= set(accepted)
    assert "required" not in page.find("input", type="file")[0]  # a feed URL may stand in for the file
    assert page.find("input", name="feed_url", type="url")
    options: dict[str | None, list[str]] = {}
    select = None
    for tag, attrs in page.tags:
        if tag == "select":
            select = attrs.get("name")
        elif tag == "option":
            options.setdefault(select, []).append(attrs.get("value", ""))
    # Empty: not sent, so the service's default (auto by header; the format's own output mode).
    assert options["input_format"] == ["", "contract", "shopify", "woocommerce", "google_merchant"]
    assert options["output_mode"] == ["", "replace", "append"]
    script = "".join(page.scripts)
    assert '"input_format", "output_mode"' in script
    assert 'form.append("feed_url", feedUrl)' in script
    assert "/images.zip" in script and '"?naming=amazon"' in script and '"&identifier="' in script
    for element_id in ("zip-link", "zip-amazon-link", "zip-identifier", "input-format", "output-mode", "pack-error"):
        assert [attrs for _, attrs in page.tags if attrs.get("id") == element_id], element_id


def test_page_is_self_contained_and_writes_data_as_text(service):
    _, page = fetch_page(service)

    assert page.find("html", lang="en")
    for tag, attrs in page.tags:
        for name in URL_ATTRIBUTES & attrs.keys():
            value = attrs[name].strip().lower()
            assert not value.startswith(("http:", "https:", "//")), f"<{tag} {name}={attrs[name]!r}>"
    assert all(attrs.get("href", "").startswith("data:") for attrs in page.find("link"))
    assert not [attrs for tag, attrs in page.tags if tag == "script" and "src" in attrs]
    css = "".join(page.styles)
    assert "@import" not in css and "url(" not in css
    script = "".join(page.scripts)
    assert "innerHTML" not in script and "outerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script and "eval(" not in script


def test_every_form_control_has_a_label(service):
    _, page = fetch_page(service)

    labelled = {attrs.get("for") for attrs in page.find("label")}
    controls = [attrs for tag, attrs in page.tags if tag in ("input", "select", "textarea")]
    assert controls
    for attrs in controls:
        assert attrs.get("id") in labelled, attrs


def test_api_calls_still_answer_json(service):
    # The page at / does not shadow the API or its error shape.
    response = requests.get(service.url("/api/status/not-a-request"), timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"
