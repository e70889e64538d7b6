"""A bug in a step of the image pipeline, end to end: the image is not blamed for it.

The image worker runs with a sitecustomize module on its PYTHONPATH that makes ``resize.target_size`` raise
TypeError for a 61x47 source only, as a bug of ours would; every other image is processed as usual. The
image must end FAILED ``internal_error`` after IMAGE_MAX_ATTEMPTS tries, not ``corrupt_image``, and the
worker's log must hold the traceback.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from PIL import Image
from support.api import csv_of, upload, wait_final
from support.backing import ROOT
from support.deployments import SideDeployment
from support.handlers import respond
from support.images import jpeg_bytes

pytestmark = pytest.mark.integration

BUGGY_SIZE = (61, 47)
MAX_ATTEMPTS = 3

FAULT_HOOK = f'''
"""Test-only: a bug in a pipeline step of this worker, for a {BUGGY_SIZE[0]}x{BUGGY_SIZE[1]} source only."""
from imaging import resize

_target_size = resize.target_size


def target_size(width, height, max_dimension):
    if (width, height) == {BUGGY_SIZE!r}:
        raise TypeError("injected: a bug in a step of ours")
    return _target_size(width, height, max_dimension)


resize.target_size = target_size
'''


@pytest.fixture
def buggy_deployment(service, backing_services, tmp_path, monkeypatch):
    """An API, an image worker with the fault hook, a webhook and a maintenance worker and beat, on a database
    and queue of their own. Yields the API's base URL and the image worker's log."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAULT_HOOK)
    deployment = SideDeployment(
        service, backing_services, tmp_path, "buggy", monkeypatch, IMAGE_MAX_ATTEMPTS=str(MAX_ATTEMPTS)
    )
    try:
        # The hook imports the service's modules at start-up, before Celery puts the working folder on the path.
        deployment.start_celery(PYTHONPATH=f"{hook}:{ROOT}")
        yield deployment.start_api(), tmp_path / "worker.log"
    finally:
        deployment.close()


def png_bytes(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


def test_a_bug_in_a_step_fails_the_image_internal_error_after_its_attempts(buggy_deployment, source_server):
    base_url, worker_log = buggy_deployment
    prefix = f"/bug/{uuid.uuid4().hex}"
    source_server.route(f"{prefix}/buggy.png", respond(200, png_bytes(BUGGY_SIZE), {"Content-Type": "image/png"}))
    source_server.route(f"{prefix}/fine.jpg", respond(200, jpeg_bytes((64, 48)), {"Content-Type": "image/jpeg"}))
    buggy, fine = source_server.url(f"{prefix}/buggy.png"), source_server.url(f"{prefix}/fine.jpg")

    created = upload(base_url, csv_of([(1, "SKU1", [buggy, fine])]))
    assert created.status_code == 202, created.text
    status = wait_final(base_url, created.json()["request_id"], timeout_s=90)

    assert status["status"] == "COMPLETED_WITH_ERRORS", status
    failed, completed = status["products"][0]["images"]
    assert completed["status"] == "COMPLETED" and completed["error"] is None, completed
    assert failed["status"] == "FAILED", failed
    assert failed["error"]["code"] == "internal_error", failed
    assert "unexpected error" in failed["error"]["message"]
    assert failed["attempts"] == MAX_ATTEMPTS
    # Each attempt downloads the source again: the retries really ran.
    assert source_server.hits(f"{prefix}/buggy.png") == MAX_ATTEMPTS
    log = Path(worker_log).read_text(errors="replace")
    assert "Traceback (most recent call last)" in log
    assert "TypeError: injected: a bug in a step of ours" in log
