"""The OpenAPI document against the app it describes: valid 3.1, complete, its examples and the live answers
conforming, schemathesis against the live service, and Swagger UI served offline."""

from __future__ import annotations

import json
import re
import uuid

import jsonschema
import pytest
import requests
from openapi_spec_validator import validate
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes
from support.loopback import wait_until

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
