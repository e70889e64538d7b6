"""LOG_FORMAT=json: the whole service, as ``make run`` starts it, writes one JSON object a line, and the
lines of an image's processing and of a status call name their ids."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.api import csv_of, upload, wait_final
from support.backing import ROOT
from support.handlers import respond
from support.images import jpeg_bytes
from support.launched import launch_environment, start_launcher
from support.loopback import IMAGE_HOST, unused_port

pytestmark = pytest.mark.integration

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG|CRITICAL) \S+: ")


def _environment(folder: Path, **extra: str) -> dict[str, str]:
    return launch_environment(
        folder,
        WEB_CONCURRENCY="1",
        WORKER_CONCURRENCY="1",
        MAINTENANCE_CONCURRENCY="1",
        WEBHOOK_CONCURRENCY="4",
        FETCH_ALLOWED_NETWORKS=f"{IMAGE_HOST}/32",
        **extra,
    )


@pytest.fixture(scope="module")
def json_service(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("json-logs")
    port = unused_port()
    log_path = folder / "service.log"
    env = _environment(folder, PORT=str(port), LOG_FORMAT="json")
    process = start_launcher(env, log_path)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while b" ready." not in log_path.read_bytes() or not _answers(base_url):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        yield base_url, log_path
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _records(log_path: Path) -> list[dict]:
    records = []
    for line in log_path.read_text().splitlines():
        record = json.loads(line)  # every line, from every process, is one JSON object
        assert {"timestamp", "level", "logger", "message"} <= record.keys(), line
        records.append(record)
    return records


def test_every_line_is_json_and_names_the_ids_it_belongs_to(json_service, source_server):
    base_url, log_path = json_service
    image = f"/{uuid.uuid4().hex}.jpg"
    source_server.route(image, respond(200, jpeg_bytes(), {"Content-Type": "image/jpeg"}))
    made = upload(base_url, csv_of([(1, "Cup", [source_server.url(image)])]))
    assert made.status_code == 202, made.text
    request_id = made.json()["request_id"]
    assert wait_final(base_url, request_id)["status"] == "COMPLETED"
    time.sleep(1.0)  # the task's last lines (succeeded) follow its outcome
    records = _records(log_path)

    loggers = {record["logger"] for record in records}
    assert {"launcher", "gunicorn.error", "gunicorn.access", "celery.beat"} <= loggers, loggers

    processing = [record for record in records if record.get("request_id") == request_id and "image_id" in record]
    assert processing, "no worker line names the image"
    task_ids = {record["task_id"] for record in processing}
    assert len(task_ids) == 1 and None not in task_ids, processing
    (task_id,) = task_ids
    celery_own = [r for r in records if r.get("task_id") == task_id and r["logger"].startswith("celery")]
    assert any("received" in r["message"] for r in celery_own), celery_own
    assert any("succeeded" in r["message"] for r in celery_own), celery_own
    assert any(r["logger"] == "image_tasks" for r in processing), processing
    upload_lines = [r for r in records if r["logger"] == "gunicorn.access" and "POST /api/upload" in r["message"]]
    assert [r.get("request_id") for r in upload_lines] == [request_id], upload_lines


def test_an_api_line_of_a_status_call_names_its_request(json_service):
    base_url, log_path = json_service
    request_id = str(uuid.uuid4())
    assert requests.get(f"{base_url}/api/status/{request_id}", timeout=10).status_code == 404
    time.sleep(0.5)
    api_lines = [r for r in _records(log_path) if r.get("request_id") == request_id]
    assert api_lines, "no API line names the request"
    assert any(r["logger"] == "gunicorn.access" for r in api_lines), api_lines
    assert all("task_id" not in r and "image_id" not in r for r in api_lines)


def test_the_default_is_the_text_format(tmp_path):
    finished = subprocess.run(
        [sys.executable, "launcher.py", "migrate"],
        cwd=ROOT,
        env=_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = finished.stderr.splitlines()
    assert not [line for line in lines if line.startswith("{")], lines
    # The launcher's line, and the app's (built by ``flask db upgrade``): Alembic keeps its own format.
    assert any(TEXT_LINE.match(line) and " launcher: applying migrations" in line for line in lines), lines
    assert any(TEXT_LINE.match(line) and " access.api_keys: API_KEYS is not set" in line for line in lines), lines
