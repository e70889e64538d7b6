"""Orphaned objects: what a store that answered too late, a worker killed before ``mark_stored`` or a superseded
claim left in the store is deleted by the sweep once no task can still be writing it, with the row that named
it; an object a live claim or a stored output names is never touched.

Each test runs on S3 (moto's server on loopback, as a deployment uses it) and on local storage, on this run's
database, calling the sweep directly. No task is ever sent.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ReadTimeoutError
from flask import current_app
from PIL import Image as PilImage
from sqlalchemy import func, select, update
from support.s3 import MotoS3

import storage
from fetching import fetcher
from lifecycle import housekeeping, orphans, retention
from models import ImageOutput, Lease, db, utcnow
from outputs import encode_claims, making, variants

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

SOURCE_URL = "http://127.0.0.2:9/a.jpg"
ENCODED = variants.EncodedFigures(1000, 400, 64, 48, 50, None, False)
SECRET = variants.variant_secret("whsec_test")


@pytest.fixture
def moto(monkeypatch) -> Iterator[MotoS3]:
    for name, value in MotoS3.CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = MotoS3(f"orphans-{uuid.uuid4().hex[:8]}").start()
    server.create_bucket()
    yield server
    server.stop()


@pytest.fixture(params=["s3", "local"])
def store(request, base_url, tmp_path, monkeypatch):
    """The service's storage for the test: a moto bucket, or a folder."""
    if request.param == "s3":
        moto = request.getfixturevalue("moto")
        backend = storage.S3Storage(moto.bucket, moto.endpoint, MotoS3.REGION, None)
    else:
        backend = storage.LocalStorage(tmp_path / "media", base_url)
    monkeypatch.setitem(current_app.extensions, "storage", backend)
    return backend


def stored_keys(store) -> set[str]:
    """Every key in the store, read without the code under test."""
    if isinstance(store, storage.S3Storage):
        listed = store.client.list_objects_v2(Bucket=store.bucket)
        return {item["Key"] for item in listed.get("Contents", [])}
    return {path.relative_to(store.root).as_posix() for path in store.root.rglob("*") if path.is_file()}


def rows_naming(key: str) -> int:
    count = db.session.scalar(select(func.count()).select_from(ImageOutput).where(ImageOutput.storage_key == key))
    db.session.commit()
    return count


def grace_s() -> float:
    return current_app.config["SETTINGS"].task_time_limit_s + 60.0


def age(*output_ids: int, seconds: float | None = None) -> None:
    """Make output rows look created (and last used) ``seconds`` ago: by default, just past the grace."""
    past = utcnow() - timedelta(seconds=seconds if seconds is not None else grace_s() + 1)
    db.session.execute(
        update(ImageOutput).where(ImageOutput.id.in_(output_ids)).values(created_at=past, last_used_at=past)
    )
    db.session.commit()


def sweep() -> dict[str, int]:
    report = housekeeping.sweep(current_app.config["SETTINGS"])
    assert report is not None
    return report


def claim(store, data: bytes = b"encoded", sha: str | None = None) -> tuple[int, str]:
    """A new variant's encode claimed and stored, not yet marked stored."""
    variant = variants.variant_key(SECRET, "", sha or uuid.uuid4().hex * 2, variants.OutputOptions())
    output_id, key = encode_claims.start_output(variant, "jpeg", grace_s())
    store.put(key, data)
    return output_id, key


def stored_output(store) -> tuple[int, str]:
    output_id, key = claim(store, b"stored output")
    assert encode_claims.mark_stored(output_id, ENCODED) is not None
    return output_id, key


def jpeg() -> bytes:
    out = io.BytesIO()
    PilImage.new("RGB", (64, 48), (200, 40, 40)).save(out, "JPEG", quality=95)
    return out.getvalue()


def answer_too_late(store, monkeypatch) -> None:
    """The store takes the next PUT, but its answer comes after the client gave up waiting."""
    if isinstance(store, storage.S3Storage):

        def read_timeout(**_kwargs) -> None:
            store.client.meta.events.unregister("after-call.s3.PutObject", read_timeout)
            raise ReadTimeoutError(endpoint_url=store.client.meta.endpoint_url)

        store.client.meta.events.register("after-call.s3.PutObject", read_timeout)
        return
    real_put = store.put

    def written_then_failed(key: str, data: bytes, content_type: str = "image/jpeg") -> None:
        real_put(key, data, content_type)
        raise storage.StorageError(f"cannot write {key}: timed out")

    monkeypatch.setattr(store, "put", written_then_failed)


def test_a_store_that_answered_too_late_leaves_no_object_once_swept(store, monkeypatch):
    settings = current_app.config["SETTINGS"]
    source = jpeg()
    fetched = fetcher.FetchedImage(data=source, validators=fetcher.Validators(None, None), not_modified=False)
    monkeypatch.setattr(fetcher, "fetch_image_revalidated", lambda *_args, **_kwargs: fetched)
    live_key = claim(store)[1]
    stored_id, stored_key = stored_output(store)
    age(stored_id, seconds=30 * 86400)
    answer_too_late(store, monkeypatch)

    with pytest.raises(storage.StorageError):
        making.make_output("", SOURCE_URL, variants.OutputOptions(), settings)

    [taken] = stored_keys(store) - {live_key, stored_key}
    assert rows_naming(taken) == 1  # the given-up claim keeps naming what the store may have taken
    variant = variants.variant_key(SECRET, "", hashlib.sha256(source).hexdigest(), variants.OutputOptions())
    assert variants.find_stored(variant) is None
    # Within the grace the store may still be writing it: it stays.
    assert sweep()["orphaned_objects"] == 0
    assert taken in stored_keys(store)

    taken_id = db.session.scalar(select(ImageOutput.id).where(ImageOutput.storage_key == taken))
    db.session.commit()
    age(taken_id)
    report = sweep()
    assert stored_keys(store) == {live_key, stored_key}
    assert rows_naming(taken) == 0 and report["orphaned_objects"] == 1
    assert (rows_naming(live_key), rows_naming(stored_key)) == (1, 1)
    assert variants.find_stored(variant) is None


def test_the_store_of_a_worker_killed_before_marking_it_is_deleted_after_the_hard_time_limit(store):
    dead_id, dead_key = claim(store)
    live_id, live_key = claim(store)
    stored_id, stored_key = stored_output(store)
    age(dead_id)
    age(stored_id, seconds=30 * 86400)

    report = sweep()

    assert stored_keys(store) == {live_key, stored_key}
    assert rows_naming(dead_key) == 0 and report["orphaned_objects"] == 1
    # Should the dead worker only have frozen, waking marks nothing: its claim is gone.
    assert encode_claims.mark_stored(dead_id, ENCODED) is None
    assert encode_claims.mark_stored(live_id, ENCODED) is not None
    assert db.session.get(ImageOutput, stored_id).stored_at is not None
    db.session.commit()


def test_the_store_of_a_superseded_claim_is_deleted_and_the_take_over_kept(store):
    sha = uuid.uuid4().hex * 2
    frozen_id, frozen_key = claim(store, b"frozen", sha=sha)
    age(frozen_id)
    taken_id, taken_key = claim(store, b"take-over", sha=sha)
    assert taken_id != frozen_id

    report = sweep()

    assert stored_keys(store) == {taken_key}
    assert rows_naming(frozen_key) == 0 and rows_naming(taken_key) == 1
    assert report["orphaned_objects"] == 1
    assert encode_claims.mark_stored(taken_id, ENCODED) is not None


def test_an_unused_output_retention_could_not_delete_stays_named_until_the_sweep_deletes_it(store, monkeypatch):
    unused_id, unused_key = stored_output(store)
    age(unused_id, seconds=2 * 3600)

    def store_down(key: str) -> None:
        raise storage.StorageError(f"the object store did not delete {key}: timed out")

    with monkeypatch.context() as patch:
        patch.setattr(store, "delete", store_down)
        report = retention.RetentionReport()
        assert retention.delete_unused_outputs(3600, store, report) == 0
        assert len(report.storage_errors) == 1
    assert rows_naming(unused_key) == 1
    assert variants.find_stored(db.session.get(ImageOutput, unused_id).variant) is None

    report = sweep()
    assert stored_keys(store) == set() and rows_naming(unused_key) == 0
    assert report["orphaned_objects"] == 1


def unnamed_key(output_id: int) -> str:
    variant = uuid.uuid4().hex * 2
    return f"objects/{variant[:2]}/{variant}-{output_id}.jpg"


def expire_listing_lease() -> None:
    db.session.execute(
        update(Lease).where(Lease.name == orphans.LISTING_LEASE).values(expires_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def list_for_orphans(store, modified_before) -> orphans.OrphanReport:
    expire_listing_lease()
    report = orphans.OrphanReport()
    orphans.delete_unnamed_objects(store, modified_before, budget_s=10.0, report=report)
    return report


def test_the_listing_deletes_old_objects_no_row_names_and_nothing_else(store):
    live_id, live_key = claim(store)
    stored_key = stored_output(store)[1]
    given_up_id, given_up_key = claim(store)
    encode_claims.abandon_output(given_up_id)
    # Left by an older version, or by a delete that failed after its row went; one holds a live row's id.
    unnamed = {unnamed_key(10**12), unnamed_key(live_id)}
    for key in unnamed:
        store.put(key, b"orphan")
    store.put("objects/ab/notes.txt", b"not an output")

    assert list_for_orphans(store, utcnow() - timedelta(seconds=grace_s())).unnamed == 0
    assert unnamed <= stored_keys(store)

    assert list_for_orphans(store, utcnow() + timedelta(seconds=1)).unnamed == 2
    assert stored_keys(store) == {live_key, stored_key, given_up_key, "objects/ab/notes.txt"}
    assert (rows_naming(live_key), rows_naming(stored_key), rows_naming(given_up_key)) == (1, 1, 1)


def test_the_listing_goes_through_the_store_a_page_per_run_and_starts_over_at_the_end(store, monkeypatch):
    monkeypatch.setattr(orphans, "OBJECTS_PER_LISTING", 2)
    monkeypatch.setattr(storage.S3Storage, "LIST_PAGE", 1)
    stored_key = stored_output(store)[1]
    unnamed = sorted(unnamed_key(10**12 + n) for n in range(4))
    for key in unnamed:
        store.put(key, b"orphan")
    after = utcnow() + timedelta(seconds=1)

    deleted = [list_for_orphans(store, after).unnamed for _run in range(3)]

    assert sum(deleted) == 4 and max(deleted) <= 2
    assert stored_keys(store) == {stored_key}
    assert orphans_position() is None  # the third run reached the end: the next one starts over
    store.put(unnamed[0], b"orphan again")
    assert list_for_orphans(store, after + timedelta(seconds=5)).unnamed == 1


def orphans_position() -> str | None:
    position = db.session.scalar(select(Lease.position).where(Lease.name == orphans.LISTING_LEASE))
    db.session.commit()
    return position


def test_the_sweep_deletes_an_old_file_no_row_names_and_keeps_a_young_one(base_url, tmp_path, monkeypatch):
    local = storage.LocalStorage(tmp_path / "media", base_url)
    monkeypatch.setitem(current_app.extensions, "storage", local)
    stored_key = stored_output(local)[1]
    old, young = unnamed_key(10**12), unnamed_key(10**12 + 1)
    for key in (old, young):
        local.put(key, b"orphan")
    long_ago = Path(local.root / old).stat().st_mtime - grace_s() - 1
    for key in (old, stored_key):
        os.utime(local.root / key, (long_ago, long_ago))

    report = sweep()

    assert stored_keys(local) == {stored_key, young}
    assert report["orphaned_objects"] == 1
