"""An accepted upload or retry answers 202 whatever happens to its hand-off to the broker, and still completes.

The API runs in this process, so its sends are made to fail here while the workers' own (the dispatcher's
tick, the sweeper) go through: what the API could not hand over, they pick up from the database.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import kombu.exceptions
import pytest
import requests
import sqlalchemy.exc
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update
from support.api import csv_of, upload, wait_final
from support.images import jpeg_bytes
from support.loopback import serve

from models import RequestImport, db, utcnow
from queueing import broker, dispatch, task_names

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]


class RefusingBroker:
    """``broker.send`` of the API raising as a broker that went away mid-send might, until ``refusing`` is False."""

    def __init__(self, monkeypatch) -> None:
        self.refusing = True
        self.refused: list[str] = []
        self._real = broker.send
        monkeypatch.setattr(broker, "send", self._send)

    def _send(self, task_name: str, *args: object, **options: object) -> bool:
        if self.refusing:
            self.refused.append(task_name)
            raise kombu.exceptions.OperationalError("[Errno 111] Connection refused")
        return self._real(task_name, *args, **options)


def deferred_handoffs(service, kind: str) -> float:
    """``imgsvc_handoffs_deferred_total`` of ``kind``, as the API's /metrics shows it."""
    text = requests.get(f"{service.base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "imgsvc_handoffs_deferred_total" and sample.labels.get("kind") == kind
    )


def served_csv(source_server, images: int) -> bytes:
    urls = [serve(source_server, jpeg_bytes((40, 30))) for _ in range(images)]
    return csv_of([(n + 1, f"P{n}", [url]) for n, url in enumerate(urls)])


def check_accepted(response: requests.Response) -> str:
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "PENDING"
    return response.json()["request_id"]


def test_an_upload_the_broker_refuses_at_hand_off_is_accepted_and_completes(service, source_server, monkeypatch):
    refusing = RefusingBroker(monkeypatch)
    before = deferred_handoffs(service, "images")

    request_id = check_accepted(upload(service.base_url, served_csv(source_server, 3)))

    # Tried once, then left to the dispatcher (unless beat's tick queued the images first).
    assert refusing.refused in ([task_names.PROCESS_IMAGE_TASK], [])
    assert deferred_handoffs(service, "images") == before + len(refusing.refused)
    status = wait_final(service.base_url, request_id)
    assert (status["status"], status["progress"]["completed_images"]) == ("COMPLETED", 3)


def test_an_upload_whose_queueing_hits_a_database_error_after_the_commit_is_accepted(
    service, source_server, monkeypatch
):
    def timed_out(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT pg_advisory_xact_lock", {}, Exception("statement timeout"))

    monkeypatch.setattr(dispatch, "take_images_to_queue", timed_out)

    request_id = check_accepted(upload(service.base_url, served_csv(source_server, 2)))

    assert wait_final(service.base_url, request_id)["status"] == "COMPLETED"


@pytest.mark.usefixtures("import_every_upload")
def test_a_big_upload_whose_import_cannot_be_sent_is_accepted_and_imported_later(service, source_server, monkeypatch):
    refusing = RefusingBroker(monkeypatch)
    before = deferred_handoffs(service, "import")

    request_id = check_accepted(upload(service.base_url, served_csv(source_server, 4)))

    assert refusing.refused == [task_names.IMPORT_TASK]
    assert deferred_handoffs(service, "import") == before + 1
    with service.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(RequestImport)) == 1  # kept for the sweeper
        # A minute on, the sweeper sends an import not done since it was (meant to be) sent.
        db.session.execute(update(RequestImport).values(queued_at=utcnow() - timedelta(minutes=5)))
        db.session.commit()
        refusing.refusing = False
        assert broker.send(task_names.SWEEP_TASK)
        db.session.remove()
    status = wait_final(service.base_url, request_id)
    assert (status["status"], status["progress"]["completed_images"]) == ("COMPLETED", 4)


def test_a_retry_the_broker_refuses_at_hand_off_is_accepted_and_runs(service, source_server, monkeypatch):
    missing = [source_server.url(f"/handoff/{uuid.uuid4().hex}/{n}.jpg") for n in range(2)]
    request_id = check_accepted(upload(service.base_url, csv_of([(1, "A", missing)])))
    assert wait_final(service.base_url, request_id)["status"] == "FAILED"
    refusing = RefusingBroker(monkeypatch)

    retried = requests.post(f"{service.base_url}/api/requests/{request_id}/retry", timeout=10)

    assert retried.status_code == 202, retried.text
    assert retried.json()["retried_images"] == 2
    assert refusing.refused in ([task_names.PROCESS_IMAGE_TASK], [])
    # The dispatcher's tick runs them again: each fails again with its 404.
    status = wait_final(service.base_url, request_id)
    assert (status["status"], status["progress"]["failed_images"]) == ("FAILED", 2)
