"""``GET /metrics`` on the live service: what the worker processes count shows at the API's scrape."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes
from support.loopback import IMAGE_HOST, serve, unused_port, wait_until

from process_launch import environment
from queueing import broker

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

UPLOAD_ROUTE = {"method": "POST", "route": "/api/upload", "status": "202"}


class Scrape:
    """One scrape, parsed: each sample's value by its name and labels."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.types: dict[str, str] = {}
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            self.samples.extend((s.name, s.labels, s.value) for s in family.samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``; 0 if none."""
        return sum(v for n, got, v in self.samples if n == name and labels.items() <= got.items())

    def grew_since(self, before: Scrape, name: str, **labels: str) -> float:
        return self.value(name, **labels) - before.value(name, **labels)

    def labelled(self, name: str, label: str) -> dict[str, float]:
        return {got[label]: v for n, got, v in self.samples if n == name and label in got}


def scrape(service, headers: dict[str, str] | None = None) -> Scrape:
    response = requests.get(service.url("/metrics"), headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return Scrape(response.text)


def closed_port_url() -> str:
    """A URL on the address the service may call, where nothing listens."""
    return f"http://{IMAGE_HOST}:{unused_port(IMAGE_HOST)}/hook"


def test_worker_counts_reach_the_apis_scrape(service, source_server, receiver):
    before = scrape(service)
    good = serve(source_server, jpeg_bytes((320 + uuid.uuid4().int % 64, 240)))
    missing_path = f"/{uuid.uuid4().hex}/missing.jpg"
    source_server.route(missing_path, respond(404, b"gone"))
    missing = source_server.url(missing_path)
    receiver.answer_with(503)

    response = upload(service.base_url, csv_of([(1, "SKU1", [good, missing])]), webhook_url=receiver.url)
    assert response.status_code == 202, response.text
    request_id = response.json()["request_id"]
    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED_WITH_ERRORS"
    # The worker records an attempt just after the receiver answers it: a 503, then the retry's 200.
    delivered = {"outcome": "delivered"}
    assert wait_until(lambda: scrape(service).grew_since(before, "imgsvc_webhook_attempts_total", **delivered) > 0, 30)
    after = scrape(service)

    def grew(name: str, **labels: str) -> float:
        return after.grew_since(before, name, **labels)

    assert grew("imgsvc_http_requests_total", **UPLOAD_ROUTE) == 1
    routes = {labels["route"] for name, labels, _ in after.samples if name == "imgsvc_http_requests_total"}
    assert "/api/status/<request_id>" in routes  # the URL rule, never the raw path
    assert not any(request_id in route for route in routes)
    assert grew("imgsvc_images_processed_total") == 1
    assert grew("imgsvc_images_failed_total") == 1
    assert grew("imgsvc_images_failed_total", error_code="http_404") == 1
    for name in ("imgsvc_image_download_seconds", "imgsvc_image_decode_seconds", "imgsvc_image_encode_seconds"):
        assert after.types[name] == "histogram"
        assert grew(f"{name}_count") >= 1
        assert grew(f"{name}_bucket", le="+Inf") == grew(f"{name}_count")
        assert grew(f"{name}_sum") > 0
    assert grew("imgsvc_image_downloaded_bytes_total") > 0
    assert grew("imgsvc_image_stored_bytes_total") > 0
    assert grew("imgsvc_webhook_attempts_total", outcome="http_5xx") == 1
    assert grew("imgsvc_webhook_attempts_total", outcome="delivered") == 1

    queues = after.labelled("imgsvc_queue_messages", "queue")
    assert set(queues) == set(broker.ALL_QUEUES)
    assert all(held >= 0 for held in queues.values())
    assert after.value("imgsvc_requests", status="COMPLETED_WITH_ERRORS") >= 1
    assert set(after.labelled("imgsvc_requests", "status")) >= {"PENDING", "COMPLETED", "FAILED", "CANCELLED"}
    assert after.types["imgsvc_images_waiting"] == "gauge"


def test_a_status_no_rfc_registers_is_counted_by_its_class(service, source_server):
    before = scrape(service)
    path = f"/{uuid.uuid4().hex}/odd.jpg"
    source_server.route(path, respond(499, b"client closed"))

    response = upload(service.base_url, csv_of([(1, "SKU1", [source_server.url(path)])]))
    assert response.status_code == 202, response.text
    status = wait_final(service.base_url, response.json()["request_id"])
    assert status["status"] == "FAILED"
    assert status["products"][0]["images"][0]["error"]["code"] == "http_499"
    # The status API names the source's own status; the metric folds it, so that a source cannot
    # add a series for each of the 900 statuses it may send.
    after = scrape(service)
    assert after.grew_since(before, "imgsvc_images_failed_total", error_code="http_4xx") == 1
    assert "http_499" not in after.labelled("imgsvc_images_failed_total", "error_code")


def test_webhooks_given_up_after_network_errors(service, source_server):
    before = scrape(service)
    good = serve(source_server, jpeg_bytes((200, 100 + uuid.uuid4().int % 64)))

    response = upload(service.base_url, csv_of([(1, "SKU1", [good])]), webhook_url=closed_port_url())
    assert response.status_code == 202, response.text
    wait_final(service.base_url, response.json()["request_id"])
    attempts = len(service.app.config["SETTINGS"].webhook_retry_schedule)
    given_up = "imgsvc_webhook_events_given_up_total"
    assert wait_until(lambda: scrape(service).grew_since(before, given_up) > 0, 30)
    after = scrape(service)
    assert after.grew_since(before, given_up) == 1
    assert after.grew_since(before, "imgsvc_webhook_attempts_total", outcome="network_error") == attempts


def test_metrics_token_when_set(service, monkeypatch):
    settings = service.app.config["SETTINGS"]
    monkeypatch.setitem(service.app.config, "SETTINGS", dataclasses.replace(settings, metrics_token="scrape-me"))

    assert requests.get(service.url("/metrics"), timeout=30).status_code == 401
    wrong = requests.get(service.url("/metrics"), headers={"Authorization": "Bearer other"}, timeout=30)
    assert wrong.status_code == 401
    assert scrape(service, {"Authorization": "Bearer scrape-me"}).types["imgsvc_http_requests"] == "counter"


def test_launcher_clears_only_prometheus_files(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    for name in ("counter_123.db", "histogram_9.db", "gauge_livesum_7.db", "service.db", "notes.txt"):
        (folder / name).write_bytes(b"x")

    environment.clear_metrics({environment.METRICS_DIR_VARIABLE: str(folder)})

    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "service.db"]


def test_launcher_gives_every_process_one_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(environment.METRICS_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path))
    monkeypatch.setenv("FETCH_ALLOWED_NETWORKS", "")

    assert environment.service_environment()[environment.METRICS_DIR_VARIABLE] == str(tmp_path / "metrics")
