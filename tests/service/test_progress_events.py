"""``GET /api/status/<id>/events``: live progress as Server-Sent Events, and the hub behind it.

The first tests run a real request on the session's worker against slow image sources; the others
use the quiet service (no worker, no dispatcher), where the test itself moves a request from one
state to the next, so that what the stream must and must not send is known exactly.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from support.api import EventStream, csv_of, image_ids_of, upload, wait_final
from support.images import SlowImages
from support.loopback import wait_until
from support.services import ApiServer

from reading import progress_hub, progress_stream
from reading.progress_hub import ProgressHub, ProgressState

pytestmark = pytest.mark.integration

EVENT_KEYS = ["request_id", "status", "progress", "totals", "updated_at"]
KEY_A, KEY_B = "events-a-" + uuid.uuid4().hex, "events-b-" + uuid.uuid4().hex


def events_url(base_url: str, request_id: str) -> str:
    return f"{base_url}/api/status/{request_id}/events"


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


# --- a real request, on the session's worker ---------------------------------------------------


@pytest.mark.usefixtures("clean_tables")
def test_a_stream_follows_a_running_request_to_its_final_event(service, source_server):
    slow = SlowImages(source_server, 30, delay_s=0.25, prefix="events")
    missing = source_server.url(f"/{uuid.uuid4().hex}/missing.jpg")
    rows = [(n + 1, f"SKU{n}", slow.urls[n * 3 : n * 3 + 3]) for n in range(10)] + [(11, "Gone", [missing])]
    request_id = upload(service.base_url, csv_of(rows)).json()["request_id"]

    with EventStream(events_url(service.base_url, request_id)) as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        assert stream.response.headers["Cache-Control"] == "no-cache"
        assert stream.response.headers["X-Accel-Buffering"] == "no"
        frames = list(stream.frames())  # ends by itself once the final event is sent

    assert frames[0] == {"retry": "3000", "at": frames[0]["at"]}
    events = [frame for frame in frames if "event" in frame]
    assert [e["event"] for e in events][-1] == "final"
    assert {e["event"] for e in events[:-1]} <= {"progress"}
    assert len(events) >= 3, events  # several states on the way, not only the first and the last
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)
    for event in events:
        assert list(event["data"]) == EVENT_KEYS and event["data"]["request_id"] == request_id
    percents = [e["data"]["progress"]["percent"] for e in events]
    assert percents == sorted(percents)
    # Coalesced: 31 images each change the row, yet the events come at most a few a second.
    assert len(events) < 31
    window_s = events[-1]["at"] - events[0]["at"]
    assert len(events) <= 4 * window_s + 3, (len(events), window_s)

    final = events[-1]["data"]
    answer = wait_final(service.base_url, request_id)
    assert final["status"] == answer["status"] == "COMPLETED_WITH_ERRORS"
    assert final["progress"] == answer["progress"]
    assert final["totals"] == answer["totals"] and final["totals"]["bytes_in"] > 0
    assert final["updated_at"] == answer["updated_at"]


@pytest.mark.usefixtures("clean_tables")
def test_a_request_already_final_gets_its_final_event_at_once(service, source_server):
    slow = SlowImages(source_server, 1, delay_s=0, prefix="events-final")
    request_id = upload(service.base_url, csv_of([(1, "A", slow.urls)])).json()["request_id"]
    answer = wait_final(service.base_url, request_id)

    with EventStream(events_url(service.base_url, request_id)) as stream:
        frames = list(stream.frames())

    assert [f.get("event") for f in frames] == [None, "final"]
    assert frames[1]["data"]["status"] == answer["status"] == "COMPLETED"
    assert frames[1]["data"]["progress"] == answer["progress"]
    # Asked again with the id just seen: the final event all the same, and the stream ends.
    with EventStream(events_url(service.base_url, request_id), {"Last-Event-ID": frames[1]["id"]}) as again:
        assert [f.get("event") for f in again.frames()] == [None, "final"]


@pytest.mark.usefixtures("clean_tables")
def test_an_unknown_request_has_no_stream(service):
    for request_id in (str(uuid.uuid4()), "not-a-request"):
        response = requests.get(events_url(service.base_url, request_id), timeout=10)
        assert_error(response, 404, "request_not_found")


# --- the quiet service: the test moves the request ---------------------------------------------


@pytest.fixture
def quiet_events_api(quiet_service, clean_quiet_tables) -> Iterator[tuple[str, object]]:
    """An API on the quiet database with fast heartbeats and room for two streams; yields (URL, app)."""
    from app import create_app

    server = ApiServer()
    app = create_app(
        {
            **quiet_service.overrides,
            "public_base_url": server.base_url,
            "events_heartbeat_s": 0.3,
            "events_max_streams": 2,
        }
    )
    server.start(app)
    yield server.base_url, app
    server.stop()


def _quiet_request(base_url: str, images: int = 3, headers: dict[str, str] | None = None) -> str:
    urls = [f"http://127.0.0.2:9/{n}.jpg" for n in range(images)]
    created = upload(base_url, csv_of([(1, "A", urls)]), headers=headers)
    assert created.status_code == 202, created.text
    return created.json()["request_id"]


def _next_with_completed(events: Iterator[dict], completed: int) -> dict:
    """The next event that counts ``completed`` images (a claim in between may show as one of its own)."""
    for _ in range(5):
        event = next(events)
        if event["data"]["progress"]["completed_images"] == completed:
            return event
    raise AssertionError(f"no event with {completed} images completed")


def _complete_next(app, request_id: str, base_url: str, fail: bool = False) -> None:
    """Claim and finish the request's next pending image, as a worker would."""
    from lifecycle import claims
    from models import Image, ImageStatus, db

    with app.app_context():
        pending = [i for i in image_ids_of(uuid.UUID(request_id)) if db.session.get(Image, i).status == "PENDING"]
        db.session.remove()
        image_id = pending[0]
        assert claims.claim_image(image_id, "test", 5, base_url) is not None
        if fail:
            claims.fail_image(image_id, "http_404", "Not Found", base_url)
        else:
            claims.complete_image(image_id, f"{request_id}/{image_id}.jpg", base_url)
        assert db.session.get(Image, image_id).status in (ImageStatus.COMPLETED, ImageStatus.FAILED)
        db.session.remove()


def test_a_stream_resumed_with_last_event_id_repeats_nothing(quiet_events_api):
    base_url, app = quiet_events_api
    request_id = _quiet_request(base_url)
    url = events_url(base_url, request_id)

    with EventStream(url) as stream:
        events = stream.events()
        first = next(events)
        assert first["event"] == "progress" and first["data"]["status"] == "PENDING"
        _complete_next(app, request_id, base_url)
        second = _next_with_completed(events, 1)
        assert second["id"] != first["id"]

    # Resumed at the state already seen: nothing but keep-alives until the request changes.
    with EventStream(url, {"Last-Event-ID": second["id"]}) as resumed:
        frames = resumed.frames()
        assert "retry" in next(frames)
        quiet = [next(frames) for _ in range(3)]
        assert [f.get("comment") for f in quiet] == ["keep-alive"] * 3, quiet
        _complete_next(app, request_id, base_url)
        changed = _next_with_completed((f for f in frames if "event" in f), 2)
    assert changed["event"] == "progress" and changed["id"] not in (first["id"], second["id"])


def test_a_resumed_stream_reaches_final(quiet_events_api):
    base_url, app = quiet_events_api
    request_id = _quiet_request(base_url, images=2)
    url = events_url(base_url, request_id)
    with EventStream(url) as stream:
        seen = next(stream.events())

    _complete_next(app, request_id, base_url)
    # Resumed at a state that is no longer current: the current one at once.
    with EventStream(url, {"Last-Event-ID": seen["id"]}) as resumed:
        events = resumed.events()
        now = next(events)
        assert now["id"] != seen["id"] and now["data"]["progress"]["completed_images"] == 1
        _complete_next(app, request_id, base_url, fail=True)
        rest = list(events)
    assert [e["event"] for e in rest][-1] == "final" and len(rest) <= 2  # the claim may show on its own
    assert rest[-1]["data"]["status"] == "COMPLETED_WITH_ERRORS"
    status = requests.get(f"{base_url}/api/status/{request_id}", timeout=10).json()
    assert rest[-1]["data"]["progress"] == status["progress"] and rest[-1]["id"] not in (seen["id"], now["id"])


def test_a_cancelled_request_ends_its_streams(quiet_events_api):
    base_url, _app = quiet_events_api
    request_id = _quiet_request(base_url)
    with EventStream(events_url(base_url, request_id)) as stream:
        events = stream.events()
        assert next(events)["data"]["status"] == "PENDING"
        cancelled = requests.post(f"{base_url}/api/requests/{request_id}/cancel", timeout=10)
        assert cancelled.status_code == 200, cancelled.text
        rest = list(events)
    assert [e["event"] for e in rest] == ["final"] and rest[0]["data"]["status"] == "CANCELLED"
    assert rest[0]["data"]["progress"]["cancelled_images"] == 3


def test_the_stream_cap_answers_503_and_frees_slots(quiet_events_api):
    base_url, app = quiet_events_api
    request_id = _quiet_request(base_url)
    url = events_url(base_url, request_id)
    hub: ProgressHub = app.extensions["progress_hub"]

    first, second = EventStream(url), EventStream(url)
    try:
        assert first.response.status_code == second.response.status_code == 200
        refused = requests.get(url, timeout=10)
        assert_error(refused, 503, "too_many_streams")
        assert refused.headers["Retry-After"].isdigit()
        # The ordinary API is not held up by the two parked streams.
        assert requests.get(f"{base_url}/api/status/{request_id}", timeout=10).status_code == 200
    finally:
        first.close()
        second.close()
    # A slot is given back once the server sees the client gone (at the next keep-alive at most).
    assert wait_until(lambda: hub.open_streams == 0, timeout_s=10), hub.open_streams
    with EventStream(url) as third:
        assert third.response.status_code == 200


def test_one_caller_past_its_share_of_streams_is_refused_and_another_still_follows(quiet_service, clean_quiet_tables):
    from app import create_app

    server = ApiServer()
    overrides = {
        **quiet_service.overrides,
        "public_base_url": server.base_url,
        "api_keys": (KEY_A, KEY_B),
        "events_heartbeat_s": 0.3,
        "events_max_streams": 4,
        "events_max_streams_per_caller": 2,
    }
    app = create_app(overrides)
    server.start(app)
    key_a, key_b = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
    try:
        url_a = events_url(server.base_url, _quiet_request(server.base_url, headers=key_a))
        url_b = events_url(server.base_url, _quiet_request(server.base_url, headers=key_b))
        held = [EventStream(url_a, key_a), EventStream(url_a, key_a)]
        try:
            assert [stream.response.status_code for stream in held] == [200, 200]
            # Streamed, and its status checked before its body, so that a stream wrongly opened fails the
            # test rather than holding it.
            with requests.get(url_a, headers=key_a, stream=True, timeout=10) as refused:
                assert refused.status_code == 503
                assert_error(refused, 503, "too_many_streams")
                assert refused.headers["Retry-After"].isdigit()
            # The process has room left, and the other tenant gets it.
            with EventStream(url_b, key_b) as other:
                assert other.response.status_code == 200
                assert next(other.events())["data"]["status"] == "PENDING"
        finally:
            held[0].close()
        # The caller's slot comes back once the server sees its client gone.
        hub: ProgressHub = app.extensions["progress_hub"]
        assert wait_until(lambda: hub.open_streams == 1, timeout_s=10), hub.open_streams
        with EventStream(url_a, key_a) as again:
            assert again.response.status_code == 200
        held[1].close()
    finally:
        server.stop()


def test_waiting_streams_hold_no_database_connection(quiet_service, clean_quiet_tables):
    from app import create_app
    from models import db

    server = ApiServer()
    app = create_app({**quiet_service.overrides, "public_base_url": server.base_url, "events_heartbeat_s": 0.3})
    server.start(app)
    try:
        request_id = _quiet_request(server.base_url)
        streams = [EventStream(events_url(server.base_url, request_id)) for _ in range(6)]
        try:
            for stream in streams:
                assert next(stream.events())["event"] == "progress"
            hub: ProgressHub = app.extensions["progress_hub"]
            assert wait_until(lambda: hub.open_streams == 6, timeout_s=5)
            with app.app_context():
                pool = db.engine.pool
                # The hub's own read may hold one for a moment; six parked streams hold none.
                samples = []
                for _ in range(20):
                    samples.append(pool.checkedout())
                    time.sleep(0.05)
            assert max(samples) <= 1, samples
        finally:
            for stream in streams:
                stream.close()
    finally:
        server.stop()


def test_api_keys_rule_the_stream_as_they_rule_the_status(quiet_service, clean_quiet_tables):
    from app import create_app

    server = ApiServer()
    overrides = {**quiet_service.overrides, "public_base_url": server.base_url, "api_keys": (KEY_A, KEY_B)}
    server.start(create_app(overrides))
    try:
        request_id = _quiet_request(server.base_url, headers={"Authorization": f"Bearer {KEY_A}"})
        url = events_url(server.base_url, request_id)
        for headers in ({}, {"Authorization": "Bearer not-a-key"}):
            assert_error(requests.get(url, headers=headers, timeout=10), 401, "unauthorized")
        assert_error(requests.get(url, headers={"X-API-Key": KEY_B}, timeout=10), 404, "request_not_found")
        with EventStream(url, {"X-API-Key": KEY_A}) as own:
            assert own.response.status_code == 200
            assert next(own.events())["data"]["request_id"] == request_id
    finally:
        server.stop()


def test_the_hub_reads_every_watched_request_in_one_query(quiet_events_api):
    from sqlalchemy import event

    from models import Request, db

    base_url, app = quiet_events_api
    request_ids = [uuid.UUID(_quiet_request(base_url)) for _ in range(3)]
    hub = ProgressHub(progress_hub.database_reader(app), poll_interval_s=60, max_streams=100)
    with app.app_context():
        for request_id in request_ids:
            row = db.session.get(Request, request_id)
            state = ProgressState.of(row)
            for _ in range(30):
                hub.watch(request_id, state, 0.0)
        db.session.remove()
        statements: list[str] = []
        reader_thread = threading.get_ident()

        def count(_conn, _cursor, statement, *_args) -> None:
            if threading.get_ident() == reader_thread:
                statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            hub.poll_once()
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1 and "requests" in selects[0], statements
    assert hub.reads == 1


# --- the hub alone ------------------------------------------------------------------------------


class FakeRows:
    """What the database holds, as the hub's reader sees it; records each read."""

    def __init__(self) -> None:
        self.states: dict[uuid.UUID, ProgressState] = {}
        self.reads: list[list[uuid.UUID]] = []

    def set(self, request_id: uuid.UUID, completed: int, status: str = "PROCESSING") -> ProgressState:
        from datetime import UTC, datetime, timedelta
        from types import SimpleNamespace

        row = SimpleNamespace(
            id=request_id,
            status=status,
            total_images=10,
            completed_images=completed,
            failed_images=0,
            cancelled_images=0,
            bytes_in=100 * completed,
            bytes_out=40 * completed,
            updated_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=completed),
        )
        self.states[request_id] = ProgressState.of(row)
        return self.states[request_id]

    def read(self, request_ids: list[uuid.UUID]) -> dict[uuid.UUID, ProgressState]:
        self.reads.append(sorted(request_ids))
        return {rid: self.states[rid] for rid in request_ids if rid in self.states}


def _waiter(hub: ProgressHub, request_id: uuid.UUID, last_id: str, timeout_s: float) -> dict:
    """Wait for a change in a thread of its own; the dict gets ``state`` (or ``error``) when it returns."""
    box: dict = {}

    def run() -> None:
        try:
            box["state"] = hub.wait_change(request_id, last_id, timeout_s)
        except LookupError as error:
            box["error"] = error

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


def test_the_hub_coalesces_changes_between_reads_and_wakes_only_the_changed():
    rows = FakeRows()
    a, b = uuid.uuid4(), uuid.uuid4()
    hub = ProgressHub(rows.read, poll_interval_s=60, max_streams=10)
    state_a, state_b = rows.set(a, 0), rows.set(b, 0)
    hub.watch(a, state_a, 0.0)
    hub.watch(b, state_b, 0.0)
    waits_a = [_waiter(hub, a, state_a.event_id, 30) for _ in range(50)]
    wait_b = _waiter(hub, b, state_b.event_id, 30)

    for completed in (1, 2, 3):  # three changes before the hub reads: one wake-up, with the last
        rows.set(a, completed)
    assert hub.poll_once() == 1
    for box in waits_a:
        box["thread"].join(5)
        assert box["state"] is not None and box["state"].event_id == rows.states[a].event_id
    assert '"completed_images":3' in waits_a[0]["state"].data
    assert wait_b["thread"].is_alive()  # b did not change: its watcher sleeps on

    assert hub.poll_once() == 0  # nothing new: nobody is woken
    assert wait_b["thread"].is_alive()
    rows.set(b, 5, status="COMPLETED")
    assert hub.poll_once() == 1
    wait_b["thread"].join(5)
    assert wait_b["state"].final and '"status":"COMPLETED"' in wait_b["state"].data
    # However many watchers, one read per poll, of every watched request at once.
    assert rows.reads == [sorted([a, b])] * 3


def test_the_hub_reads_nothing_without_watchers_and_forgets_the_unwatched():
    rows = FakeRows()
    hub = ProgressHub(rows.read, poll_interval_s=60, max_streams=10)
    assert hub.poll_once() == 0 and rows.reads == []
    a = uuid.uuid4()
    state = rows.set(a, 0)
    hub.watch(a, state, 0.0)
    hub.watch(a, state, 0.0)
    hub.unwatch(a)
    hub.poll_once()
    hub.unwatch(a)
    hub.poll_once()
    assert rows.reads == [[a]]
    with pytest.raises(LookupError):
        hub.wait_change(a, None, 0.1)


def test_a_watcher_hears_of_a_deleted_request_and_times_out_quietly():
    rows = FakeRows()
    hub = ProgressHub(rows.read, poll_interval_s=60, max_streams=10)
    a = uuid.uuid4()
    state = rows.set(a, 0)
    hub.watch(a, state, 0.0)
    assert hub.wait_change(a, state.event_id, 0.05) is None  # no change: a heartbeat's worth of nothing
    assert hub.wait_change(a, "another-id", 0.05) is state  # a different id: the current state at once
    box = _waiter(hub, a, state.event_id, 30)
    del rows.states[a]
    hub.poll_once()
    box["thread"].join(5)
    assert isinstance(box.get("error"), LookupError)


def test_a_newer_read_by_a_joining_watcher_is_not_undone_by_an_older_one():
    rows = FakeRows()
    hub = ProgressHub(rows.read, poll_interval_s=60, max_streams=10)
    a = uuid.uuid4()
    old = rows.set(a, 1)
    hub.watch(a, old, read_at=10.0)
    newer = rows.set(a, 2)
    hub.watch(a, newer, read_at=20.0)  # the second stream read the row later: its state wins
    assert hub.wait_change(a, old.event_id, 0.05) is newer
    hub.watch(a, old, read_at=15.0)  # an older read arriving late changes nothing
    assert hub.wait_change(a, old.event_id, 0.05) is newer


def test_the_stream_cap_is_counted_per_hub():
    hub = ProgressHub(FakeRows().read, poll_interval_s=60, max_streams=2)
    hub.open_stream()
    hub.open_stream()
    with pytest.raises(progress_hub.StreamsExhausted):
        hub.open_stream()
    hub.close_stream()
    hub.open_stream()
    assert hub.open_streams == 2 and hub.streams_opened == 3


def test_each_caller_holds_at_most_its_share_of_the_hubs_streams():
    hub = ProgressHub(FakeRows().read, poll_interval_s=60, max_streams=3, max_streams_per_caller=2)
    hub.open_stream("key:a")
    hub.open_stream("key:a")
    with pytest.raises(progress_hub.CallerStreamsExhausted):
        hub.open_stream("key:a")
    hub.open_stream("ip:127.0.0.3")  # another caller is not held up by the first one's streams
    with pytest.raises(progress_hub.StreamsExhausted) as full:  # the process's cap still holds for everyone
        hub.open_stream("ip:127.0.0.4")
    assert not isinstance(full.value, progress_hub.CallerStreamsExhausted)
    hub.close_stream("key:a")
    hub.open_stream("key:a")  # its slot is its own again
    assert hub.open_streams == 3 and hub.streams_opened == 4


def test_an_unread_stream_body_gives_its_slot_back_when_closed():
    rows = FakeRows()
    hub = ProgressHub(rows.read, poll_interval_s=60, max_streams=1)
    a = uuid.uuid4()
    stream = progress_stream.ProgressStream(hub, a, rows.set(a, 0), 0.0, None, heartbeat_s=0.05)
    with pytest.raises(progress_hub.StreamsExhausted):
        progress_stream.ProgressStream(hub, a, rows.states[a], 0.0, None, heartbeat_s=0.05)
    stream.close()  # the server closes a body nobody read: the client left before the first byte
    stream.close()
    assert hub.open_streams == 0


def test_the_api_gets_threads_for_its_streams_and_its_ordinary_calls():
    from process_launch import processes

    assert processes.web_threads({}) == str(progress_events_default_streams() + processes.ORDINARY_WEB_THREADS)
    assert processes.web_threads({"EVENTS_MAX_STREAMS": "10"}) == "26"
    assert processes.web_threads({"EVENTS_MAX_STREAMS": "10", "WEB_THREADS": "11"}) == "11"
    for env in ({"WEB_THREADS": "8"}, {"EVENTS_MAX_STREAMS": "10", "WEB_THREADS": "10"}, {"EVENTS_MAX_STREAMS": "x"}):
        with pytest.raises(SystemExit):
            processes.web_threads(env)
    argv = processes.commands({})["api"]
    assert argv[argv.index("--threads") + 1] == processes.web_threads({})


def test_the_event_settings_are_read_and_checked():
    from config import Settings, SettingsError

    settings = Settings.from_env(
        {"EVENTS_POLL_INTERVAL_S": "0.25", "EVENTS_HEARTBEAT_S": "5", "EVENTS_MAX_STREAMS": "3"}
    )
    assert (settings.events_poll_interval_s, settings.events_heartbeat_s, settings.events_max_streams) == (0.25, 5, 3)
    with pytest.raises(SettingsError, match="EVENTS_POLL_INTERVAL_S"):
        Settings.from_env({"EVENTS_POLL_INTERVAL_S": "0.01"})


def progress_events_default_streams() -> int:
    from config import DEFAULT_EVENTS_MAX_STREAMS

    return DEFAULT_EVENTS_MAX_STREAMS
