"""``/metrics`` keeps a bounded set of series, whatever methods and paths its clients make up."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from observability import metrics

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")


def http_series(client) -> set[tuple[tuple[str, str], ...]]:
    """The label sets of ``imgsvc_http_requests_total`` in one scrape."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return {
        tuple(sorted(sample.labels.items()))
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        if family.name == "imgsvc_http_requests"
        for sample in family.samples
    }


def made_up_calls(client) -> None:
    """A made-up method on a route, a made-up path, and both at once: each new to the service."""
    method, path = f"X{uuid.uuid4().hex[:8].upper()}", f"/{uuid.uuid4().hex}"
    assert client.open("/healthz", method=method).status_code == 405
    assert client.get(path).status_code == 404
    assert client.open(f"/api/status/{uuid.uuid4()}{path}", method=method).status_code == 404


def test_made_up_methods_and_paths_add_no_series(quiet_service):
    client = quiet_service.app.test_client()
    # One round first, so that every series such calls can make exists before the first scrape.
    made_up_calls(client)
    client.get("/metrics")
    before = http_series(client)

    for _ in range(40):
        made_up_calls(client)
    after = http_series(client)

    assert after == before
    labels = [dict(series) for series in after]
    assert {series["method"] for series in labels} <= metrics.STANDARD_METHODS | {metrics.OTHER_METHOD}
    assert {"method": "other", "route": metrics.UNMATCHED_ROUTE, "status": "405"} in labels
    assert {"method": "GET", "route": metrics.UNMATCHED_ROUTE, "status": "404"} in labels
    assert all(series["route"].startswith("/") or series["route"] == metrics.UNMATCHED_ROUTE for series in labels)
