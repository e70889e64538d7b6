"""The OpenAPI document against the app it describes: valid 3.1, complete, its examples and the live answers
conforming (a Shopify export's status and image packs, and a feed_url upload, among them), schemathesis
against the live service, and Swagger UI served offline."""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import zipfile

import jsonschema
import pytest
import requests
from openapi_spec_validator import validate
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes
from support.loopback import serve, wait_until

from web.docs_routes import openapi_document

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

METHODS = {"get", "post", "put", "patch", "delete"}


def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def _resolved(node, document):
    """``node`` with every local $ref replaced by what it names."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _resolved({**target, **{k: v for k, v in node.items() if k != "$ref"}}, document)
        return {key: _resolved(value, document) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolved(item, document) for item in node]
    return node


def _response_schema(path: str, method: str, status: int) -> dict:
    document = openapi_document()
    response = _resolved(document["paths"][path][method]["responses"][str(status)], document)
    return response["content"]["application/json"]["schema"]


def _conforms(answer: requests.Response, path: str, method: str) -> dict:
    body = answer.json()
    jsonschema.Draft202012Validator(_response_schema(path, method, answer.status_code)).validate(body)
    return body


def test_document_is_valid_openapi_3_1():
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_is_documented_and_every_documented_operation_exists(service):
    served = {
        (_openapi_path(rule.rule), method.lower())
        for rule in service.app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods
        if method.lower() in METHODS
    }
    documented = {
        (path, method) for path, item in openapi_document()["paths"].items() for method in item if method in METHODS
    }
    assert served - documented == set()
    assert documented - served == set()


def _examples(node, document, found):
    if isinstance(node, dict):
        if "schema" in node and "example" in node:
            found.append((_resolved(node["schema"], document), node["example"]))
        if "schema" in node and isinstance(node.get("examples"), dict):
            found += [(_resolved(node["schema"], document), item["value"]) for item in node["examples"].values()]
        for value in node.values():
            _examples(value, document, found)
    elif isinstance(node, list):
        for item in node:
            _examples(item, document, found)


def test_every_example_validates_against_its_schema():
    document = openapi_document()
    found: list = []
    _examples(document, document, found)
    assert len(found) >= 7  # the planned status and the webhook's among them
    for schema, example in found:
        jsonschema.Draft202012Validator(schema).validate(example)


def test_live_answers_match_the_documented_schemas(service, source_server):
    source_server.route("/ok.jpg", respond(200, jpeg_bytes((64, 64)), {"Content-Type": "image/jpeg"}))
    source_server.route("/gone.jpg", respond(404, b"", {}))
    base = service.base_url
    created = upload(base, csv_of([(1, "Shoe", [source_server.url("/ok.jpg"), source_server.url("/gone.jpg")])]))
    assert created.status_code == 202
    accepted = _conforms(created, "/api/upload", "post")
    request_id = accepted["request_id"]
    wait_final(base, request_id)

    status = requests.get(f"{base}/api/status/{request_id}", timeout=10)
    body = _conforms(status, "/api/status/{request_id}", "get")
    assert body["status"] == "COMPLETED_WITH_ERRORS"
    _conforms(requests.get(f"{base}/api/requests", timeout=10), "/api/requests", "get")
    cancel = requests.post(f"{base}/api/requests/{request_id}/cancel", timeout=10)
    assert cancel.status_code == 409
    _conforms(cancel, "/api/requests/{request_id}/cancel", "post")
    retry = requests.post(f"{base}/api/requests/{request_id}/retry", json={"error_codes": ["http_404"]}, timeout=10)
    assert retry.status_code == 202
    _conforms(retry, "/api/requests/{request_id}/retry", "post")
    deliveries = requests.get(f"{base}/api/requests/{request_id}/webhook-deliveries", timeout=10)
    _conforms(deliveries, "/api/requests/{request_id}/webhook-deliveries", "get")
    missing = requests.get(f"{base}/api/status/{uuid.uuid4()}", timeout=10)
    assert missing.status_code == 404
    _conforms(missing, "/api/status/{request_id}", "get")
    bad_page = requests.get(f"{base}/api/requests?page=0", timeout=10)
    assert bad_page.status_code == 400
    _conforms(bad_page, "/api/requests", "get")


def _webhook_schema() -> dict:
    document = openapi_document()
    body = _resolved(document["webhooks"]["requestFinal"]["post"]["requestBody"], document)
    return body["content"]["application/json"]["schema"]


def test_live_answers_of_a_planned_request_match_the_documented_schemas(service, source_server, receiver):
    """An upload with a profile and renditions: its status (profile, renditions, compliance, each image's
    renditions and compliance report) and its webhook (data.totals) conform, and so do its refusals."""
    source_server.route("/small.jpg", respond(200, jpeg_bytes((400, 300)), {"Content-Type": "image/jpeg"}))
    source_server.route("/big.jpg", respond(200, jpeg_bytes((900, 700)), {"Content-Type": "image/jpeg"}))
    base = service.base_url
    urls = [source_server.url("/small.jpg"), source_server.url("/big.jpg")]
    created = upload(
        base,
        csv_of([(1, "Shoe", urls)]),
        profile="google_merchant",
        renditions="main:2048,zoom:1600,thumb:400x400:pad",
        webhook_url=receiver.url,
    )
    assert created.status_code == 202, created.text
    request_id = _conforms(created, "/api/upload", "post")["request_id"]
    wait_final(base, request_id)

    status = requests.get(f"{base}/api/status/{request_id}", timeout=10)
    body = _conforms(status, "/api/status/{request_id}", "get")
    assert body["status"] == "COMPLETED", body
    assert body["profile"] == "google_merchant" and body["duplicates"] is True
    assert [item["name"] for item in body["renditions"]] == ["main", "zoom", "thumb"]
    assert body["compliance"]["profile"] == "google_merchant" and body["compliance"]["checked"] == 2
    images = body["products"][0]["images"]
    for image in images:
        assert [item["name"] for item in image["renditions"]] == ["main", "zoom", "thumb"]
        assert image["renditions"][0]["url"] == image["output_url"]
        assert image["compliance"]["verdict"] in ("pass", "fixed")
    assert "min_size" in images[0]["compliance"]["source_failures"]  # 400x300 is below 500x500
    assert (images[1]["renditions"][2]["width"], images[1]["renditions"][2]["height"]) == (400, 400)
    assert wait_until(lambda: receiver.deliveries(), timeout_s=30)
    event = json.loads(receiver.deliveries()[0]["body"])
    jsonschema.Draft202012Validator(_webhook_schema()).validate(event)
    assert [item["name"] for item in event["data"]["totals"]["renditions"]] == ["main", "zoom", "thumb"]
    assert event["data"]["totals"]["compliance"] == body["compliance"]

    refused = upload(base, csv_of([(1, "Shoe", urls)]), profile="etsy")
    assert refused.status_code == 422
    assert _conforms(refused, "/api/upload", "post")["error"]["code"] == "unknown_profile"
    invalid = upload(base, csv_of([(1, "Shoe", urls)]), renditions="main:2048,thumb:400x0")
    assert invalid.status_code == 422
    error = _conforms(invalid, "/api/upload", "post")["error"]
    assert error["code"] == "invalid_option" and error["details"][0]["field"] == "renditions[1].height"


def _documented_response(path: str, method: str, status: int) -> dict:
    document = openapi_document()
    responses = document["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, which is not documented"
    return _resolved(responses[str(status)], document)


def _request_schema(media_type: str) -> dict:
    document = openapi_document()
    body = _resolved(document["paths"]["/api/upload"]["post"]["requestBody"], document)
    return body["content"][media_type]["schema"]


def _sent_conforms(media_type: str, form: dict) -> None:
    """The form an upload sends is one the document describes (``file`` as the text it holds)."""
    jsonschema.Draft202012Validator(_request_schema(media_type)).validate(form)


SHOPIFY_EXPORT = (
    "\ufeffHandle,Title,Variant SKU,Image Src,Image Position,Image Alt Text\r\n"
    'red-tee,"Tee, red",TEE1S,{back},2,Back of the tee\r\n'
    "red-tee,,TEE1M,{front},1,Front\r\n"
    "mug,Mug,MUG1,{mug},1,\r\n"
)


def _shopify_export(source_server) -> tuple[str, dict[str, str]]:
    urls = {
        name: serve(source_server, jpeg_bytes((320 + seed * 8, 240)), name=f"{name}.jpg")
        for seed, name in enumerate(("back", "front", "mug"))
    }
    text = SHOPIFY_EXPORT
    for name, url in urls.items():
        text = text.replace("{" + name + "}", url)
    return text, urls


def test_live_answers_of_a_shopify_export_and_its_image_packs_match_the_documented_schemas(service, source_server):
    """A Shopify export uploaded with input_format=shopify: its 202, its status (request- and product-level
    catalog fields) and its images.zip answers (the ZIPs, plain and for Amazon, and every refusal) conform."""
    base = service.base_url
    export, urls = _shopify_export(source_server)
    form = {"input_format": "shopify"}
    _sent_conforms("multipart/form-data", form | {"file": export})
    created = requests.post(
        f"{base}/api/upload",
        files={"file": ("products_export.csv", export.encode(), "text/csv")},
        data=form,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    accepted = _conforms(created, "/api/upload", "post")
    assert accepted["input_format"] == "shopify" and (accepted["products"], accepted["images"]) == (2, 3)
    request_id = accepted["request_id"]
    wait_final(base, request_id)

    status = requests.get(f"{base}/api/status/{request_id}", timeout=10)
    body = _conforms(status, "/api/status/{request_id}", "get")
    assert body["status"] == "COMPLETED", body
    assert (body["input_format"], body["product_key"], body["output_mode"]) == ("shopify", "Handle", "replace")
    assert (body["output_rendition"], body["feed_url"], body["feed_sha256"]) == (None, None, None)
    assert [product["product_key"] for product in body["products"]] == ["red-tee", "mug"]
    assert [image["input_url"] for image in body["products"][0]["images"]] == [urls["front"], urls["back"]]

    pack_url = f"{base}/api/requests/{request_id}/images.zip"
    pack_path = "/api/requests/{request_id}/images.zip"
    for params, names in (
        ({}, ["red-tee_1.jpg", "red-tee_2.jpg", "mug_1.jpg"]),
        ({"naming": "amazon", "identifier": "Variant SKU"}, ["TEE1S.MAIN.jpg", "TEE1S.PT01.jpg", "MUG1.MAIN.jpg"]),
    ):
        answer = requests.get(pack_url, params=params, timeout=30)
        assert answer.status_code == 200, answer.text
        documented = _documented_response(pack_path, "get", 200)
        assert answer.headers["Content-Type"] in documented["content"], answer.headers["Content-Type"]
        assert set(documented["headers"]) <= set(answer.headers)
        assert answer.headers["Content-Disposition"].startswith("attachment; filename=")
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        assert archive.namelist() == names
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())

    refusals = (
        ({"naming": "amazon"}, 422, "pack_refused"),  # a Handle holds a dash, which Amazon refuses
        ({"naming": "tiff"}, 400, "invalid_naming"),
        ({"identifier": "ASIN"}, 422, "invalid_identifier"),
        ({"rendition": "zoom"}, 422, "invalid_rendition"),
    )
    for params, code, error_code in refusals:
        refused = requests.get(pack_url, params=params, timeout=30)
        assert refused.status_code == code, refused.text
        assert _conforms(refused, pack_path, "get")["error"]["code"] == error_code
    details = requests.get(pack_url, params={"naming": "amazon"}, timeout=30).json()["error"]["details"]
    assert details[0]["product"] == "red-tee" and details[0]["message"]

    bad_format = upload(base, export.encode(), input_format="magento")
    assert bad_format.status_code == 422
    assert _conforms(bad_format, "/api/upload", "post")["error"]["code"] == "invalid_input_format"
    bad_mode = upload(base, export.encode(), output_mode="overwrite")
    assert bad_mode.status_code == 422
    assert _conforms(bad_mode, "/api/upload", "post")["error"]["code"] == "invalid_output_mode"
    bad_rendition = upload(base, export.encode(), output_rendition="thumb")
    assert bad_rendition.status_code == 422
    assert _conforms(bad_rendition, "/api/upload", "post")["error"]["code"] == "invalid_output_rendition"
    unplaced = upload(base, b"sku,picture\nA1,http://127.0.0.2/a.jpg\n")
    assert unplaced.status_code == 422
    assert _conforms(unplaced, "/api/upload", "post")["error"]["code"] == "csv_missing_columns"


def test_live_answers_of_a_feed_url_upload_and_an_empty_pack_match_the_documented_schemas(service, source_server):
    """feed_url sent as application/x-www-form-urlencoded: the 202 and the status (feed_url, feed_sha256)
    conform; so do its refusals, and images.zip of a request whose every image failed (409 pack_empty)."""
    base = service.base_url
    export, _ = _shopify_export(source_server)
    feed_url = serve(source_server, export.encode(), "text/csv", name="products_export.csv")
    form = {"feed_url": feed_url, "output_mode": "append"}
    _sent_conforms("application/x-www-form-urlencoded", form)
    _sent_conforms("multipart/form-data", form)
    with pytest.raises(jsonschema.ValidationError):  # not both
        _sent_conforms("multipart/form-data", form | {"file": export})
    with pytest.raises(jsonschema.ValidationError):  # without a file, the feed_url is required
        _sent_conforms("application/x-www-form-urlencoded", {"input_format": "shopify"})

    created = requests.post(f"{base}/api/upload", data=form, timeout=30)
    assert created.status_code == 202, created.text
    assert created.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    accepted = _conforms(created, "/api/upload", "post")
    assert accepted["input_format"] == "shopify"
    wait_final(base, accepted["request_id"])
    status = requests.get(f"{base}/api/status/{accepted['request_id']}", timeout=10)
    body = _conforms(status, "/api/status/{request_id}", "get")
    assert (body["feed_url"], body["file_name"], body["output_mode"]) == (feed_url, "products_export.csv", "append")
    assert body["feed_sha256"] == hashlib.sha256(export.encode()).hexdigest()

    both = requests.post(
        f"{base}/api/upload", data={"feed_url": feed_url}, files={"file": ("a.csv", b"x", "text/csv")}, timeout=30
    )
    assert both.status_code == 400
    assert _conforms(both, "/api/upload", "post")["error"]["code"] == "file_and_feed_url"
    not_a_url = requests.post(f"{base}/api/upload", data={"feed_url": "products.csv"}, timeout=30)
    assert not_a_url.status_code == 400
    assert _conforms(not_a_url, "/api/upload", "post")["error"]["code"] == "invalid_feed_url"
    gone = requests.post(
        f"{base}/api/upload", data={"feed_url": serve(source_server, respond(404, b"", {}), name="x.csv")}, timeout=30
    )
    assert gone.status_code == 422
    assert _conforms(gone, "/api/upload", "post")["error"]["code"] == "feed_unavailable"

    source_server.route("/gone.jpg", respond(404, b"", {}))
    failed = upload(base, csv_of([(1, "Shoe", [source_server.url("/gone.jpg")])]))
    assert failed.status_code == 202, failed.text
    assert wait_final(base, failed.json()["request_id"])["status"] == "FAILED"
    empty = requests.get(f"{base}/api/requests/{failed.json()['request_id']}/images.zip", timeout=30)
    assert empty.status_code == 409
    assert _conforms(empty, "/api/requests/{request_id}/images.zip", "get")["error"]["code"] == "pack_empty"


def test_schemathesis_finds_no_server_error_nor_undocumented_answer(service):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_url(service.url("/api/openapi.json"))
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=10,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case):
            # An events stream of an existing request could stay open: every request has a timeout.
            response = case.call(base_url=service.base_url, timeout=10)
            case.validate_response(
                response, checks=(not_a_server_error, response_schema_conformance, status_code_conformance)
            )

        try:
            check()
        except Exception as error:
            failures.append(f"{operation.label}: {str(error)[:1500]}")
    assert failures == []


def test_swagger_ui_is_served_offline(service):
    page = requests.get(service.url("/api/docs"), timeout=10)
    assert page.status_code == 200
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//", page.text)
    for asset in re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text):
        assert requests.get(service.url(asset), timeout=10).status_code == 200, asset


def test_docs_stay_readable_with_api_keys(monkeypatch, service):
    monkeypatch.setitem(service.app.extensions, "api_key_hashes", ("0" * 64,))
    for path in ("/api/openapi.json", "/api/docs", "/api/docs/swagger-ui.css"):
        assert requests.get(service.url(path), timeout=10).status_code == 200, path
    assert requests.get(service.url("/api/requests"), timeout=10).status_code == 401
