"""The status rule's two forms agree: in Python on numbers, and evaluated by this run's database on columns.

The database is the quiet one of ``support/services.py``: PostgreSQL when TEST_DATABASE_URL is set, else SQLite.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from intake.csv_input import ProductRow
from lifecycle import claims, control, creation
from models import (
    STATUS_RULE,
    Image,
    ImageCounts,
    ImageStatus,
    Request,
    RequestStatus,
    db,
    derive_status,
    status_case,
    status_of,
)

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

FIELDS = ("pending", "processing", "completed", "failed", "cancelled")
#: Every combination of 0, 1 or 2 images in each status: each condition of the rule both holds and fails.
EVERY_COUNT = list(itertools.product(range(3), repeat=len(FIELDS)))


def test_the_database_evaluates_the_rule_as_python_does_on_every_combination_of_counts(base_url):
    table = Table(
        "status_rule_counts",
        MetaData(),
        Column("id", Integer, primary_key=True),
        *(Column(field, Integer, nullable=False) for field in FIELDS),
    )
    with db.engine.connect() as connection:
        table.create(connection)
        try:
            connection.execute(
                insert(table),
                [{"id": n, **dict(zip(FIELDS, counts, strict=True))} for n, counts in enumerate(EVERY_COUNT)],
            )
            columns = ImageCounts(**{field: table.c[field] for field in FIELDS})
            by_database = dict(connection.execute(select(table.c.id, status_case(columns))).all())
        finally:
            table.drop(connection)
            connection.commit()

    assert len(by_database) == len(EVERY_COUNT)
    for n, counts in enumerate(EVERY_COUNT):
        in_python = status_of(ImageCounts(*counts))
        assert by_database[n] == in_python, dict(zip(FIELDS, counts, strict=True))
        statuses = [status for status, count in zip(ImageStatus, counts, strict=True) for _ in range(count)]
        assert derive_status(statuses) == in_python, statuses


def test_every_status_the_rule_names_is_reached():
    reached = {status_of(ImageCounts(*counts)) for counts in EVERY_COUNT}
    assert reached == set(RequestStatus)
    assert len(STATUS_RULE) == len(RequestStatus) - 1


def url(n: int) -> str:
    return f"http://127.0.0.2:9/{n}.jpg"


def new_request(images: int) -> tuple[uuid.UUID, list[int]]:
    """A request of one product per image; returns its id and its images' ids in order."""
    rows = [ProductRow(n + 1, f"P{n}", (url(n),), n + 2) for n in range(images)]
    request_id = creation.create_request(rows, creation.UploadOptions()).id
    ids = dict(db.session.execute(select(Image.source_url, Image.id).where(Image.request_id == request_id)).all())
    db.session.commit()
    return request_id, [ids[url(n)] for n in range(images)]


@pytest.mark.parametrize(
    "outcomes",
    [outcomes for length in (1, 2, 3) for outcomes in itertools.product(("complete", "fail", "cancel"), repeat=length)],
    ids=lambda outcomes: "+".join(outcomes),
)
def test_a_request_ends_in_the_status_the_rule_gives_its_images(base_url, outcomes):
    """Completed and failed images end it by its counters; a cancel ends it with the images still active."""
    request_id, image_ids = new_request(len(outcomes))
    for image_id, outcome in zip(image_ids, outcomes, strict=True):
        if outcome == "cancel":
            continue
        assert claims.claim_image(image_id, f"t{image_id}", 5, base_url) is not None
        if outcome == "complete":
            assert claims.complete_image(image_id, f"out/{image_id}.jpg", base_url)
        else:
            assert claims.fail_image(image_id, "fetch_failed", "no answer", base_url)
    if "cancel" in outcomes:
        assert control.cancel_request(request_id, base_url)

    db.session.expire_all()
    status = db.session.scalar(select(Request.status).where(Request.id == request_id))
    images = db.session.scalars(select(Image.status).where(Image.request_id == request_id)).all()
    db.session.commit()
    assert status == derive_status(images)
