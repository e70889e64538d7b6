"""The whole flow over HTTP: upload, a real worker, status, output images and CSV, the webhook."""

from __future__ import annotations

import csv
import io
import json
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image
from standardwebhooks.webhooks import Webhook
from support.api import csv_of, upload, wait_final
from support.images import jpeg_bytes, png_with_alpha
from support.loopback import serve, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

# libjpeg's luminance table at quality 50 is the IJG standard table itself.
STANDARD_LUMINANCE_FIRST_ROW = [16, 11, 10, 16, 24, 40, 51, 61]


def verify_webhook(service, delivery) -> dict:
    headers = {k: v for k, v in delivery["headers"].items() if k.startswith("webhook-")}
    return Webhook(service.env["WEBHOOK_SECRET"]).verify(delivery["body"], headers)


def test_upload_to_webhook(service, source_server, receiver):
    rotated = serve(source_server, jpeg_bytes((400, 200), exif=_exif_orientation(6)), name="rotated.jpg")
    alpha = serve(source_server, png_with_alpha(), "image/png", name="alpha.png")
    plain = serve(source_server, jpeg_bytes((1200, 900)), name="plain.jpg")
    csv_bytes = csv_of([(1, "SKU1", [rotated, alpha]), (2, "=SKU2", [plain, rotated])])

    response = upload(service.base_url, csv_bytes, webhook_url=receiver.url)

    assert response.status_code == 202, response.text
    body = response.json()
    request_id = body["request_id"]
    assert uuid.UUID(request_id).version == 4
    assert body["status"] == "PENDING"
    assert (body["products"], body["images"]) == (2, 4)
    assert response.headers["Location"] == body["status_url"] == f"{service.base_url}/api/status/{request_id}"
    assert body["output_csv_url"] == f"{service.base_url}/api/requests/{request_id}/output.csv"

    status = wait_final(service.base_url, request_id)
    assert status["status"] == "COMPLETED"
    assert status["progress"] == {
        "total_images": 4,
        "completed_images": 4,
        "failed_images": 0,
        "pending_images": 0,
        "percent": 100.0,
    }
    assert status["completed_at"] is not None
    assert [p["serial_number"] for p in status["products"]] == [1, 2]
    assert [i["input_url"] for i in status["products"][0]["images"]] == [rotated, alpha]
    # The same URL in two products is downloaded once and shares its output.
    assert source_server.hits(urlsplit(rotated).path) == 1
    assert status["products"][0]["images"][0]["output_url"] == status["products"][1]["images"][1]["output_url"]

    outputs = {}
    for product in status["products"]:
        assert product["status"] == "COMPLETED"
        for image in product["images"]:
            assert image["status"] == "COMPLETED" and image["error"] is None
            fetched = requests.get(image["output_url"], timeout=10)
            assert fetched.status_code == 200
            assert fetched.headers["Content-Type"] == "image/jpeg"
            decoded = Image.open(io.BytesIO(fetched.content))
            assert decoded.format == "JPEG" and decoded.mode == "RGB"
            assert decoded.quantization[0][:8] == STANDARD_LUMINANCE_FIRST_ROW
            outputs[image["input_url"]] = decoded
    assert outputs[rotated].size == (200, 400)  # EXIF orientation 6 applied
    assert outputs[alpha].getpixel((250, 100))[0] > 240  # transparent half flattened onto white

    csv_response = requests.get(body["output_csv_url"], timeout=10)
    assert csv_response.status_code == 200
    assert csv_response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(csv_response.text)))
    assert rows[0] == ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls"]
    assert rows[1][:3] == ["1", "SKU1", f"{rotated},{alpha}"]
    assert rows[2][1] == "'=SKU2"  # a formula is neutralised
    first_outputs = [i["output_url"] for i in status["products"][0]["images"]]
    assert rows[1][3].split(",") == first_outputs

    deliveries = _wait_deliveries(receiver, 1)
    payload = verify_webhook(service, deliveries[0])
    assert payload["type"] == "request.completed"
    assert payload["data"]["request_id"] == request_id
    assert payload["data"]["status"] == "COMPLETED"
    assert payload["data"]["output_csv_url"] == body["output_csv_url"]

    def delivery_log() -> dict:
        return requests.get(f"{service.base_url}/api/requests/{request_id}/webhook-deliveries", timeout=10).json()

    # The worker records the attempt once the receiver has answered: a moment after it arrived.
    wait_until(lambda: [e["status"] for e in delivery_log()["events"]] == ["DELIVERED"], 10)
    log = delivery_log()
    assert [e["status"] for e in log["events"]] == ["DELIVERED"]
    assert log["events"][0]["webhook_id"] == deliveries[0]["headers"]["webhook-id"]
    assert [(a["attempt"], a["status_code"]) for a in log["events"][0]["attempts"]] == [(1, 200)]


def test_partial_failure_keeps_positions(service, source_server, receiver):
    good = serve(source_server, jpeg_bytes())
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")
    html = serve(source_server, b"<html><body>not a photo</body></html>", "image/jpeg")
    response = upload(service.base_url, csv_of([(1, "A", [missing, good, html])]), webhook_url=receiver.url)
    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]

    status = wait_final(service.base_url, request_id)

    assert status["status"] == "COMPLETED_WITH_ERRORS"
    images = status["products"][0]["images"]
    assert [i["status"] for i in images] == ["FAILED", "COMPLETED", "FAILED"]
    assert images[0]["error"]["code"] == "http_404"
    assert images[2]["error"]["code"] == "not_an_image"
    assert all(i["error"]["message"] for i in (images[0], images[2]))
    assert status["products"][0]["status"] == "COMPLETED_WITH_ERRORS"
    rows = list(csv.reader(io.StringIO(requests.get(status["output_csv_url"], timeout=10).text)))
    assert rows[1][3] == f",{images[1]['output_url']},"
    payload = verify_webhook(service, _wait_deliveries(receiver, 1)[0])
    assert payload["data"]["status"] == "COMPLETED_WITH_ERRORS"


def test_all_failed(service, source_server, receiver):
    urls = [source_server.url(f"/{uuid.uuid4().hex}/gone.jpg") for _ in range(3)]
    response = upload(service.base_url, csv_of([(1, "A", urls[:2]), (2, "B", urls[2:])]), webhook_url=receiver.url)
    request_id = response.json()["request_id"]

    status = wait_final(service.base_url, request_id)

    assert status["status"] == "FAILED"
    assert status["progress"]["failed_images"] == 3
    assert [p["status"] for p in status["products"]] == ["FAILED", "FAILED"]
    payload = verify_webhook(service, _wait_deliveries(receiver, 1)[0])
    assert payload["data"]["status"] == "FAILED"


def test_quality_and_max_dimension(service, source_server):
    source = serve(source_server, jpeg_bytes((1600, 1200)))
    response = upload(service.base_url, csv_of([(1, "A", [source])]), quality="90", max_dimension="400")
    status = wait_final(service.base_url, response.json()["request_id"])
    assert status["quality"] == 90 and status["max_dimension"] == 400
    output = Image.open(io.BytesIO(requests.get(status["products"][0]["images"][0]["output_url"], timeout=10).content))
    assert output.size == (400, 300)
    assert output.quantization[0][0] == 3  # libjpeg scales 16 by 20% at quality 90


def test_output_csv_is_409_until_final(service, source_server):
    from support.handlers import drip

    path = f"/{uuid.uuid4().hex}/slow.jpg"
    source_server.route(path, drip(jpeg_bytes((64, 64)), 0.002))
    response = upload(service.base_url, csv_of([(1, "A", [source_server.url(path)])]))
    request_id = response.json()["request_id"]
    early = requests.get(f"{service.base_url}/api/requests/{request_id}/output.csv", timeout=10)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "not_ready"
    wait_final(service.base_url, request_id)
    assert requests.get(f"{service.base_url}/api/requests/{request_id}/output.csv", timeout=10).status_code == 200


def test_webhook_retried_until_accepted(service, source_server, receiver):
    receiver.answer_with(500, 503)
    source = serve(source_server, jpeg_bytes())
    request_id = upload(service.base_url, csv_of([(1, "A", [source])]), webhook_url=receiver.url).json()["request_id"]
    wait_final(service.base_url, request_id)

    deliveries = _wait_deliveries(receiver, 3)

    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1
    for delivery in deliveries:
        verify_webhook(service, delivery)
    log = _wait_delivered(service, request_id)
    event = log["events"][0]
    assert [a["status_code"] for a in event["attempts"]] == [500, 503, 200]
    assert event["status"] == "DELIVERED"


def test_webhook_resend(service, source_server, receiver):
    source = serve(source_server, jpeg_bytes())
    request_id = upload(service.base_url, csv_of([(1, "A", [source])]), webhook_url=receiver.url).json()["request_id"]
    wait_final(service.base_url, request_id)
    _wait_delivered(service, request_id)

    resent = requests.post(f"{service.base_url}/api/requests/{request_id}/webhook-deliveries", timeout=10)

    assert resent.status_code == 202
    deliveries = _wait_deliveries(receiver, 2)
    assert deliveries[0]["headers"]["webhook-id"] == deliveries[1]["headers"]["webhook-id"]


def test_builtin_receiver_sees_the_webhook(service, source_server):
    source = serve(source_server, jpeg_bytes())
    own_receiver = f"{service.base_url}/api/webhooks/receive"
    # The API listens on 127.0.0.1, which the test settings forbid; the receiver is exercised directly.
    request_id = upload(service.base_url, csv_of([(1, "A", [source])])).json()["request_id"]
    wait_final(service.base_url, request_id)
    body = json.dumps({"type": "request.completed", "data": {"request_id": request_id}}).encode()
    from delivery import signing

    headers = signing.signed_headers(service.env["WEBHOOK_SECRET"], "msg_test", body)
    accepted = requests.post(own_receiver, data=body, headers=headers, timeout=10)
    forged = requests.post(own_receiver, data=body, headers={**headers, "webhook-signature": "v1,AAAA"}, timeout=10)

    assert accepted.status_code == 200
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_signature"
    received = requests.get(f"{service.base_url}/api/webhooks/received", timeout=10).json()["received"]
    assert [r["webhook_id"] for r in received] == ["msg_test"]


def test_pagination_and_list(service, source_server):
    source = serve(source_server, jpeg_bytes((32, 32)))
    rows = [(n, f"P{n}", [source]) for n in range(1, 6)]
    request_id = upload(service.base_url, csv_of(rows)).json()["request_id"]
    wait_final(service.base_url, request_id)

    page = requests.get(f"{service.base_url}/api/status/{request_id}?page=3&per_page=2", timeout=10).json()
    past = requests.get(f"{service.base_url}/api/status/{request_id}?page=9&per_page=2", timeout=10).json()
    bad = requests.get(f"{service.base_url}/api/status/{request_id}?per_page=1001", timeout=10)
    listing = requests.get(f"{service.base_url}/api/requests?per_page=1", timeout=10).json()

    assert [p["serial_number"] for p in page["products"]] == [5]
    assert page["pagination"] == {"page": 3, "per_page": 2, "total": 5, "pages": 3}
    assert past["products"] == [] and past["pagination"]["page"] == 9
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_pagination"
    assert listing["requests"][0]["request_id"] == request_id
    assert listing["pagination"]["total"] == 1


def test_errors_have_one_shape(service):
    unknown = requests.get(f"{service.base_url}/api/status/{uuid.uuid4()}", timeout=10)
    malformed = requests.get(f"{service.base_url}/api/status/not-a-uuid", timeout=10)
    no_route = requests.get(f"{service.base_url}/nowhere", timeout=10)
    wrong_method = requests.delete(f"{service.base_url}/api/upload", timeout=10)
    not_multipart = requests.post(f"{service.base_url}/api/upload", json={"file": "x"}, timeout=10)
    for response, status in [
        (unknown, 404),
        (malformed, 404),
        (no_route, 404),
        (wrong_method, 405),
        (not_multipart, 415),
    ]:
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
        assert error["code"] and error["message"]
        assert "Traceback" not in response.text


def test_health_and_readiness(service):
    assert requests.get(f"{service.base_url}/healthz", timeout=10).status_code == 200
    ready = requests.get(f"{service.base_url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def _exif_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def _wait_deliveries(receiver, count: int, timeout_s: float = 30) -> list[dict]:
    from support.loopback import wait_until

    wait_until(lambda: len(receiver.deliveries()) >= count, timeout_s)
    deliveries = receiver.deliveries()
    assert len(deliveries) == count, f"expected {count} deliveries, got {len(deliveries)}"
    return deliveries


def _wait_delivered(service, request_id: str, timeout_s: float = 30) -> dict:
    from support.loopback import wait_until

    url = f"{service.base_url}/api/requests/{request_id}/webhook-deliveries"
    wait_until(
        lambda: (
            requests.get(url, timeout=10).json()["events"][:1] != []
            and requests.get(url, timeout=10).json()["events"][0]["status"] == "DELIVERED"
        ),
        timeout_s,
    )
    log = requests.get(url, timeout=10).json()
    assert log["events"] and log["events"][0]["status"] == "DELIVERED", log
    return log


def test_sample_csv_names_the_services_own_address(service):
    served = requests.get(f"{service.base_url}/samples/products.csv", timeout=10)
    assert served.status_code == 200
    assert served.headers["Content-Type"].startswith("text/csv")
    assert "127.0.0.1:5000" not in served.text
    assert f"{service.base_url}/samples/sku1_landscape.jpg" in served.text
    assert requests.get(f"{service.base_url}/samples/sku1_landscape.jpg", timeout=10).status_code == 200
