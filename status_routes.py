"""Reading requests back: status, the request list, the output CSV, the per-image report, the service's health."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request, stream_with_context

import database
from access import api_keys, rate_limits
from errors import ApiError
from models import FINAL_REQUEST_STATUSES, Request, db
from reading import answers, output_csv, page_cache, report_csv

log = logging.getLogger(__name__)

bp = Blueprint("status", __name__)

MAX_PER_PAGE = 1000


def _page() -> answers.Page:
    values = []
    for name, default, high in (("page", 1, None), ("per_page", 100, MAX_PER_PAGE)):
        raw = request.args.get(name, "").strip()
        if not raw:
            values.append(default)
            continue
        if not raw.isascii() or not raw.isdigit() or int(raw) < 1 or (high is not None and int(raw) > high):
            bound = f"from 1 to {high}" if high else "of at least 1"
            raise ApiError(400, "invalid_pagination", f"'{name}' must be an integer {bound}, got {raw[:20]!r}.")
        values.append(int(raw))
    return answers.Page(*values)


def load_request(request_id: str) -> Request:
    """The caller's request, or a 404 in the error shape."""
    found = answers.find_request(request_id, api_keys.owner_key_hash())
    if found is None:
        raise ApiError(404, "request_not_found", f"No request with id {request_id[:64]!r}.")
    return found


@bp.get("/api/status/<request_id>")
@rate_limits.read_limit
def get_status(request_id: str):
    page = _page()
    found = load_request(request_id)
    etag = answers.page_etag(found, page)
    if request.if_none_match.contains(etag):
        return Response(status=304, headers=_validators(etag))
    settings = current_app.config["SETTINGS"]

    def render() -> bytes:
        answer = answers.request_status(found, page, current_app.extensions["storage"], settings.public_base_url)
        return current_app.json.dumps(answer).encode()

    pages: page_cache.RenderedPages = current_app.extensions["rendered_pages"]
    served = pages.serve((found.id, page.page, page.per_page), etag, found.status, render)
    if request.if_none_match.contains(served.etag):
        return Response(status=304, headers=_validators(served.etag))
    return Response(served.body, mimetype="application/json", headers=_validators(served.etag))


def _validators(etag: str) -> dict[str, str]:
    return {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}


@bp.get("/api/requests")
@rate_limits.read_limit
def list_requests():
    return answers.list_requests(api_keys.owner_key_hash(), _page())


@bp.get("/api/requests/<request_id>/output.csv")
@rate_limits.read_limit
def get_output_csv(request_id: str):
    found = load_request(request_id)
    if found.status not in FINAL_REQUEST_STATUSES:
        raise ApiError(409, "not_ready", f"The request is {found.status}; its output CSV exists once it is final.")
    lines = output_csv.output_csv_lines(found, current_app.extensions["storage"])
    return Response(
        stream_with_context(lines),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{found.id}-output.csv"'},
    )


@bp.get("/api/requests/<request_id>/report.csv")
@rate_limits.read_limit
def get_report_csv(request_id: str):
    # At any status, unlike the output CSV: while the request runs it shows how far each image got.
    found = load_request(request_id)
    lines = report_csv.report_csv_lines(found, current_app.extensions["storage"])
    return Response(
        stream_with_context(lines),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{found.id}-report.csv"'},
    )


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
