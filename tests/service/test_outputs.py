"""Outputs over HTTP with a real worker: quality=auto, never bigger, reuse across requests, formats, retention.

Downloads and revalidations are counted at the image server, and encodes as the shared outputs the
worker recorded: each encode makes one.
"""

from __future__ import annotations

import io
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image
from sqlalchemy import func, select, update
from support.api import csv_of, upload, wait_final

from imaging import perceptual, pipeline
from lifecycle import housekeeping
from models import Image as ImageRow
from models import ImageOutput, Request, db, utcnow

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_tables")]

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


class VersionedSource:
    """An image behind one URL that answers conditional GETs: 304 while its ETag matches, else 200."""

    def __init__(self, server, body: bytes, content_type: str = "image/jpeg") -> None:
        self.server = server
        self.path = f"/outputs/{uuid.uuid4().hex}"
        self.body = body
        self.content_type = content_type
        self.version = 1
        self.answers: list[int] = []
        self.conditional: list[str | None] = []
        self._lock = threading.Lock()
        server.route(self.path, self._handle)

    @property
    def url(self) -> str:
        return self.server.url(self.path)

    @property
    def etag(self) -> str:
        return f'"v{self.version}"'

    def change(self, body: bytes) -> None:
        with self._lock:
            self.body, self.version = body, self.version + 1

    def _handle(self, request) -> None:
        with self._lock:
            sent = request.headers.get("If-None-Match")
            self.conditional.append(sent)
            if sent == self.etag:
                self.answers.append(304)
                request.send(304, b"", {"ETag": self.etag})
                return
            self.answers.append(200)
            body, etag = self.body, self.etag
        request.send(200, body, {"Content-Type": self.content_type, "ETag": etag})


def photo(name: str = "sku1_bottle.jpg", size: tuple[int, int] | None = (800, 600), **save) -> bytes:
    with Image.open(SAMPLES / name) as im:
        im = im.convert("RGB")
        if size:
            im = im.resize(size, Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, "JPEG", **({"quality": 92} | save))
        return out.getvalue()


def flat_image(size: tuple[int, int] = (800, 600)) -> bytes:
    gradient = np.linspace(90, 160, size[0], dtype=np.float32)[None, :].repeat(size[1], axis=0)
    im = Image.fromarray(np.stack([gradient, gradient * 0.9, gradient * 0.8], axis=-1).astype(np.uint8))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def encodes(service) -> int:
    with service.app.app_context():
        count = db.session.scalar(select(func.count()).select_from(ImageOutput))
        db.session.remove()
    return count


def images_of(status: dict) -> list[dict]:
    return [image for product in status["products"] for image in product["images"]]


def completed(service, body: bytes, **fields: str) -> dict:
    created = upload(service.base_url, body, **fields)
    assert created.status_code == 202, created.text
    final = wait_final(service.base_url, created.json()["request_id"])
    assert final["status"] == "COMPLETED", final
    return final


def fetch_output(url: str) -> requests.Response:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, url
    return response


# --- quality=auto ---------------------------------------------------------------------------------


def test_quality_auto_reaches_the_target_on_every_image_and_a_flat_image_gets_a_lower_quality(service, source_server):
    detailed = VersionedSource(source_server, photo("sku1_landscape.jpg", (1200, 800)))
    flat = VersionedSource(source_server, flat_image(), "image/png")
    final = completed(service, csv_of([(1, "Detailed", [detailed.url]), (2, "Flat", [flat.url])]), quality="auto")

    assert (final["quality"], final["target_score"]) == ("auto", pipeline.DEFAULT_TARGET_SCORE)
    chosen = {}
    for image, source in zip(images_of(final), (detailed, flat), strict=True):
        stored = fetch_output(image["output_url"]).content
        reference = pipeline.prepare(source.body)
        with Image.open(io.BytesIO(stored)) as output:
            assert output.format == "JPEG" and output.size == reference.size
            score = perceptual.ssim_luma(reference, output)
        assert score >= pipeline.DEFAULT_TARGET_SCORE, (image, score)
        assert image["score"] == pytest.approx(score, abs=1e-6)
        chosen[source] = image["quality"]
    assert chosen[flat] < chosen[detailed], chosen


def test_a_stricter_target_gives_a_higher_quality_and_a_bad_target_is_refused(service, source_server):
    source = VersionedSource(source_server, photo())
    body = csv_of([(1, "A", [source.url])])
    loose = images_of(completed(service, body, quality="auto", target_score="0.93"))[0]
    strict = images_of(completed(service, body, quality="auto", target_score="0.99"))[0]
    assert strict["quality"] > loose["quality"] and strict["score"] >= 0.99 > loose["score"] >= 0.93

    for fields in ({"quality": "auto", "target_score": "1.5"}, {"quality": "auto", "target_score": "x"}):
        refused = upload(service.base_url, body, **fields)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_target_score"
    refused = upload(service.base_url, body, quality="60", target_score="0.95")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_target_score"


# --- never bigger ---------------------------------------------------------------------------------


def test_a_source_already_small_is_kept_without_its_metadata_rather_than_made_bigger(service, source_server):
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    small = photo(quality=40, exif=exif.tobytes(), comment=b"shot by someone")
    source = VersionedSource(source_server, small)

    [kept] = images_of(completed(service, csv_of([(1, "A", [source.url])])))
    stored = fetch_output(kept["output_url"]).content

    assert kept["kept_source"] is True and kept["saved_bytes"] == 0 and kept["quality"] is None
    assert kept["bytes_in"] == len(small) and kept["bytes_out"] == len(stored) <= len(small)
    with Image.open(io.BytesIO(stored)) as output, Image.open(io.BytesIO(small)) as original:
        assert output.tobytes() == original.tobytes()
        assert not output.getexif() and "comment" not in output.info

    other = VersionedSource(source_server, small)
    [encoded] = images_of(completed(service, csv_of([(1, "A", [other.url])]), never_bigger="false"))
    assert encoded["kept_source"] is False and encoded["quality"] == 50


def test_never_bigger_does_not_apply_to_an_image_that_needs_a_change(service, source_server):
    source = VersionedSource(source_server, photo(quality=40))
    [resized] = images_of(completed(service, csv_of([(1, "A", [source.url])]), max_dimension="400"))
    assert resized["kept_source"] is False and (resized["width"], resized["height"]) == (400, 300)


# --- reuse ----------------------------------------------------------------------------------------


def test_a_second_request_for_the_same_urls_is_revalidated_and_neither_downloaded_nor_encoded(service, source_server):
    sources = [VersionedSource(source_server, photo(size=(640 + 16 * n, 480))) for n in range(3)]
    body = csv_of([(1, "A", [s.url for s in sources[:2]]), (2, "B", [sources[2].url])])
    first = completed(service, body)
    assert encodes(service) == 3

    second = completed(service, body)

    assert [s.answers for s in sources] == [[200, 304]] * 3
    assert [s.conditional[-1] for s in sources] == ['"v1"'] * 3
    assert encodes(service) == 3
    for before, after in zip(images_of(first), images_of(second), strict=True):
        assert (before["reused"], after["reused"]) == (False, True)
        assert after["output_url"] == before["output_url"]
        assert (after["bytes_in"], after["bytes_out"]) == (before["bytes_in"], before["bytes_out"])
    assert second["totals"]["bytes_out"] == first["totals"]["bytes_out"]


def test_the_same_bytes_under_another_url_are_encoded_once(service, source_server):
    body = photo(size=(700, 500))
    sources = [VersionedSource(source_server, body) for _ in range(3)]
    final = completed(service, csv_of([(n, f"P{n}", [s.url]) for n, s in enumerate(sources, start=1)]))

    assert encodes(service) == 1
    images = images_of(final)
    assert sorted(image["reused"] for image in images) == [False, True, True]
    assert len({image["output_url"] for image in images}) == 1


def test_changed_bytes_behind_the_same_url_are_encoded_again(service, source_server):
    source = VersionedSource(source_server, photo(size=(640, 480)))
    [before] = images_of(completed(service, csv_of([(1, "A", [source.url])])))
    source.change(photo(size=(720, 540)))

    [after] = images_of(completed(service, csv_of([(1, "A", [source.url])])))

    assert source.answers == [200, 200] and source.conditional == [None, '"v1"']
    assert encodes(service) == 2
    assert after["reused"] is False and after["output_url"] != before["output_url"]
    assert (after["width"], after["height"]) == (720, 540)


def test_other_options_make_another_output_of_the_same_bytes(service, source_server):
    source = VersionedSource(source_server, photo())
    body = csv_of([(1, "A", [source.url])])
    completed(service, body)
    [other] = images_of(completed(service, body, quality="70"))
    assert other["reused"] is False and other["quality"] == 70
    assert encodes(service) == 2
    # Its output did not exist yet, so the URL was downloaded again: nothing to revalidate against.
    assert source.answers == [200, 200]


def test_output_urls_cannot_be_guessed_from_the_source_bytes(service, source_server):
    body = photo()
    source = VersionedSource(source_server, body)
    [image] = images_of(completed(service, csv_of([(1, "A", [source.url])])))
    key = urlsplit(image["output_url"]).path.removeprefix("/media/")
    import hashlib

    assert hashlib.sha256(body).hexdigest() not in key
    assert key.startswith("objects/") and key.endswith(".jpg")


# --- formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_format", "pillow_format", "media_type"), [("webp", "WEBP", "image/webp"), ("avif", "AVIF", "image/avif")]
)
def test_webp_and_avif_outputs_decode_as_their_format_at_their_size(
    service, source_server, output_format, pillow_format, media_type
):
    source = VersionedSource(source_server, photo(size=(900, 600)))
    created = upload(service.base_url, csv_of([(1, "A", [source.url])]), format=output_format, max_dimension="450")
    assert created.status_code == 202, created.text
    final = wait_final(service.base_url, created.json()["request_id"])
    assert final["status"] == "COMPLETED" and final["format"] == output_format
    [image] = images_of(final)
    assert image["output_url"].endswith(f".{output_format}")

    served = fetch_output(image["output_url"])
    assert served.headers["Content-Type"] == media_type
    with Image.open(io.BytesIO(served.content)) as output:
        assert output.format == pillow_format and output.size == (450, 300) == (image["width"], image["height"])
    output_csv = requests.get(final["output_csv_url"], timeout=10).text
    assert image["output_url"] in output_csv


def test_a_format_the_service_cannot_make_is_refused_with_422(service, source_server, monkeypatch):
    body = csv_of([(1, "A", [source_server.url("/never-fetched.jpg")])])
    for name in ("png", "gif", "jxl"):
        refused = upload(service.base_url, body, format=name)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "unsupported_format"
    monkeypatch.setattr(pipeline, "encodable_formats", lambda: frozenset({"jpeg", "webp"}))
    refused = upload(service.base_url, body, format="avif")
    assert refused.status_code == 422 and "webp" in refused.json()["error"]["message"]
    with service.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Request)) == 0
        db.session.remove()


# --- retention ------------------------------------------------------------------------------------


def _age(service, request_id: str, days: float) -> None:
    """Make a request, and the outputs its images point at, look ``days`` old."""
    past = utcnow() - timedelta(days=days)
    with service.app.app_context():
        db.session.execute(
            update(Request).where(Request.id == uuid.UUID(request_id)).values(created_at=past, updated_at=past)
        )
        output_ids = select(ImageRow.output_id).where(ImageRow.request_id == uuid.UUID(request_id))
        db.session.execute(
            update(ImageOutput).where(ImageOutput.id.in_(output_ids)).values(created_at=past, last_used_at=past)
        )
        db.session.commit()
        db.session.remove()


def _apply_retention(service) -> dict[str, int]:
    # The function the task runs, not the task: a shared task runs in the app of the newest Celery app, and
    # another test of this process may have created one on a database of its own.
    with service.app.app_context():
        report = housekeeping.apply_retention(service.app.config["SETTINGS"])
        db.session.remove()
    return report


def _requests_as_retention_sees_them(service) -> str:
    """Every request's id, status and times, and the clock: what a retention report that missed one is read with."""
    with service.app.app_context():
        rows = db.session.execute(select(Request.id, Request.status, Request.created_at, Request.updated_at)).all()
        db.session.remove()
    return f"now {utcnow().isoformat()}; requests {[tuple(map(str, row)) for row in rows]}"


def _stored_file(service, output_url: str) -> Path:
    return service.app.config["SETTINGS"].storage_root / urlsplit(output_url).path.removeprefix("/media/")


def test_a_request_past_retention_goes_with_its_files_and_an_output_still_used_stays(service, source_server):
    shared = VersionedSource(source_server, photo(size=(640, 480)))
    own = VersionedSource(source_server, photo(size=(660, 500)))
    old = completed(service, csv_of([(1, "A", [shared.url, own.url])]))
    recent = completed(service, csv_of([(1, "A", [shared.url])]))
    old_shared, old_own = images_of(old)
    assert images_of(recent)[0]["reused"] is True
    _age(service, old["request_id"], days=31)

    report = _apply_retention(service)

    assert report["requests"] == 1 and report["outputs"] == 1, (report, _requests_as_retention_sees_them(service))
    assert requests.get(service.url(f"/api/status/{old['request_id']}"), timeout=10).status_code == 404
    assert not _stored_file(service, old_own["output_url"]).exists()
    assert requests.get(old_own["output_url"], timeout=10).status_code == 404
    # The recent request still points at the shared output: its file stays.
    assert _stored_file(service, old_shared["output_url"]).exists()
    assert fetch_output(images_of(wait_final(service.base_url, recent["request_id"]))[0]["output_url"])
    with service.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ImageRow)) == 1
        db.session.remove()

    _age(service, recent["request_id"], days=31)
    report = _apply_retention(service)
    assert report["requests"] == 1 and report["outputs"] == 1
    assert not _stored_file(service, old_shared["output_url"]).exists()
    assert encodes(service) == 0


def test_retention_keeps_recent_and_unfinished_requests(service, source_server):
    source = VersionedSource(source_server, photo())
    final = completed(service, csv_of([(1, "A", [source.url])]))
    _age(service, final["request_id"], days=29)
    report = _apply_retention(service)
    assert report is None or report["requests"] == 0
    assert requests.get(service.url(f"/api/status/{final['request_id']}"), timeout=10).status_code == 200
