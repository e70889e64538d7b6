"""``make run`` left idle logs nothing; each image it processes gets a line.

The launcher runs as ``make run`` starts it (embedded defaults, an instance folder and a port of its
own). Beat sends the dispatcher's tick every second and the sweep every 30 s: once start-up is over,
none of that may reach the log unless it did something, at the default ``LOG_LEVEL``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter

import pytest
from support.api import csv_of, upload, wait_final
from support.handlers import respond
from support.images import jpeg_bytes
from support.launched import LauncherRun, start, stop_and_check
from support.loopback import IMAGE_HOST, wait_until

pytestmark = pytest.mark.integration

IDLE_S = 20
# Long enough for the access line of the last readiness poll, written once its answer is sent.
SETTLE_S = 2.0
# Every process that logs something at start-up has said it is up.
STARTED = (
    re.compile(r"worker-\S+ ready\."),
    re.compile(r"webhooks-\S+ ready\."),
    re.compile(r"maintenance-\S+ ready\."),
    re.compile(r"beat: Starting"),
)
IMAGE_LINE = re.compile(r" INFO image_tasks: image (\d+): (\w+)")


def log_lines(run: LauncherRun) -> list[str]:
    return run.log().splitlines()


def test_an_idle_service_logs_nothing_and_each_processed_image_gets_a_line(tmp_path, source_server):
    run = start(tmp_path, {"FETCH_ALLOWED_NETWORKS": f"{IMAGE_HOST}/32"})
    try:
        assert wait_until(lambda: all(started.search(run.log()) for started in STARTED), 30), run.log()[-4000:]
        time.sleep(SETTLE_S)
        before = log_lines(run)

        time.sleep(IDLE_S)
        idle = log_lines(run)[len(before) :]
        assert idle == [], f"logged while idle for {IDLE_S}s:\n" + "\n".join(idle[:30])

        colors = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
        urls = []
        for color in colors:
            path = f"/{uuid.uuid4().hex}.jpg"
            source_server.route(path, respond(200, jpeg_bytes(color=color), {"Content-Type": "image/jpeg"}))
            urls.append(source_server.url(path))
        made = upload(run.base_url, csv_of([(1, "Mug", urls)]))
        assert made.status_code == 202, made.text
        assert wait_final(run.base_url, made.json()["request_id"])["status"] == "COMPLETED"
        assert wait_until(lambda: len(IMAGE_LINE.findall(run.log())) >= len(colors), 10), run.log()[-4000:]
        outcomes = IMAGE_LINE.findall("\n".join(log_lines(run)[len(before) :]))
        assert sorted(outcome for _, outcome in outcomes) == ["completed"] * len(colors), outcomes
        assert set(Counter(image_id for image_id, _ in outcomes).values()) == {1}, outcomes
        stop_and_check(run)
    finally:
        run.kill_left_over()


def test_log_level_is_checked_and_handed_to_every_process():
    import launcher
    from config import Settings, SettingsError

    assert Settings.from_env({}).log_level == "INFO"
    assert Settings.from_env({"LOG_LEVEL": " debug "}).log_level == "DEBUG"
    with pytest.raises(SettingsError, match="LOG_LEVEL"):
        Settings.from_env({"LOG_LEVEL": "verbose"})
    argvs = launcher.commands({"LOG_LEVEL": "warning"})
    for role in ("worker", "webhooks", "maintenance", "beat"):
        assert argvs[role][argvs[role].index("--loglevel") + 1] == "WARNING", role
    assert argvs["api"][argvs["api"].index("--log-level") + 1] == "warning"


def test_celery_lines_about_routine_tasks_are_debug_and_others_stay_info():
    import logging

    from observability.log_context import RoutineTaskFilter

    routine = RoutineTaskFilter({"image_tasks.dispatch"})
    logger = logging.getLogger("celery.app.trace")

    def record(level: int, message: str, *args: object) -> logging.LogRecord:
        # As in Celery's calls: a lone mapping becomes the record's args.
        return logging.LogRecord(logger.name, level, __file__, 1, message, args, None)

    received = record(logging.INFO, "Task %(name)s[%(id)s] received", {"name": "image_tasks.dispatch", "id": "t"})
    assert routine.filter(received) is logger.isEnabledFor(logging.DEBUG)
    assert received.levelname == "DEBUG"
    sent = record(logging.INFO, "Scheduler: Sending due task %s (%s)", "dispatch", "image_tasks.dispatch")
    routine.filter(sent)
    assert sent.levelno == logging.DEBUG
    for kept in (
        record(logging.INFO, "Task %(name)s[%(id)s] received", {"name": "image_tasks.process_image", "id": "t"}),
        record(logging.ERROR, "Task %(name)s[%(id)s] raised", {"name": "image_tasks.dispatch", "id": "t"}),
    ):
        level = kept.levelno
        assert routine.filter(kept) is True and kept.levelno == level
