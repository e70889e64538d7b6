"""The request a route names, found for its caller: what every route under ``/api/requests/<id>`` starts with."""

from __future__ import annotations

from access import api_keys
from errors import ApiError
from models import Request
from reading import answers


def load_request(request_id: str) -> Request:
    """The caller's request, or a 404 in the error shape."""
    found = answers.find_request(request_id, api_keys.owner_key_hash())
    if found is None:
        raise ApiError(404, "request_not_found", f"No request with id {request_id[:64]!r}.")
    return found
