"""The service's health: ``/healthz`` (the process answers) and ``/readyz`` (its dependencies do too)."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app

import database
from errors import ApiError
from models import db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def get_health():
    return {"status": "ok"}


@bp.get("/readyz")
def get_readiness():
    probes = {"database": lambda: database.ping(db.engine), "broker": _ping_broker}
    checks = {name: _check(name, probe) for name, probe in probes.items()}
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        raise ApiError(
            503,
            "not_ready",
            f"Not ready: {', '.join(failing)} not reachable.",
            details=[{"dependency": name, "message": checks[name]} for name in failing],
        )
    return {"status": "ready", "checks": checks}


def _check(name: str, probe) -> str:
    try:
        probe()
    except Exception as error:  # any failure means not ready
        # The error names hosts, ports and users: for the log, not for whoever asks.
        log.warning("readiness: %s not reachable: %s: %s", name, type(error).__name__, str(error)[:300])
        return "not reachable"
    return "ok"


def _ping_broker() -> None:
    with current_app.extensions["celery"].connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
