"""A conditional poll of an unchanged request is answered 304 from the API process's memory, with no statement
sent to the database; any change of the request's row, committed anywhere, is notified and seen by the next poll.

Needs PostgreSQL: the notifications are its own (LISTEN/NOTIFY, by a trigger on the requests table).
"""

from __future__ import annotations

import time
import uuid

import pytest
from flask import current_app
from sqlalchemy import event, update

from intake.csv_input import ProductRow
from lifecycle import creation, retention
from models import Request, RequestStatus, db, utcnow

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")


@pytest.fixture
def versions(base_url):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("change notifications are PostgreSQL's")
    found = current_app.extensions["request_versions"]
    found.known(uuid.uuid4())  # starts the listener
    deadline = time.monotonic() + 10
    while not found.listening() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found.listening(), "the listener never connected"
    return found


@pytest.fixture
def statements():
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    event.remove(db.engine, "before_cursor_execute", record)


def new_request() -> uuid.UUID:
    request_id = creation.create_request(
        [ProductRow(1, "P1", ("http://127.0.0.2:9/a.jpg",), 2)], creation.UploadOptions()
    ).id
    db.session.commit()
    # Whatever its creation notified is seen before the test reads it: a read while a change is notified is
    # rightly not kept.
    versions = current_app.extensions["request_versions"]
    while True:
        before = versions.mark()
        time.sleep(0.15)
        if versions.mark() == before:
            return request_id


def wait_forgotten(versions, request_id: uuid.UUID) -> None:
    deadline = time.monotonic() + 5
    while versions.known(request_id) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert versions.known(request_id) is None, "the change was never notified"
    db.session.remove()  # the test's requests share its app context, and so its session: a fresh one reads anew


def wait_notified(versions, before: int) -> None:
    """Until the listener has seen a change after ``before`` (a ``mark``): a read from then on is kept."""
    deadline = time.monotonic() + 5
    while versions.mark() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert versions.mark() != before, "the change was never notified"
    db.session.remove()


def test_an_unchanged_poll_costs_no_statement_and_a_change_is_seen_at_once(versions, statements):
    request_id = new_request()
    client = current_app.test_client()
    first = client.get(f"/api/status/{request_id}")
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert versions.known(request_id) is not None

    statements.clear()
    for _ in range(5):
        again = client.get(f"/api/status/{request_id}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["ETag"] == etag
    assert statements == []

    # Another page of the same request: its own validator, from the same version.
    other_page = client.get(f"/api/status/{request_id}?per_page=5")
    assert other_page.status_code == 200
    statements.clear()
    validator = {"If-None-Match": other_page.headers["ETag"]}
    assert client.get(f"/api/status/{request_id}?per_page=5", headers=validator).status_code == 304
    assert statements == []

    # A change committed elsewhere, as a worker's would be. A new status: a page may lag a running request's
    # counts by STATUS_MAX_LAG_S, never its status.
    with db.engine.begin() as connection:
        started = {"status": RequestStatus.PROCESSING, "completed_images": 1, "updated_at": utcnow()}
        connection.execute(update(Request).where(Request.id == request_id).values(**started))
    wait_forgotten(versions, request_id)
    changed = client.get(f"/api/status/{request_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert changed.get_json()["status"] == "PROCESSING"


def test_a_version_read_while_its_change_was_notified_is_not_kept(versions):
    request_id = new_request()
    mark = versions.mark()
    request = db.session.get(Request, request_id)
    db.session.commit()
    with db.engine.begin() as connection:
        connection.execute(update(Request).where(Request.id == request_id).values(updated_at=utcnow()))
    deadline = time.monotonic() + 5
    while versions.mark() == mark and time.monotonic() < deadline:
        time.sleep(0.02)
    versions.remember(request, mark)
    assert versions.known(request_id) is None


def test_a_poll_with_another_callers_key_is_not_answered_from_memory(versions):
    request_id = new_request()
    client = current_app.test_client()
    etag = client.get(f"/api/status/{request_id}").headers["ETag"]
    version = versions.known(request_id)
    assert version is not None and version.owner_key_hash is None
    with db.engine.begin() as connection:
        connection.execute(update(Request).where(Request.id == request_id).values(owner_key_hash="someone-else"))
    wait_forgotten(versions, request_id)
    assert client.get(f"/api/status/{request_id}", headers={"If-None-Match": etag}).status_code == 404


def test_a_deleted_request_is_forgotten(versions):
    request_id = new_request()
    client = current_app.test_client()
    etag = client.get(f"/api/status/{request_id}").headers["ETag"]
    assert retention.delete_request(request_id, current_app.extensions["storage"], retention.RetentionReport())
    db.session.commit()
    wait_forgotten(versions, request_id)
    assert client.get(f"/api/status/{request_id}", headers={"If-None-Match": etag}).status_code == 404


def test_a_running_requests_counters_are_read_once_per_lag_its_status_at_once(versions, statements):
    request_id = new_request()
    before = versions.mark()
    with db.engine.begin() as connection:
        connection.execute(update(Request).where(Request.id == request_id).values(status=RequestStatus.PROCESSING))
    wait_notified(versions, before)
    client = current_app.test_client()
    first = client.get(f"/api/status/{request_id}")
    assert first.status_code == 200 and versions.known(request_id) is not None

    # Counters move: the version is kept, and so is the page, for STATUS_MAX_LAG_S at most.
    with db.engine.begin() as connection:
        one_done = {"completed_images": 1, "updated_at": utcnow()}
        connection.execute(update(Request).where(Request.id == request_id).values(**one_done))
    deadline = time.monotonic() + 5
    while versions.known(request_id).behind_since is None and time.monotonic() < deadline:
        time.sleep(0.02)
    statements.clear()
    again = client.get(f"/api/status/{request_id}")
    assert again.status_code == 200 and again.data == first.data and statements == []
    time.sleep(versions.max_lag_s + 0.1)
    assert versions.known(request_id) is None

    # A new status is never served late.
    client.get(f"/api/status/{request_id}")
    assert versions.known(request_id) is not None
    with db.engine.begin() as connection:
        connection.execute(update(Request).where(Request.id == request_id).values(status=RequestStatus.COMPLETED))
    wait_forgotten(versions, request_id)
    assert client.get(f"/api/status/{request_id}").get_json()["status"] == "COMPLETED"
