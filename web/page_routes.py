"""The web page for people who do not use curl: one self-contained HTML file at ``/``."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

bp = Blueprint("page", __name__)

STATIC_DIR = Path(__file__).parent.parent / "static"


@bp.get("/")
def get_index() -> Response:
    response = send_from_directory(STATIC_DIR, "index.html", mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response
