"""The one error shape every 4xx and 5xx answer carries."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the client as ``{"error": {"code", "message", "details"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def error_response(error: ApiError):
    response = jsonify(error.to_dict())
    response.status_code = error.status
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Render every error, Flask's own included, in the contract's shape."""

    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        return error_response(error)

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException):
        status = error.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = error.description or error.name
        if status == 413:
            message = "The request body is larger than the service accepts."
        response = error_response(ApiError(status, code, message))
        original = error.get_response()
        for name in ("Allow", "Retry-After"):
            if name in original.headers:
                response.headers[name] = original.headers[name]
        return response

    @app.errorhandler(sqlalchemy.exc.OperationalError)
    @app.errorhandler(sqlalchemy.exc.InterfaceError)
    def handle_database_unavailable(error: Exception):
        log.warning("database unavailable: %s", str(error).splitlines()[0][:300])
        return error_response(
            ApiError(
                503,
                "database_unavailable",
                "The database is not reachable right now; try again shortly.",
                headers={"Retry-After": "5"},
            )
        )

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        log.exception("unhandled error")
        return error_response(
            ApiError(500, "internal_error", "The service hit an unexpected error; it has been logged.")
        )
