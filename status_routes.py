"""Reading requests back: status, the request list, the output CSV, the failed rows, the per-image report."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

from flask import Blueprint, Response, current_app, g, request, stream_with_context

from access import api_keys, rate_limits
from errors import ApiError
from image_packs import naming, pack
from models import FINAL_REQUEST_STATUSES, ImageStatus, db
from reading import answers, failed_rows_csv, output_csv, page_cache, report_csv
from web.request_lookup import load_request

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


def _image_status() -> ImageStatus | None:
    raw = request.args.get("image_status", "").strip()
    if not raw:
        return None
    if raw.upper() not in ImageStatus.__members__:
        names = ", ".join(ImageStatus)
        raise ApiError(400, "invalid_image_status", f"'image_status' must be one of {names}, got {raw[:20]!r}.")
    return ImageStatus(raw.upper())


def _answered_from_memory() -> bool:
    """Whether this process can answer the poll from memory, with no round trip: its request's version is known
    here (``request_versions``), and the poll names it (a 304) or its page is kept (``page_cache``). Then
    ``g.memory_answer`` is the answer."""
    g.pop("memory_answer", None)
    if request.view_args is None:
        return False
    try:
        request_id = uuid.UUID(request.view_args.get("request_id", ""))
        page = replace(_page(), image_status=_image_status())
    except (ValueError, ApiError):
        return False
    version = current_app.extensions["request_versions"].known(request_id)
    if version is None or version.owner_key_hash != api_keys.owner_key_hash():
        return False
    etag = answers.page_etag(version, page)
    pages: page_cache.RenderedPages = current_app.extensions["rendered_pages"]
    kept = pages.usable((version.id, page.page, page.per_page, page.image_status), etag, version.status)
    served_etag = kept.etag if kept is not None else etag
    if request.if_none_match.contains(served_etag):
        g.memory_answer = Response(status=304, headers=_validators(served_etag))
    elif kept is not None:
        g.memory_answer = Response(kept.body, mimetype="application/json", headers=_validators(kept.etag))
    else:
        return False
    return True


@bp.get("/api/status/<request_id>")
@rate_limits.read_limit_unless_from_memory(_answered_from_memory)
def get_status(request_id: str):
    answer = g.pop("memory_answer", None)
    if answer is not None:
        return answer
    page = replace(_page(), image_status=_image_status())
    versions = current_app.extensions["request_versions"]
    mark = versions.mark()
    found = load_request(request_id)
    versions.remember(found, mark)
    etag = answers.page_etag(found, page)
    if request.if_none_match.contains(etag):
        return Response(status=304, headers=_validators(etag))
    settings = current_app.config["SETTINGS"]

    def render() -> Iterator[bytes]:
        storage = current_app.extensions["storage"]
        return answers.request_status_parts(found, page, storage, settings.public_base_url, current_app.json.dumps)

    pages: page_cache.RenderedPages = current_app.extensions["rendered_pages"]
    served = pages.serve((found.id, page.page, page.per_page, page.image_status), etag, found.status, render)
    if isinstance(served, page_cache.StreamedPage):
        # Too big to keep: sent as it renders, a few products at a time (see RenderedPages).
        parts = stream_with_context(served.parts)
        return Response(parts, mimetype="application/json", headers=_validators(served.etag))
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


@bp.get("/api/requests/<request_id>/images.zip")
@rate_limits.read_limit
def get_image_pack(request_id: str):
    found = load_request(request_id)
    if found.status not in FINAL_REQUEST_STATUSES:
        raise ApiError(409, "not_ready", f"The request is {found.status}; its image pack exists once it is final.")
    asked = pack.PackRequest(
        naming=_choice_arg("naming", naming.NAMINGS, default="plain"),
        identifier=request.args.get("identifier", "").strip() or None,
        rendition=request.args.get("rendition", "").strip() or None,
    )
    # Every refusal is decided here, before the first byte of the archive is sent.
    entries = pack.plan_pack(found, asked, current_app.config["SETTINGS"])
    db.session.rollback()
    chunks = pack.pack_chunks(entries, current_app.extensions["storage"])
    return Response(
        stream_with_context(chunks),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{found.id}-images-{asked.naming}.zip"'},
    )


def _choice_arg(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.args.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ApiError(
            400,
            f"invalid_{name}",
            f"'{name}' must be one of {', '.join(choices)}, got {raw[:30]!r}.",
            [{"field": name, "message": f"one of: {', '.join(choices)}"}],
        )
    return raw


@bp.get("/api/requests/<request_id>/failed-rows.csv")
@rate_limits.read_limit
def get_failed_rows_csv(request_id: str):
    # Once final, like the output CSV: until then an image still running may yet fail or succeed.
    found = load_request(request_id)
    if found.status not in FINAL_REQUEST_STATUSES:
        raise ApiError(409, "not_ready", f"The request is {found.status}; its failed rows exist once it is final.")
    return Response(
        stream_with_context(failed_rows_csv.failed_rows_lines(found)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{found.id}-failed-rows.csv"'},
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
