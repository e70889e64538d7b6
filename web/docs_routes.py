"""The API's own description: the OpenAPI document and Swagger UI, its assets served from the installed package."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import swagger_ui
import yaml
from flask import Blueprint, Response, send_from_directory

bp = Blueprint("docs", __name__)

SPEC_PATH = Path(__file__).parent.parent / "openapi.yaml"
# swagger-ui-py bundles swagger-ui 5, the first to render OpenAPI 3.1 (swagger_ui_bundle's 4.15.5 does not).
SWAGGER_UI_DIR = Path(swagger_ui.__file__).parent / "static"

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Image service API</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/swagger-ui-standalone-preset.js"></script>
<script src="/api/docs/docs-init.js"></script>
</body>
</html>
"""

DOCS_INIT = """window.ui = SwaggerUIBundle({
  url: "/api/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  persistAuthorization: true,
  validatorUrl: null,
});
"""


@functools.cache
def openapi_document() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


@bp.get("/api/openapi.json")
def get_openapi():
    return openapi_document()


@bp.get("/api/docs")
def get_docs() -> Response:
    return Response(DOCS_PAGE, mimetype="text/html")


@bp.get("/api/docs/<path:asset>")
def get_docs_asset(asset: str) -> Response:
    if asset == "docs-init.js":
        return Response(DOCS_INIT, mimetype="text/javascript")
    return send_from_directory(SWAGGER_UI_DIR, asset, max_age=3600)
