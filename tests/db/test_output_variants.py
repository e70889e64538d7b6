"""Shared outputs: variants, one encode at a time per variant, lookups and clean-up, on the database alone."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from lifecycle import retention
from models import ImageOutput, SourceVersion, db, utcnow
from outputs import encode_claims, variants

SECRET = variants.variant_secret("whsec_test")
SHA = "ab" * 32
FIGURES = variants.EncodedFigures(1000, 400, 64, 48, 50, None, False)


def test_a_variant_is_the_same_for_the_same_work_and_differs_with_anything_that_changes_the_bytes():
    options = variants.OutputOptions()
    same = variants.variant_key(SECRET, "owner", SHA, options)
    assert same == variants.variant_key(SECRET, "owner", SHA, variants.OutputOptions())
    others = {
        variants.variant_key(SECRET, "other owner", SHA, options),
        variants.variant_key(SECRET, "", SHA, options),
        variants.variant_key(SECRET, "owner", "cd" * 32, options),
        variants.variant_key(variants.variant_secret("whsec_other"), "owner", SHA, options),
        *(
            variants.variant_key(SECRET, "owner", SHA, dataclasses.replace(options, **change))
            for change in (
                {"output_format": "webp"},
                {"quality": 51},
                {"quality": None, "target_score": 0.965},
                {"max_dimension": 1000},
                {"never_bigger": False},
            )
        ),
    }
    assert same not in others and len(others) == 9
    assert SHA not in same and len(same) == 64


@pytest.fixture
def app(quiet_service, clean_quiet_tables):
    with quiet_service.app.app_context():
        yield quiet_service.app
        db.session.remove()


def _count(model) -> int:
    count = db.session.scalar(select(func.count()).select_from(model))
    db.session.rollback()
    return count


def test_one_worker_encodes_a_variant_and_another_waits_for_its_output(app):
    variant = variants.variant_key(SECRET, "", SHA, variants.OutputOptions())
    claim = encode_claims.claim_or_find(variant, "jpeg", stale_after_s=300)
    assert isinstance(claim, tuple)
    output_id, key = claim
    assert key == f"objects/{variant[:2]}/{variant}-{output_id}.jpg"
    found: list = []

    def second_worker() -> None:
        with app.app_context():
            found.append(encode_claims.claim_or_find(variant, "jpeg", stale_after_s=300))
            db.session.remove()

    waiting = threading.Thread(target=second_worker)
    waiting.start()
    time.sleep(0.5)
    assert not found  # still waiting for the first encode
    encode_claims.mark_stored(output_id, FIGURES)
    waiting.join(10)

    [stored] = found
    assert isinstance(stored, variants.StoredOutput) and (stored.id, stored.figures.bytes_out) == (output_id, 400)
    assert _count(ImageOutput) == 1


def test_an_encode_whose_worker_died_is_taken_over(app):
    variant = variants.variant_key(SECRET, "", SHA, variants.OutputOptions())
    output_id, key = encode_claims.start_output(variant, "jpeg", stale_after_s=300)
    assert encode_claims.start_output(variant, "jpeg", stale_after_s=300) is None
    past = utcnow() - timedelta(seconds=301)
    db.session.execute(update(ImageOutput).values(created_at=past, last_used_at=past))
    db.session.commit()

    # A claim of its own, under a key of its own: the dead worker, should it wake, writes nothing of it.
    taken_id, taken_key = encode_claims.start_output(variant, "jpeg", stale_after_s=300)
    assert taken_id != output_id and taken_key != key


def test_a_worker_that_waited_too_long_gives_up_for_now(app, monkeypatch):
    variant = variants.variant_key(SECRET, "", SHA, variants.OutputOptions())
    encode_claims.start_output(variant, "jpeg", stale_after_s=300)
    with pytest.raises(encode_claims.PeerStillEncoding):
        encode_claims.wait_for_peer(variant, wait_s=0.3)


def test_a_dropped_output_goes_only_if_nobody_found_it(app):
    variant = variants.variant_key(SECRET, "", SHA, variants.OutputOptions())
    output_id, _ = encode_claims.start_output(variant, "jpeg", stale_after_s=300)
    encode_claims.mark_stored(output_id, FIGURES)
    assert variants.find_stored(variant) is not None  # another image found it meanwhile
    assert encode_claims.drop_if_unused(output_id) is None

    other = variants.variant_key(SECRET, "", "cd" * 32, variants.OutputOptions())
    unused_id, unused_key = encode_claims.start_output(other, "jpeg", stale_after_s=300)
    encode_claims.mark_stored(unused_id, FIGURES)
    assert encode_claims.drop_if_unused(unused_id) == unused_key
    assert _count(ImageOutput) == 1


def test_clean_up_leaves_recently_found_outputs_alone(app, tmp_path):
    from storage import LocalStorage

    storage = LocalStorage(tmp_path, "http://x")
    variant = variants.variant_key(SECRET, "", SHA, variants.OutputOptions())
    output_id, key = encode_claims.start_output(variant, "jpeg", stale_after_s=300)
    storage.put(key, b"jpeg")
    encode_claims.mark_stored(output_id, FIGURES)
    past = utcnow() - timedelta(hours=2)
    db.session.execute(update(ImageOutput).values(created_at=past, last_used_at=past))
    db.session.commit()
    assert variants.find_stored(variant) is not None

    report = retention.RetentionReport()
    assert retention.delete_unused_outputs(3600, storage, report) == 0
    db.session.execute(update(ImageOutput).values(last_used_at=past))
    db.session.commit()
    assert retention.delete_unused_outputs(3600, storage, report) == 1
    assert not (tmp_path / key).exists() and _count(ImageOutput) == 0


def test_a_source_version_is_kept_only_while_the_url_sends_validators(app):
    variants.remember_source("", "http://127.0.0.2/a.jpg", '"v1"', None, SHA)
    assert variants.known_source("", "http://127.0.0.2/a.jpg") == variants.KnownSource('"v1"', None, SHA)
    assert variants.known_source("tenant", "http://127.0.0.2/a.jpg") is None
    variants.remember_source("", "http://127.0.0.2/a.jpg", None, "Tue, 01 Dec 2026 10:00:00 GMT", "cd" * 32)
    assert variants.known_source("", "http://127.0.0.2/a.jpg").content_sha256 == "cd" * 32
    assert _count(SourceVersion) == 1
    variants.remember_source("", "http://127.0.0.2/a.jpg", None, None, SHA)
    assert variants.known_source("", "http://127.0.0.2/a.jpg") is None


def test_a_claim_after_the_encode_finished_finds_the_output_instead(app):
    variant = variants.variant_key(SECRET, "", SHA, variants.OutputOptions())
    first, _ = encode_claims.start_output(variant, "jpeg", stale_after_s=300)
    assert variants.find_stored(variant) is None  # a second worker looks while the first still encodes
    encode_claims.mark_stored(first, FIGURES)  # ... and the first one finishes before the second claims

    assert encode_claims.start_output(variant, "jpeg", stale_after_s=300) is None
    assert encode_claims.claim_or_find(variant, "jpeg", stale_after_s=300).id == first
    assert _count(ImageOutput) == 1


def test_an_encode_claimed_by_a_worker_whose_clock_runs_slow_is_not_taken_over_as_stale(app, monkeypatch):
    variant = variants.variant_key(SECRET, "", "ef" * 32, variants.OutputOptions())
    with monkeypatch.context() as slow_clock:
        slow_clock.setattr(encode_claims, "utcnow", lambda: utcnow() - timedelta(seconds=600))
        first = encode_claims.start_output(variant, "jpeg", stale_after_s=66)
    assert first is not None

    assert encode_claims.start_output(variant, "jpeg", stale_after_s=66) is None
    assert db.session.get(ImageOutput, first[0]).superseded_at is None
    db.session.commit()
