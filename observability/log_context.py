"""The log format and level (``LOG_FORMAT``, ``LOG_LEVEL``) and the ids each log line carries: request,
image and Celery task.

The ids live in context variables, set where they become known (a route's ``<request_id>``, a new
upload, a task's start, an image's claim) and cleared when the call or the task ends; a filter on
the root handler copies them onto every record, which the JSON format writes out when set.

Celery's own lines about the tasks beat runs every second or so (sent, received, succeeded) are
DEBUG: an idle service logs nothing, and those tasks log what they did when they did something.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from celery.signals import setup_logging, task_postrun, task_prerun
from flask import Flask, request
from gunicorn.glogging import Logger as GunicornLogger
from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("request_id", "image_id", "task_id")
# Celery's loggers that write a line per task: beat sending it, a worker receiving, discarding, finishing it.
CELERY_TASK_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.worker.request", "celery.app.trace")

_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(name, default=None) for name in CONTEXT_FIELDS
}


def bind(**ids: object) -> None:
    """Put ``request_id``, ``image_id`` and/or ``task_id`` on the lines logged from here on."""
    for name, value in ids.items():
        _context[name].set(None if value is None else str(value))


def clear() -> None:
    for variable in _context.values():
        variable.set(None)


class ContextFilter(logging.Filter):
    """Adds the known ids to each record; Celery's own task lines name their task in their arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in _context.items():
            if getattr(record, name, None) is None:
                setattr(record, name, variable.get())
        if record.task_id is None and record.name.startswith("celery") and isinstance(record.args, Mapping):
            record.task_id = record.args.get("id")
        return True


class ContextJsonFormatter(JsonFormatter):
    """One JSON object a line: timestamp, level, logger, message, and the ids that are known."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
            timestamp=False,
        )

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        for name in CONTEXT_FIELDS:
            if log_data.get(name) is None:
                log_data.pop(name, None)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def formatter(log_format: str) -> logging.Formatter:
    return ContextJsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(log_format: str, *, level: str = "INFO", fixed_name: str | None = None) -> None:
    """Log ``level`` and up to stderr in ``log_format``; ``fixed_name`` replaces the logger's name in text."""
    root = logging.getLogger()
    if not any(isinstance(f, ContextFilter) for handler in root.handlers for f in handler.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(ContextFilter())
        # Ours replaces what writes to the terminal; a handler that collects records elsewhere stays.
        kept = [h for h in root.handlers if getattr(h, "stream", None) not in (sys.stderr, sys.stdout)]
        root.handlers = [*kept, handler]
    chosen = formatter(log_format)
    if fixed_name is not None and log_format == "text":
        chosen = logging.Formatter(TEXT_FORMAT.replace("%(name)s", fixed_name))
    for handler in root.handlers:
        handler.setFormatter(chosen)
    root.setLevel(level)
    # Alembic announces each of its plugins at INFO whenever it is imported, the API's processes included.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # Python's warnings (Celery's about running as root, say) become lines of the same format.
    logging.captureWarnings(log_format == "json")


def init_app(app: Flask) -> None:
    """Each API call's lines carry the request id of its route, if it has one.

    The ids stay set past the response, so that the server's access line carries them too; the
    thread's next call replaces them.
    """

    @app.before_request
    def bind_route_request_id() -> None:
        clear()
        bind(request_id=(request.view_args or {}).get("request_id"))


def _bind_task(task_id: str | None = None, **_kwargs: object) -> None:
    clear()
    bind(task_id=task_id)


def _clear_task(**_kwargs: object) -> None:
    clear()


def _keep_our_logging(**_kwargs: object) -> None:
    """Celery configures no logging of its own when a receiver answers: the root handler stays ours."""


class RoutineTaskFilter(logging.Filter):
    """Lowers Celery's INFO lines about the routine tasks to DEBUG: they run every second, and say
    what they did in lines of their own when they did something."""

    def __init__(self, task_names: Iterable[str]) -> None:
        super().__init__()
        self.task_names = frozenset(task_names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self._names_a_routine_task(record.args):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _names_a_routine_task(self, args: object) -> bool:
        # Beat and the worker's request pass the name positionally, the strategy and the tracer in a mapping.
        values = args.values() if isinstance(args, Mapping) else args if isinstance(args, tuple) else ()
        return any(isinstance(value, str) and value in self.task_names for value in values)


def init_celery(routine_tasks: Iterable[str] = ()) -> None:
    """Ids on the lines of each task; Celery's own lines about ``routine_tasks`` at DEBUG."""
    task_prerun.connect(_bind_task, weak=False)
    task_postrun.connect(_clear_task, weak=False)
    setup_logging.connect(_keep_our_logging, weak=False)
    routine = RoutineTaskFilter(routine_tasks)
    for name in CELERY_TASK_LOGGERS:
        logger = logging.getLogger(name)
        for earlier in [f for f in logger.filters if isinstance(f, RoutineTaskFilter)]:
            logger.removeFilter(earlier)
        logger.addFilter(routine)


class GunicornJsonLogger(GunicornLogger):
    """Gunicorn's own lines (its master's too, and the access log) in JSON, for ``LOG_FORMAT=json``."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(ContextJsonFormatter())
                handler.addFilter(ContextFilter())
