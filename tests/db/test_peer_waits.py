"""A worker that finds another encoding the same variant waits for it, but never into its own soft time limit:
a dead worker's claim holds until it is stale, and a wait that ran into the limit would fail the image as
``processing_timeout`` for the dead worker's sake. The image is retried (``output_busy``) instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import signal
import threading

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app
from PIL import Image as PilImage
from sqlalchemy import select

import image_tasks
from fetching import fetcher
from intake.csv_input import ProductRow
from lifecycle import creation
from models import Image, db
from outputs import encode_claims, making, variants

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

SOFT_LIMIT_S = 2
SOURCE_URL = "http://127.0.0.2:9/peer.jpg"


@pytest.fixture
def short_limits(base_url, monkeypatch):
    """The service's settings with short time limits, as the worker's task reads them."""
    settings = dataclasses.replace(
        current_app.config["SETTINGS"], task_soft_time_limit_s=SOFT_LIMIT_S, task_time_limit_s=SOFT_LIMIT_S + 1
    )
    monkeypatch.setitem(current_app.config, "SETTINGS", settings)
    return settings


@pytest.fixture
def soft_time_limit():
    """Raises SoftTimeLimitExceeded in this thread after SOFT_LIMIT_S, as billiard's pool does (SIGUSR1)."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: (_ for _ in ()).throw(SoftTimeLimitExceeded()))
    main = threading.main_thread().ident
    timer = threading.Timer(SOFT_LIMIT_S, signal.pthread_kill, (main, signal.SIGUSR1))
    timer.start()
    yield
    timer.cancel()
    signal.signal(signal.SIGUSR1, previous)


def a_dead_workers_claim(monkeypatch) -> None:
    """The source every fetch answers, and the claim of its variant's encode by a worker that then died."""
    out = io.BytesIO()
    PilImage.new("RGB", (48, 32), (10, 160, 90)).save(out, "JPEG", quality=90)
    fetched = fetcher.FetchedImage(data=out.getvalue(), validators=fetcher.Validators(None, None), not_modified=False)
    monkeypatch.setattr(fetcher, "fetch_image_revalidated", lambda *_args, **_kwargs: fetched)
    digest = hashlib.sha256(out.getvalue()).hexdigest()
    variant = variants.variant_key(current_app.extensions["variant_secret"], "", digest, variants.OutputOptions())
    assert encode_claims.start_output(variant, "jpeg", stale_after_s=3600) is not None


def test_the_wait_for_a_peer_is_a_quarter_of_the_soft_time_limit_at_most(short_limits):
    assert making.peer_wait_s(short_limits) == SOFT_LIMIT_S / 4
    default = dataclasses.replace(short_limits, task_soft_time_limit_s=120, task_time_limit_s=150)
    assert making.peer_wait_s(default) == encode_claims.WAIT_FOR_PEER_S


def test_an_image_whose_encode_a_dead_worker_claimed_is_retried_not_failed(short_limits, monkeypatch, soft_time_limit):
    a_dead_workers_claim(monkeypatch)
    created = creation.create_request([ProductRow(1, "P1", (SOURCE_URL,), 2)], creation.UploadOptions())
    image_id = db.session.scalar(select(Image.id).where(Image.request_id == created.id))
    db.session.commit()

    outcome = image_tasks._process("task-after-the-dead-one", image_id, short_limits)

    image = db.session.get(Image, image_id)
    assert (outcome, image.status, image.error_code) == ("retry:output_busy", "PENDING", "output_busy")
