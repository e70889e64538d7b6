"""Acting on a request: cancel it, or re-run its failed images."""

from __future__ import annotations

import re

from flask import Blueprint, current_app, request

from access import rate_limits
from config import Settings
from errors import ApiError
from lifecycle import control, handoff
from models import FINAL_REQUEST_STATUSES, Request, RequestStatus, db
from reading.answers import progress
from reading.links import status_url
from web.request_lookup import load_request

bp = Blueprint("requests", __name__)

MAX_ERROR_CODES = 100
_ERROR_CODE_RE = re.compile(r"[a-z0-9_]{1,64}")


@bp.post("/api/requests/<request_id>/cancel")
@rate_limits.upload_limit
def cancel_request(request_id: str):
    found = load_request(request_id)
    settings: Settings = current_app.config["SETTINGS"]
    cancelled = control.cancel_request(found.id, settings.public_base_url)
    current_app.extensions["request_versions"].forget(found.id)
    found = db.session.get_one(Request, found.id, populate_existing=True)
    if not cancelled:
        raise ApiError(409, "already_final", f"The request is already {found.status}; there is nothing to cancel.")
    return {"request_id": str(found.id), "status": found.status, "progress": progress(found)}


@bp.post("/api/requests/<request_id>/retry")
@rate_limits.upload_limit
def retry_request(request_id: str):
    error_codes = _error_codes_field()
    found = load_request(request_id)
    if found.status not in FINAL_REQUEST_STATUSES:
        raise ApiError(409, "not_final", f"The request is {found.status}; only a final request can be retried.")
    if found.status == RequestStatus.CANCELLED:
        raise ApiError(409, "request_cancelled", "The request was cancelled; upload its CSV again to run it.")
    settings: Settings = current_app.config["SETTINGS"]
    retried = control.retry_failed_images(found.id, error_codes, max_active_images=settings.max_active_images_per_key)
    current_app.extensions["request_versions"].forget(found.id)
    if retried is None:
        which = " with the codes given" if error_codes is not None else ""
        raise ApiError(409, "nothing_to_retry", f"The request has no failed images{which} to retry.")
    handoff.queue_images(settings.image_queue_depth, settings.image_batch_size)
    location = status_url(settings.public_base_url, found.id)
    answer = {
        "request_id": str(found.id),
        "status": RequestStatus.PROCESSING.value,
        "retried_images": retried.occurrences,
        "status_url": location,
    }
    return answer, 202, {"Location": location}


def _error_codes_field() -> frozenset[str] | None:
    """The optional ``{"error_codes": [...]}`` body: None means every failed image."""
    if not request.get_data(cache=True).strip():
        return None
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", 'The body must be a JSON object, such as {"error_codes": ["http_404"]}.')
    codes = body.get("error_codes")
    if codes is None:
        return None
    if (
        not isinstance(codes, list)
        or not codes
        or len(codes) > MAX_ERROR_CODES
        or not all(isinstance(code, str) and _ERROR_CODE_RE.fullmatch(code) for code in codes)
    ):
        raise ApiError(
            400,
            "invalid_error_codes",
            f"'error_codes' must be a list of 1 to {MAX_ERROR_CODES} error codes such as \"http_404\".",
        )
    return frozenset(codes)
