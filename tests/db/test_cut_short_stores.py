"""A store cut short after it wrote the object (the soft time limit of a worker that was frozen mid-store
strikes as it wakes) deletes the object at once and gives the encode's claim up, so that the next worker
encodes the variant at once; an encode that fails before its store touches storage not at all."""

from __future__ import annotations

import hashlib
import io

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from flask import current_app
from PIL import Image as PilImage
from sqlalchemy import func, select

from fetching import fetcher
from imaging import pipeline
from models import ImageOutput, db
from outputs import encode_claims, making, variants

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

SOURCE_URL = "http://127.0.0.2:9/a.jpg"


def serve_source(monkeypatch) -> bytes:
    """The source's bytes, which every fetch answers without any network."""
    out = io.BytesIO()
    PilImage.new("RGB", (64, 48), (40, 120, 200)).save(out, "JPEG", quality=95)
    source = out.getvalue()
    fetched = fetcher.FetchedImage(data=source, validators=fetcher.Validators(None, None), not_modified=False)
    monkeypatch.setattr(fetcher, "fetch_image_revalidated", lambda *_args, **_kwargs: fetched)
    return source


def output_rows(*conditions) -> int:
    count = db.session.scalar(select(func.count()).select_from(ImageOutput).where(*conditions))
    db.session.commit()
    return count


def test_a_store_cut_short_after_its_write_leaves_no_object_and_frees_the_claim(base_url, monkeypatch):
    settings, storage = current_app.config["SETTINGS"], current_app.extensions["storage"]
    source = serve_source(monkeypatch)
    options = variants.OutputOptions()
    real_put = storage.put
    written: list[str] = []

    def put_then_time_limit(key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        real_put(key, data, content_type)
        written.append(key)
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(storage, "put", put_then_time_limit)
    with pytest.raises(SoftTimeLimitExceeded):
        making.make_output("", SOURCE_URL, options, settings)

    [key] = written
    assert storage.local_path(key) is None  # the object is gone at once
    assert output_rows(encode_claims.still_encoding()) == 0  # and the claim given up
    variant = variants.variant_key(
        current_app.extensions["variant_secret"], "", hashlib.sha256(source).hexdigest(), options
    )
    assert encode_claims.start_output(variant, "jpeg", settings.task_time_limit_s + 60.0) is not None


def test_an_encode_that_fails_before_its_store_deletes_nothing(base_url, monkeypatch):
    settings, storage = current_app.config["SETTINGS"], current_app.extensions["storage"]
    serve_source(monkeypatch)
    deleted: list[str] = []
    monkeypatch.setattr(storage, "delete", deleted.append)

    def undecodable(*_args, **_kwargs):
        raise pipeline.ImageProcessingError("decode_error", "not an image")

    monkeypatch.setattr(pipeline, "compress", undecodable)
    with pytest.raises(pipeline.ImageProcessingError):
        making.make_output("", SOURCE_URL, variants.OutputOptions(), settings)

    assert deleted == []
    assert output_rows() == 0
