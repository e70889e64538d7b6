"""Live progress of a request as Server-Sent Events: ``GET /api/status/<id>/events``."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, request

from access import rate_limits
from errors import ApiError
from models import db
from reading import progress_hub, progress_stream
from web.request_lookup import load_request

bp = Blueprint("progress", __name__)

RETRY_AFTER_FULL_S = 5


@bp.get("/api/status/<request_id>/events")
@rate_limits.read_limit
def get_status_events(request_id: str):
    read_at = time.monotonic()
    found = load_request(request_id)
    current = progress_hub.ProgressState.of(found)
    watched_id = found.id
    # A stream may wait for hours: it must not hold the session, nor through it a pooled connection.
    db.session.remove()
    settings = current_app.config["SETTINGS"]
    hub: progress_hub.ProgressHub = current_app.extensions["progress_hub"]
    try:
        stream = progress_stream.ProgressStream(
            hub,
            watched_id,
            current,
            read_at,
            last_event_id=request.headers.get("Last-Event-ID") or None,
            heartbeat_s=settings.events_heartbeat_s,
            caller=rate_limits.client_key(),
        )
    except progress_hub.CallerStreamsExhausted:
        raise _too_many_streams(
            "You already follow as many progress streams on this server as one caller may"
        ) from None
    except progress_hub.StreamsExhausted:
        raise _too_many_streams("This server follows as many progress streams as it may") from None
    return Response(
        stream,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _too_many_streams(why: str) -> ApiError:
    return ApiError(
        503,
        "too_many_streams",
        f"{why}; poll the status API, or try again shortly.",
        headers={"Retry-After": str(RETRY_AFTER_FULL_S)},
    )
