"""``GET /metrics``: the Prometheus scrape of this machine (see metrics.py)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from observability import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    metrics.check_scrape_token(request.headers.get("Authorization", ""))
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
