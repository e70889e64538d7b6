"""Files the service serves itself: output images with local storage, and the sample photos."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, send_file, send_from_directory

import storage
from errors import ApiError

bp = Blueprint("media", __name__)

SAMPLES_DIR = Path(__file__).parent.parent / "samples"
SAMPLE_CSV = "products.csv"
#: The sample files that name the sample photos by URL: the service's CSV, a Shopify export and a Google feed.
SAMPLE_FILES = {
    SAMPLE_CSV: "text/csv",
    "shopify_products.csv": "text/csv",
    "merchant_feed.tsv": "text/tab-separated-values",
}
SAMPLE_CSV_ORIGIN = "http://127.0.0.1:5000"


@bp.get("/media/<path:key>")
def get_media(key: str):
    path = current_app.extensions["storage"].local_path(key)
    if path is None:
        raise ApiError(404, "not_found", "No such image.")
    return send_file(path, mimetype=storage.media_type(key), max_age=86400, conditional=True)


@bp.get("/samples/<path:name>")
def get_sample(name: str):
    if not current_app.config["SETTINGS"].serve_samples:
        raise ApiError(404, "not_found", "Samples are served only in single-machine mode (SERVE_SAMPLES=1).")
    if name in SAMPLE_FILES:
        # The file names port 5000; served, it names wherever this service really answers.
        text = (SAMPLES_DIR / name).read_bytes().decode()
        base = current_app.config["SETTINGS"].public_base_url
        return Response(text.replace(SAMPLE_CSV_ORIGIN, base), mimetype=SAMPLE_FILES[name])
    return send_from_directory(SAMPLES_DIR, name)
