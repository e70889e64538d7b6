"""Platform exports over HTTP with a real worker: Shopify, WooCommerce and Google Merchant files go in as
exported and come back ready to import, byte for byte but for their image cells; refusals name their row
and column and write nothing; image packs stream from storage; feeds are fetched through the guard.

Each export is written here from a template whose image cells are ``{name}`` tokens: the upload fills them
with source URLs, and the expected output fills them with the outputs' URLs (a failed image's source stays).
Everything else, URLs in other cells included, must come back as written.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import time
import zipfile

import pytest
import requests
from sqlalchemy import func, select
from support.api import upload, wait_final
from support.canaries import canaries
from support.images import jpeg_bytes
from support.loopback import respond, serve

from models import Image, Product, Request, RequestRecord, db

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]


def photo(seed: int) -> bytes:
    return jpeg_bytes((320 + seed * 8, 240), color=(40 + seed * 20 % 200, 90, 160))


class Sources:
    """Named image sources on 127.0.0.2: each name is a JPEG of its own, or a 404 when named ``missing*``."""

    def __init__(self, server, names: list[str], path_suffix: str = ".jpg") -> None:
        self.urls: dict[str, str] = {}
        for seed, name in enumerate(names):
            if name.startswith("missing"):
                self.urls[name] = serve(server, respond(404, b"gone"), name=f"{name}{path_suffix}")
            else:
                self.urls[name] = serve(server, photo(seed), name=f"{name}{path_suffix}")


def filled(template: str, urls: dict[str, str], sources: dict[str, str] | None = None) -> str:
    """``template`` with each image cell's ``{name}`` filled from ``urls`` and each ``{source:name}`` (a URL in
    another cell, which no output replaces) from ``sources`` (by default ``urls``)."""
    for name, url in (sources or urls).items():
        template = template.replace("{source:" + name + "}", url)
    for name, url in urls.items():
        template = template.replace("{" + name + "}", url)
    return template


def outputs_by_source(status: dict) -> dict[str, str]:
    """Each completed image's source URL -> its output URL, from the status answer."""
    return {
        image["input_url"]: image["output_url"]
        for product in status["products"]
        for image in product["images"]
        if image["status"] == "COMPLETED"
    }


def expected_output(template: str, sources: Sources, status: dict) -> str:
    outputs = outputs_by_source(status)
    return filled(template, {name: outputs.get(url, url) for name, url in sources.urls.items()}, sources.urls)


def run(service, data: bytes, name: str = "export.csv", **form: str) -> tuple[dict, bytes]:
    created = requests.post(
        f"{service.base_url}/api/upload", files={"file": (name, data, "text/csv")}, data=form, timeout=30
    )
    assert created.status_code == 202, created.text
    status = wait_final(service.base_url, created.json()["request_id"])
    output = requests.get(status["output_csv_url"], timeout=30)
    assert output.status_code == 200, output.text
    return status | {"created": created.json()}, output.content


# --- the formats ----------------------------------------------------------------------------------

SHOPIFY_HEADER = (
    "\ufeffHandle,Title,Body (HTML),Vendor,Option1 Name,Option1 Value,Variant SKU,Variant Price,"
    "Image Src,Image Position,Image Alt Text,Variant Image,Status\r\n"
)
#: (record, the image tokens its image cells hold, in column order)
SHOPIFY_RECORDS = [
    (
        'red-tee,"Tee, red","<p>Soft ""combed"" cotton,\r\nsee <img src=""{source:back}""></p>",Acme,Size,S,TEE1S,'
        "19.99,{back},2,Back of the tee,{front},active\r\n",
        ["back", "front"],
    ),
    ("red-tee,,,,,M,TEE1M,19.99,{front},1,Front,{front},\r\n", ["front", "front"]),
    ("red-tee,,,,,L,TEE1L,21.50,,,,,\r\n", []),
    ("\r\n", []),
    ("gift-card,Gift card,<p>No picture</p>,Acme,Title,Default Title,GIFT1,25.00,,,,,active\r\n", []),
    ("mug,Mug,,Acme,Title,Default Title,MUG1,9.00,{mug},1,,,active\r\n", ["mug"]),
    ("mug,,,,,,,,{missing_mug},2,A lost picture,,", ["missing_mug"]),
]
SHOPIFY = SHOPIFY_HEADER + "".join(record for record, _ in SHOPIFY_RECORDS)
WOOCOMMERCE = (
    "ID,Type,SKU,Name,Published,Short description,Regular price,Images,Parent,Position\r\n"
    '101,variable,HOODIE,Hoodie,1,"Warm, soft",,"{hoodie_front}, {hoodie_back}",,0\r\n'
    "102,variation,HOODIE-BLUE,Hoodie - Blue,1,,45,{hoodie_blue},id:101,1\r\n"
    "103,variation,HOODIE-RED,Hoodie - Red,1,,45,,id:101,2\r\n"
    ',simple,CAP-1,Cap,1,"=1+1 is text here",15,"{cap},{missing_cap}",,0\r\n'
)
GOOGLE_TSV = (
    "id\ttitle\tdescription\tlink\tprice\timage_link\tadditional_image_link\n"
    "SKU1\tLamp\tA lamp, in brass\thttp://shop.example/lamp\t30.00 USD\t{lamp}\t{lamp_side},{lamp%2Ctop}\n"
    "SKU2\tShade\tNo extras\thttp://shop.example/shade\t12.00 USD\t{shade}\t\n"
)
GOOGLE_CSV = (
    "id,title,link,image_link,additional_image_link\n"
    'G1,"Vase, tall",http://shop.example/vase,{vase},"{vase_back},{vase%2Cside}"\n'
    "G2,Bowl,http://shop.example/bowl,{missing_bowl},\n"
)


def test_a_shopify_export_comes_back_with_only_its_image_cells_changed(service, source_server):
    sources = Sources(source_server, ["back", "front", "mug", "missing_mug"])
    status, output = run(service, filled(SHOPIFY, sources.urls).encode())

    assert status["status"] == "COMPLETED_WITH_ERRORS"
    assert (status["input_format"], status["output_mode"], status["product_key"]) == ("shopify", "replace", "Handle")
    # Products keyed by Handle, named by Title, images in Image Position order (front is 1, back 2).
    products = {p["product_key"]: p for p in status["products"]}
    assert list(products) == ["red-tee", "mug"]
    assert products["red-tee"]["product_name"] == "Tee, red"
    assert [i["input_url"] for i in products["red-tee"]["images"]] == [sources.urls["front"], sources.urls["back"]]
    assert output.decode("utf-8") == expected_output(SHOPIFY, sources, status)
    assert output.startswith(codecs.BOM_UTF8)
    # The failed image keeps its source URL, and is in the report under its Handle.
    report = requests.get(f"{service.base_url}/api/requests/{status['request_id']}/report.csv", timeout=30).text
    assert report.startswith("Handle,Product Name,Position,Input Image Url")
    assert f"mug,Mug,2,{sources.urls['missing_mug']},,FAILED" in report
    failed_rows = requests.get(f"{service.base_url}/api/requests/{status['request_id']}/failed-rows.csv", timeout=30)
    assert failed_rows.content.decode() == filled(SHOPIFY_HEADER + SHOPIFY_RECORDS[-1][0], sources.urls)


def test_a_woocommerce_export_keyed_by_id_or_sku(service, source_server):
    sources = Sources(source_server, ["hoodie_front", "hoodie_back", "hoodie_blue", "cap", "missing_cap"])
    status, output = run(service, filled(WOOCOMMERCE, sources.urls).encode(), input_format="woocommerce")

    assert [p["product_key"] for p in status["products"]] == ["101", "102", "CAP-1"]
    assert status["product_key"] == "ID/SKU"
    expected = expected_output(WOOCOMMERCE, sources, status)
    # The one cell a spreadsheet would run as a formula is written as text, as in every output file.
    expected = expected.replace('"=1+1 is text here"', "'=1+1 is text here")
    assert output.decode() == expected


@pytest.mark.parametrize("template", [GOOGLE_TSV, GOOGLE_CSV], ids=["tab-separated", "comma-separated"])
def test_a_google_merchant_feed_keeps_its_separator_and_writes_commas_in_urls_as_2c(service, source_server, template):
    names = [name for name in ("lamp", "lamp_side", "lamp%2Ctop", "shade", "vase", "vase_back", "vase%2Cside")]
    names += ["missing_bowl"]
    sources = Sources(source_server, [name for name in names if "{" + name + "}" in template])
    status, output = run(service, filled(template, sources.urls).encode(), name="feed.txt")

    assert status["input_format"] == "google_merchant"
    comma_url = next(url for name, url in sources.urls.items() if "%2C" in name)
    first = status["products"][0]
    assert [i["input_url"] for i in first["images"]][-1] == comma_url
    assert output.decode() == expected_output(template, sources, status)


def test_append_mode_and_a_chosen_rendition(service, source_server):
    sources = Sources(source_server, ["back", "front", "mug", "missing_mug"])
    status, output = run(
        service,
        filled(SHOPIFY, sources.urls).encode(),
        output_mode="append",
        renditions="main:300,thumb:100x100:pad",
        output_rendition="thumb",
    )
    assert (status["output_mode"], status["output_rendition"]) == ("append", "thumb")
    thumbs, mains = {}, {}
    for product in status["products"]:
        for image in product["images"]:
            by_name = {r["name"]: r["url"] for r in image["renditions"]}
            thumbs[image["input_url"]], mains[image["input_url"]] = by_name.get("thumb"), by_name.get("main")

    def cell(urls: list[str]) -> str:
        joined = ",".join(urls)
        return f'"{joined}"' if "," in joined else joined

    expected = filled(SHOPIFY_HEADER, sources.urls).replace("\r\n", ",Output Image Urls,Output Image Urls (main)\r\n")
    for record, names in SHOPIFY_RECORDS:
        text = filled(record, sources.urls)
        if not text.strip():
            expected += text
            continue
        body, end = (text[:-2], "\r\n") if text.endswith("\r\n") else (text, "")
        urls = [sources.urls[name] for name in names]
        added = [cell([thumbs.get(url) or "" for url in urls]), cell([mains.get(url) or "" for url in urls])]
        expected += body + "," + ",".join(added) + end
    assert output.decode() == expected


def test_the_contract_csv_in_replace_mode(service, source_server):
    sources = Sources(source_server, ["a", "b", "missing_c"])
    template = 'S. No.,Product Name,Input Image Urls,Brand\n1,Chair,"{a},{missing_c}",Oak\n2,Table,{b},Oak\n'
    status, output = run(service, filled(template, sources.urls).encode(), output_mode="replace")
    assert status["input_format"] == "contract"
    assert output.decode() == expected_output(template, sources, status)


# --- refusals -------------------------------------------------------------------------------------

REFUSALS = [
    (
        "shopify",
        "Handle,Title,Image Src,Image Position\nhat,Hat,{ok},first\n,No handle,{ok},\n",
        [
            {"row": 2, "column": "Image Position", "message": "image position must be a whole number from 1: 'first'"},
            {"row": 3, "column": "Handle", "message": "'Handle' is empty: nothing names this row's product"},
        ],
    ),
    (
        "woocommerce",
        'ID,SKU,Name,Images\n7,A,Lamp,"{ok},,{ok}"\n7,B,Lamp 2,{ok}\n',
        [
            {
                "row": 2,
                "column": "Images",
                "message": "image URL number 2 is empty (two commas in a row, or one at an end)",
            },
            {"row": 3, "column": "ID", "message": "duplicate ID '7'; first used on row 2"},
        ],
    ),
    (
        "google_merchant",
        "id\timage_link\tadditional_image_link\nX1\tftp://127.0.0.2/a.jpg\t" + ",".join(["{ok}"] * 11) + "\n",
        [
            {"row": 2, "column": "image_link", "message": "not an http(s) URL: 'ftp://127.0.0.2/a.jpg'"},
            {
                "row": 2,
                "column": "additional_image_link",
                "message": "11 image URLs are given; additional_image_link takes at most 10",
            },
        ],
    ),
]


def table_counts(service) -> tuple[int, ...]:
    with service.app.app_context():
        counts = tuple(
            db.session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Request, Product, Image, RequestRecord)
        )
        db.session.rollback()
    return counts


@pytest.mark.parametrize(("input_format", "template", "details"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_names_its_row_and_column_and_writes_nothing(
    service, source_server, input_format, template, details
):
    ok = serve(source_server, photo(1))
    answer = upload(service.base_url, template.replace("{ok}", ok).encode())
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "csv_invalid_rows"
    assert error["details"] == details
    assert table_counts(service) == (0, 0, 0, 0)


def test_a_file_auto_cannot_place_names_the_formats_it_knows(service):
    answer = upload(service.base_url, b"sku,picture\nA1,http://127.0.0.2/a.jpg\n")
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "csv_missing_columns"
    for known in ("S. No.", "Shopify", "WooCommerce", "Google Merchant"):
        assert known in error["message"]
    assert table_counts(service) == (0, 0, 0, 0)


def test_a_named_format_whose_columns_are_missing_says_which(service):
    answer = upload(service.base_url, b"Handle,Title\nhat,Hat\n", input_format="shopify")
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "csv_missing_columns"
    assert "'Image Src'" in answer.json()["error"]["message"]
    bad = upload(service.base_url, b"Handle,Image Src\nhat,\n", input_format="magento")
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_input_format")
    assert table_counts(service) == (0, 0, 0, 0)


def test_a_blocked_image_address_in_an_export_is_refused_with_its_column(service):
    with canaries() as victims:
        victim = f"http://127.0.0.1:{victims.v4.port}/a.jpg"
        answer = upload(service.base_url, f"id,image_link\nA,{victim}\n".encode())
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["code"] == "blocked_address"
        assert error["details"] == [{"row": 2, "column": "image_link", "message": f"address not allowed: '{victim}'"}]
        assert victims.accepted == 0
    assert table_counts(service) == (0, 0, 0, 0)


# --- image packs ----------------------------------------------------------------------------------


def read_zip(response: requests.Response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(response.content))


def test_image_packs_name_files_plainly_or_as_amazon_wants_and_hold_the_stored_bytes(service, source_server):
    sources = Sources(source_server, ["back", "front", "mug", "missing_mug"])
    status, _ = run(service, filled(SHOPIFY, sources.urls).encode())
    pack_url = f"{service.base_url}/api/requests/{status['request_id']}/images.zip"
    stored = {
        image["input_url"]: requests.get(image["output_url"], timeout=10).content
        for product in status["products"]
        for image in product["images"]
        if image["output_url"]
    }

    plain = read_zip(requests.get(pack_url, timeout=30))
    assert plain.namelist() == ["red-tee_1.jpg", "red-tee_2.jpg", "mug_1.jpg"]
    assert plain.read("red-tee_1.jpg") == stored[sources.urls["front"]]
    assert plain.read("red-tee_2.jpg") == stored[sources.urls["back"]]
    assert plain.read("mug_1.jpg") == stored[sources.urls["mug"]]
    assert all(info.compress_type == zipfile.ZIP_STORED for info in plain.infolist())

    amazon = read_zip(requests.get(pack_url, params={"naming": "amazon", "identifier": "Variant SKU"}, timeout=30))
    assert amazon.namelist() == ["TEE1S.MAIN.jpg", "TEE1S.PT01.jpg", "MUG1.MAIN.jpg"]
    assert amazon.read("TEE1S.PT01.jpg") == stored[sources.urls["back"]]

    # The Handle holds a dash, which Amazon refuses: a JSON refusal, not the first bytes of a broken ZIP.
    refused = requests.get(pack_url, params={"naming": "amazon"}, timeout=30)
    assert refused.status_code == 422
    assert refused.headers["Content-Type"] == "application/json"
    error = refused.json()["error"]
    assert error["code"] == "pack_refused"
    assert error["details"][0]["product"] == "red-tee"
    unknown = requests.get(pack_url, params={"identifier": "ASIN"}, timeout=30)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "invalid_identifier")


def test_an_image_pack_over_its_bounds_is_refused_before_streaming(service, source_server, monkeypatch):
    import dataclasses

    sources = Sources(source_server, ["a", "b"])
    status, _ = run(service, filled('S. No.,Product Name,Input Image Urls\n1,Chair,"{a},{b}"\n', sources.urls).encode())
    pack_url = f"{service.base_url}/api/requests/{status['request_id']}/images.zip"
    settings = service.app.config["SETTINGS"]
    monkeypatch.setitem(service.app.config, "SETTINGS", dataclasses.replace(settings, zip_max_files=1))
    too_many = requests.get(pack_url, timeout=30)
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (413, "pack_too_large")
    monkeypatch.setitem(service.app.config, "SETTINGS", dataclasses.replace(settings, zip_max_bytes=1024))
    too_big = requests.get(pack_url, timeout=30)
    assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, "pack_too_large")
    monkeypatch.setitem(service.app.config, "SETTINGS", settings)
    assert read_zip(requests.get(pack_url, timeout=30)).namelist() == ["1_1.jpg", "1_2.jpg"]


# --- feeds by URL ---------------------------------------------------------------------------------


def test_a_feed_by_url_is_read_like_an_upload_and_sent_again_cheaply(service, source_server):
    sources = Sources(source_server, ["vase", "vase_back", "vase%2Cside", "missing_bowl"])
    body = filled(GOOGLE_CSV, sources.urls).encode()
    feed_url = serve(source_server, body, "text/csv", name="feed.csv")

    first = requests.post(f"{service.base_url}/api/upload", data={"feed_url": feed_url}, timeout=30)
    assert first.status_code == 202, first.text
    status = wait_final(service.base_url, first.json()["request_id"])
    assert (status["feed_url"], status["feed_sha256"]) == (feed_url, hashlib.sha256(body).hexdigest())
    assert status["file_name"] == "feed.csv"
    output = requests.get(status["output_csv_url"], timeout=30).content.decode()
    assert output == expected_output(GOOGLE_CSV, sources, status)

    again = requests.post(f"{service.base_url}/api/upload", data={"feed_url": feed_url}, timeout=30)
    assert again.status_code == 202, again.text
    second = wait_final(service.base_url, again.json()["request_id"])
    completed = [i for p in second["products"] for i in p["images"] if i["status"] == "COMPLETED"]
    assert completed and all(image["reused"] for image in completed)
    assert outputs_by_source(second) == outputs_by_source(status)


def test_a_feed_url_goes_through_the_guard(service, source_server):
    with canaries() as victims:
        answer = requests.post(
            f"{service.base_url}/api/upload",
            data={"feed_url": f"http://127.0.0.1:{victims.v4.port}/feed.csv"},
            timeout=30,
        )
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert (error["code"], error["details"][0]["field"]) == ("blocked_address", "feed_url")
        assert victims.accepted == 0

    def slow_feed(request) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "text/csv")
        request.send_header("Content-Length", "1000")
        request.end_headers()
        for _ in range(40):  # a byte every 0.5 s: each read is in time, the whole is not
            if request.stopping.is_set():
                return
            request.wfile.write(b"x")
            request.wfile.flush()
            time.sleep(0.5)

    started = time.monotonic()
    slow = requests.post(
        f"{service.base_url}/api/upload", data={"feed_url": serve(source_server, slow_feed)}, timeout=60
    )
    assert slow.status_code == 422, slow.text
    assert slow.json()["error"]["code"] == "feed_unavailable"
    assert time.monotonic() - started < 15  # FETCH_TOTAL_TIMEOUT_S is 5 here
    both = requests.post(
        f"{service.base_url}/api/upload",
        data={"feed_url": "http://127.0.0.2/x.csv"},
        files={"file": ("a.csv", b"x", "text/csv")},
        timeout=30,
    )
    assert (both.status_code, both.json()["error"]["code"]) == (400, "file_and_feed_url")
    assert table_counts(service) == (0, 0, 0, 0)


def test_a_big_export_left_to_the_import_task_comes_back_the_same(service, source_server, import_every_upload):
    sources = Sources(source_server, ["back", "front", "mug", "missing_mug"])
    status, output = run(service, filled(SHOPIFY, sources.urls).encode())
    assert status["created"]["status"] == "PENDING"
    assert [p["product_key"] for p in status["products"]] == ["red-tee", "mug"]
    assert output.decode("utf-8") == expected_output(SHOPIFY, sources, status)


def test_an_output_rendition_must_name_a_rendition_of_the_request(service, source_server):
    data = filled("id,image_link\nA,{a}\n", Sources(source_server, ["a"]).urls).encode()
    plain = upload(service.base_url, data, output_rendition="thumb")
    assert (plain.status_code, plain.json()["error"]["code"]) == (422, "invalid_output_rendition")
    unknown = upload(service.base_url, data, renditions="main:300", output_rendition="zoom")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (422, "invalid_output_rendition")
    assert "main" in unknown.json()["error"]["message"]
    mode = upload(service.base_url, data, output_mode="both")
    assert (mode.status_code, mode.json()["error"]["code"]) == (422, "invalid_output_mode")
    assert table_counts(service) == (0, 0, 0, 0)
