"""API keys and rate limits, seen from outside over HTTP."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes
from support.loopback import wait_until
from support.services import ApiServer

from delivery import signing

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

KEY_A, KEY_B = "tenant-a-" + uuid.uuid4().hex, "tenant-b-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def keyed_api(service):
    """A second API process-alike with API_KEYS set, on the same database and broker as the worker."""
    from app import create_app

    server = ApiServer()
    server.start(create_app({"api_keys": (KEY_A, KEY_B), "public_base_url": server.base_url}))
    yield server.base_url
    server.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_no_key_and_wrong_key_are_refused(keyed_api, source_server):
    csv_bytes = csv_of([(1, "A", [source_server.url("/x.jpg")])])
    for headers in ({}, bearer("not-a-key"), {"X-API-Key": "not-a-key"}, {"Authorization": "Basic abc"}):
        assert_error(upload(keyed_api, csv_bytes, headers=headers), 401, "unauthorized")
        assert_error(requests.get(f"{keyed_api}/api/requests", headers=headers, timeout=10), 401, "unauthorized")
    assert requests.get(f"{keyed_api}/api/requests", timeout=10).headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{keyed_api}/healthz", timeout=10).status_code == 200


def test_a_request_belongs_to_the_key_that_created_it(keyed_api, source_server, receiver):
    path = f"/{uuid.uuid4().hex}.jpg"
    source_server.route(path, respond(200, jpeg_bytes(), {"Content-Type": "image/jpeg"}))
    created = upload(
        keyed_api, csv_of([(1, "A", [source_server.url(path)])]), headers=bearer(KEY_A), webhook_url=receiver.url
    )
    assert created.status_code == 202, created.text
    request_id = created.json()["request_id"]
    status = wait_final(keyed_api, request_id, headers={"X-API-Key": KEY_A})
    assert status["status"] == "COMPLETED"

    for method, path_ in [
        ("GET", f"/api/status/{request_id}"),
        ("GET", f"/api/requests/{request_id}/output.csv"),
        ("GET", f"/api/requests/{request_id}/webhook-deliveries"),
        ("POST", f"/api/requests/{request_id}/webhook-deliveries"),
    ]:
        other = requests.request(method, keyed_api + path_, headers=bearer(KEY_B), timeout=10)
        assert_error(other, 404, "request_not_found")
        own = requests.request(method, keyed_api + path_, headers=bearer(KEY_A), timeout=10)
        assert own.status_code in (200, 202), own.text

    listed_a = requests.get(f"{keyed_api}/api/requests", headers=bearer(KEY_A), timeout=10).json()
    listed_b = requests.get(f"{keyed_api}/api/requests", headers=bearer(KEY_B), timeout=10).json()
    assert [r["request_id"] for r in listed_a["requests"]] == [request_id]
    assert listed_b["requests"] == [] and listed_b["pagination"]["total"] == 0
    # Output images stay reachable by their unguessable URLs, with no key.
    output_url = status["products"][0]["images"][0]["output_url"]
    assert requests.get(output_url, timeout=10).status_code == 200


def test_keys_are_stored_only_as_hashes(keyed_api, service):
    from models import Request, db

    upload(keyed_api, csv_of([(1, "A", ["http://127.0.0.2:9/x.jpg"])]), headers=bearer(KEY_A))
    with service.app.app_context():
        owners = db.session.scalars(db.select(Request.owner_key_hash)).all()
        db.session.remove()
    assert owners and all(owner and KEY_A not in owner and len(owner) == 64 for owner in owners)


def test_open_service_says_so_at_start(service, caplog):
    from app import create_app

    with caplog.at_level(logging.WARNING, logger="access.api_keys"):
        create_app()
    assert "API_KEYS is not set" in caplog.text


def test_a_process_started_after_the_migrations_says_it_at_debug(service, caplog):
    """make run's migrations warn of an open service once; the processes started after them note it at DEBUG."""
    from app import create_app

    with caplog.at_level(logging.DEBUG, logger="access.api_keys"):
        create_app({"startup_warnings": False})
    said = [record for record in caplog.records if "API_KEYS is not set" in record.getMessage()]
    assert [record.levelno for record in said] == [logging.DEBUG]


def test_rate_limits_answer_429_with_retry_after(service, source_server):
    from app import create_app

    server = ApiServer()
    server.start(
        create_app({"api_keys": (KEY_A, KEY_B), "rate_limit_reads": "3/minute", "rate_limit_uploads": "1/minute"})
    )
    try:
        url = f"{server.base_url}/api/requests"
        answers = [requests.get(url, headers=bearer(KEY_A), timeout=10) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert_error(answers[3], 429, "rate_limited")
        assert int(answers[3].headers["Retry-After"]) > 0
        # Limits are per key: another tenant is not throttled by the first one's polling.
        assert requests.get(url, headers=bearer(KEY_B), timeout=10).status_code == 200
        csv_bytes = csv_of([(1, "A", ["http://127.0.0.2:9/x.jpg"])])
        uploads = [upload(server.base_url, csv_bytes, headers=bearer(KEY_B)).status_code for _ in range(2)]
        assert uploads == [202, 429]
    finally:
        server.stop()


def webhook_secret(base_url: str, key: str) -> str:
    answer = requests.get(f"{base_url}/api/webhook-secret", headers=bearer(key), timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.json()["secret"]


def about(request_id: str) -> bytes:
    return json.dumps({"type": "request.completed", "data": {"request_id": request_id}}).encode()


def received_ids(base_url: str, key: str) -> list[str]:
    answer = requests.get(f"{base_url}/api/webhooks/received", headers=bearer(key), timeout=10)
    assert answer.status_code == 200, answer.text
    return [r["webhook_id"] for r in answer.json()["received"]]


def test_received_webhooks_are_shown_only_to_their_requests_owner(keyed_api, service):
    created = upload(keyed_api, csv_of([(1, "A", ["http://127.0.0.2:9/x.jpg"])]), headers=bearer(KEY_A))
    body = about(created.json()["request_id"])
    headers = signing.signed_headers(webhook_secret(keyed_api, KEY_A), "msg_owned", body)
    # The receiver itself needs no key: the signature is what it checks.
    assert requests.post(f"{keyed_api}/api/webhooks/receive", data=body, headers=headers, timeout=10).ok

    assert received_ids(keyed_api, KEY_A) == ["msg_owned"]
    assert received_ids(keyed_api, KEY_B) == []


def test_each_tenant_signs_and_verifies_with_a_secret_of_its_own(keyed_api, service, source_server, receiver):
    path = f"/{uuid.uuid4().hex}.jpg"
    source_server.route(path, respond(200, jpeg_bytes((64, 48)), {"Content-Type": "image/jpeg"}))
    created = upload(
        keyed_api, csv_of([(1, "A", [source_server.url(path)])]), headers=bearer(KEY_A), webhook_url=receiver.url
    )
    assert created.status_code == 202, created.text
    wait_final(keyed_api, created.json()["request_id"], headers=bearer(KEY_A))
    assert wait_until(lambda: len(receiver.deliveries()) == 1, timeout_s=20)
    delivery = receiver.deliveries()[0]
    headers = {k: v for k, v in delivery["headers"].items() if k.startswith("webhook-")}

    secret_a, secret_b = webhook_secret(keyed_api, KEY_A), webhook_secret(keyed_api, KEY_B)
    assert secret_a.startswith("whsec_") and secret_b.startswith("whsec_")
    assert len({secret_a, secret_b, service.env["WEBHOOK_SECRET"]}) == 3
    assert Webhook(secret_a).verify(delivery["body"], headers)["data"]["request_id"] == created.json()["request_id"]
    for other in (secret_b, service.env["WEBHOOK_SECRET"]):
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(delivery["body"], headers)
    assert_error(requests.get(f"{keyed_api}/api/webhook-secret", timeout=10), 401, "unauthorized")


def test_builtin_receiver_refuses_a_webhook_forged_by_another_tenant(keyed_api, service):
    created = upload(keyed_api, csv_of([(1, "B", ["http://127.0.0.2:9/x.jpg"])]), headers=bearer(KEY_B))
    body = about(created.json()["request_id"])
    receive = f"{keyed_api}/api/webhooks/receive"
    # Tenant A signs a payload about B's request: with its own secret, and with the one secret every
    # tenant used to hold.
    for forger, secret in (("a", webhook_secret(keyed_api, KEY_A)), ("service", service.env["WEBHOOK_SECRET"])):
        headers = signing.signed_headers(secret, f"msg_forged_by_{forger}", body)
        assert_error(requests.post(receive, data=body, headers=headers, timeout=10), 401, "invalid_signature")
    assert received_ids(keyed_api, KEY_B) == []

    genuine = signing.signed_headers(webhook_secret(keyed_api, KEY_B), "msg_genuine", body)
    assert requests.post(receive, data=body, headers=genuine, timeout=10).status_code == 200
    assert received_ids(keyed_api, KEY_B) == ["msg_genuine"]
    assert received_ids(keyed_api, KEY_A) == []


def test_behind_a_trusted_proxy_limits_key_on_the_forwarded_client(service):
    from app import create_app

    app = create_app({"rate_limit_reads": "2/minute", "trusted_proxies": 1})
    client = app.test_client()

    def read(forwarded_for: str) -> int:
        return client.get("/api/requests", headers={"X-Forwarded-For": forwarded_for}).status_code

    assert [read("203.0.113.7") for _ in range(3)] == [200, 200, 429]
    assert read("198.51.100.9") == 200  # another client behind the same proxy


def test_failed_key_attempts_are_limited_per_client_address(service):
    from app import create_app

    # Behind a trusted proxy, so that the test client, all 127.0.0.1, can speak for several addresses.
    app = create_app({"api_keys": (KEY_A,), "rate_limit_auth_failures": "3/2 seconds", "trusted_proxies": 1})
    client = app.test_client()
    suffix = uuid.uuid4().int % 200 + 1
    attacker, neighbour, keyless = f"203.0.113.{suffix}", f"198.51.100.{suffix}", f"192.0.2.{suffix}"

    def read(address: str, headers: dict[str, str]):
        return client.get("/api/requests", headers={"X-Forwarded-For": address, **headers})

    assert [read(attacker, bearer(f"guess-{n}")).status_code for n in range(3)] == [401, 401, 401]
    blocked = read(attacker, bearer("guess-4"))
    assert blocked.status_code == 429 and blocked.json["error"]["code"] == "rate_limited"
    assert 0 < int(blocked.headers["Retry-After"]) <= 3
    # Refused before the key is looked at, so a guess that happens to be right tells nothing either.
    assert read(attacker, bearer(KEY_A)).status_code == 429
    # Another address has its own attempts; a caller without a key is not guessing one.
    assert read(neighbour, bearer(KEY_A)).status_code == 200
    assert read(neighbour, bearer("guess")).status_code == 401
    assert [read(keyless, {}).status_code for _ in range(5)] == [401] * 5
    assert read(keyless, bearer(KEY_A)).status_code == 200

    time.sleep(2.2)  # the window passes
    assert read(attacker, bearer(KEY_A)).status_code == 200


def test_builtin_receiver_refuses_unsigned_bodies_of_any_shape(keyed_api):
    receive = f"{keyed_api}/api/webhooks/receive"
    for body in (b"", b"not json", b"\xff\xfe", b"[" * 100_000, b'{"data": {"request_id": "not-a-uuid"}}'):
        answer = requests.post(receive, data=body, headers={"webhook-signature": "v1,AAAA"}, timeout=10)
        assert_error(answer, 401, "invalid_signature")


def test_an_idempotency_key_belongs_to_its_caller(keyed_api, source_server):
    path = f"/{uuid.uuid4().hex}.jpg"
    source_server.route(path, respond(200, jpeg_bytes(), {"Content-Type": "image/jpeg"}))
    csv_bytes = csv_of([(1, "A", [source_server.url(path)])])
    same_key = {"Idempotency-Key": "nightly-import"}

    first_a = upload(keyed_api, csv_bytes, headers={**bearer(KEY_A), **same_key})
    first_b = upload(keyed_api, csv_bytes, headers={**bearer(KEY_B), **same_key})
    again_a = upload(keyed_api, csv_bytes, headers={**bearer(KEY_A), **same_key})

    assert (first_a.status_code, first_b.status_code, again_a.status_code) == (202, 202, 200)
    assert first_b.json()["request_id"] != first_a.json()["request_id"]
    assert again_a.json()["request_id"] == first_a.json()["request_id"]
    other = requests.post(
        f"{keyed_api}/api/requests/{first_a.json()['request_id']}/cancel", headers=bearer(KEY_B), timeout=10
    )
    assert_error(other, 404, "request_not_found")


def test_outputs_are_reused_within_a_tenant_and_never_across_tenants(keyed_api, source_server):
    path = f"/{uuid.uuid4().hex}.jpg"
    conditional: list[str | None] = []

    def versioned(request) -> None:
        conditional.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"v1"':
            request.send(304, b"", {"ETag": '"v1"'})
        else:
            request.send(200, jpeg_bytes((320, 240)), {"Content-Type": "image/jpeg", "ETag": '"v1"'})

    source_server.route(path, versioned)
    body = csv_of([(1, "A", [source_server.url(path)])])

    def image_of(key: str) -> dict:
        created = upload(keyed_api, body, headers=bearer(key))
        assert created.status_code == 202, created.text
        final = wait_final(keyed_api, created.json()["request_id"], headers=bearer(key))
        assert final["status"] == "COMPLETED", final
        return final["products"][0]["images"][0]

    first_a, first_b, second_b = image_of(KEY_A), image_of(KEY_B), image_of(KEY_B)

    # B's first sighting knows nothing of A's: a plain download, its own encode, another unguessable URL.
    assert conditional == [None, None, '"v1"']
    assert (first_a["reused"], first_b["reused"], second_b["reused"]) == (False, False, True)
    assert first_b["output_url"] != first_a["output_url"] and second_b["output_url"] == first_b["output_url"]
