"""POST /api/upload: validate the CSV and the options, store the request, hand it to the workers."""

from __future__ import annotations

import dataclasses
import uuid
from urllib.parse import urlsplit

import sqlalchemy.exc
from flask import Blueprint, current_app, request

from access import api_keys, rate_limits
from catalog_formats import feed, formats, reading
from config import Settings
from errors import ApiError
from imaging import pipeline
from intake import csv_input, idempotency, quotas, uploaded_file
from lifecycle import creation, handoff
from models import db
from network_policy import addresses
from network_policy.urls import url_host, url_problem
from observability import log_context
from output_plan import fields
from output_plan.plan import OutputPlan
from reading.links import output_csv_url, status_url

bp = Blueprint("upload", __name__)

OUTPUT_MODES = ("replace", "append")
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


@bp.post("/api/upload")
@rate_limits.upload_limit
def create_upload():
    settings: Settings = current_app.config["SETTINGS"]
    feed_url = request.form.get("feed_url", "").strip() if request.mimetype in _FORM_TYPES else ""
    if request.mimetype != "multipart/form-data" and not feed_url:
        raise ApiError(415, "unsupported_media_type", "Send the CSV as multipart/form-data, in a field named 'file'.")
    upload = request.files.get("file")
    file_name = None
    data = b""
    if feed_url:
        if upload is not None or "file" in request.form:
            raise ApiError(400, "file_and_feed_url", "Send either 'file' or 'feed_url', not both.")
    elif upload is not None:
        data = upload.read()
        file_name = uploaded_file.clean_file_name(upload.filename)
    elif "file" in request.form:  # curl -F 'file=<products.csv' sends the CSV as a plain field
        data = request.form["file"].encode()
    else:
        raise ApiError(400, "missing_file", "The form has no field 'file' holding the CSV, nor a 'feed_url'.")
    input_format = _choice_field("input_format", formats.INPUT_FORMATS, formats.AUTO)
    output_mode = _choice_field("output_mode", OUTPUT_MODES, None)
    quality, target_score = _quality_fields()
    output_format = _format_field()
    max_dimension = _int_field("max_dimension", 1, 10_000, default=None)
    plan = fields.read_plan(request.form, _encoding_given(quality, target_score, output_format, max_dimension))
    output_rendition = _output_rendition_field(plan)
    options = creation.UploadOptions(
        quality=quality,
        target_score=target_score,
        output_format=output_format,
        never_bigger=_flag_field("never_bigger", default=True),
        max_dimension=max_dimension,
        plan=plan,
        webhook_url=_webhook_url_field(settings),
        owner_key_hash=api_keys.owner_key_hash(),
        file_name=file_name,
        output_mode=output_mode,
        output_rendition=output_rendition,
        feed_url=feed_url or None,
    )
    # A feed is named by its URL: a retried POST is answered without fetching it again.
    claim = _idempotency_claim(b"feed_url:" + feed_url.encode() if feed_url else data, options, input_format)
    if claim is not None:
        replay = idempotency.find_replay(claim, settings.idempotency_key_ttl_s)
        if replay is not None:
            return _replayed(replay)
    if feed_url:
        fetched = feed.fetch_feed(feed_url, settings)
        data = fetched.data
        file_name = uploaded_file.clean_file_name(urlsplit(fetched.url).path)
        options = dataclasses.replace(options, file_name=file_name, feed_sha256=fetched.sha256)
    limits = csv_input.CsvLimits(
        max_rows=settings.max_rows,
        max_urls_per_product=settings.max_urls_per_product,
        max_url_length=settings.max_url_length,
    )
    parsed = reading.parse_catalog(data, input_format, limits, is_blocked_host=lambda host: _is_blocked(settings, host))
    rows = parsed.rows
    options = dataclasses.replace(options, output_mode=output_mode or formats.default_output_mode(parsed.input_format))
    quotas.check_active_images(options.owner_key_hash, rows, settings.max_active_images_per_key)
    request_id = uuid.uuid4()
    log_context.bind(request_id=request_id)
    location = status_url(settings.public_base_url, request_id)
    answer = {
        "request_id": str(request_id),
        "status": "PENDING",
        "input_format": parsed.input_format,
        "products": len(rows),
        "images": sum(len(row.image_urls) for row in rows),
        "status_url": location,
        "output_csv_url": output_csv_url(settings.public_base_url, request_id),
    }
    key_to_store = None if claim is None else idempotency.KeyToStore(claim, answer, settings.idempotency_key_ttl_s)
    try:
        created = creation.create_request(
            rows,
            options,
            import_after_urls=settings.import_after_urls,
            layout=parsed.layout,
            request_id=request_id,
            idempotency_key=key_to_store,
            input_format=parsed.input_format,
            records=parsed.records,
        )
    except sqlalchemy.exc.IntegrityError:
        db.session.rollback()
        # Another upload with the same key committed first: this one is its replay.
        replay = idempotency.find_replay(claim, settings.idempotency_key_ttl_s) if claim is not None else None
        if replay is None:
            raise
        return _replayed(replay)
    # Accepted: from here on, a failure to hand the work over is the dispatcher's to retry, not the caller's.
    if created.importing:
        handoff.send_import(created.id)
    else:
        handoff.queue_images(settings.image_queue_depth, settings.image_batch_size)
    return answer, 202, {"Location": location}


def _encoding_given(
    quality: int | None, target_score: float | None, output_format: str, max_dimension: int | None
) -> dict[str, object]:
    """The encoding fields the form gave, as read: a plan's renditions take them over its profile's."""
    read = {
        "quality": "auto" if quality is None else quality,
        "target_score": target_score,
        "format": output_format,
        "max_dimension": max_dimension,
    }
    return {name: value for name, value in read.items() if request.form.get(name, "").strip()}


def _idempotency_claim(data: bytes, options: creation.UploadOptions, input_format: str) -> idempotency.KeyClaim | None:
    key = idempotency.key_from_header(request.headers.get(idempotency.HEADER))
    if key is None:
        return None
    described = {
        "quality": options.quality,
        "target_score": options.target_score,
        "format": options.output_format,
        "never_bigger": options.never_bigger,
        "max_dimension": options.max_dimension,
        "webhook_url": options.webhook_url,
        "plan": options.plan.describe() if options.plan else None,
        "input_format": input_format,
        "output_mode": options.output_mode,
        "output_rendition": options.output_rendition,
    }
    return idempotency.KeyClaim(
        idempotency.owner_of(options.owner_key_hash), key, idempotency.fingerprint(data, described)
    )


def _replayed(replay: idempotency.Replay):
    headers = {"Location": replay.body["status_url"], idempotency.REPLAYED_HEADER: "true"}
    return replay.body, 200, headers


def _is_blocked(settings: Settings, host: str) -> bool:
    return addresses.is_blocked_host_literal(host, settings.fetch_allowed_networks)


def _quality_fields() -> tuple[int | None, float | None]:
    """``quality`` (1..95, or ``auto``) and, for ``auto``, ``target_score``: (None, target) means auto."""
    if request.form.get("quality", "").strip().lower() != "auto":
        if request.form.get("target_score", "").strip():
            raise ApiError(400, "invalid_target_score", "'target_score' applies only with quality=auto.")
        return _int_field("quality", 1, 95, default=50, also="or 'auto'"), None
    raw = request.form.get("target_score", "").strip()
    if not raw:
        return None, pipeline.DEFAULT_TARGET_SCORE
    try:
        target = float(raw) if raw.isascii() else None
    except ValueError:
        target = None
    if target is None or not pipeline.TARGET_SCORE_MIN <= target <= pipeline.TARGET_SCORE_MAX:
        raise ApiError(
            400,
            "invalid_target_score",
            f"'target_score' must be a number from {pipeline.TARGET_SCORE_MIN} to {pipeline.TARGET_SCORE_MAX} "
            f"(SSIM on luma; the default is {pipeline.DEFAULT_TARGET_SCORE}), got {raw[:50]!r}.",
        )
    return None, target


def _format_field() -> str:
    raw = request.form.get("format", "").strip().lower()
    if not raw or raw == "jpg":
        return "jpeg"
    makeable = pipeline.encodable_formats()
    if raw not in makeable:
        names = ", ".join(name for name in pipeline.OUTPUT_FORMATS if name in makeable)
        raise ApiError(
            422,
            "unsupported_format",
            f"This service cannot make {raw[:20]!r} images; 'format' may be one of: {names}.",
            details=[{"field": "format", "message": f"supported: {names}"}],
        )
    return raw


def _choice_field(name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    raw = request.form.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        names = ", ".join(choices)
        raise ApiError(
            422,
            f"invalid_{name}",
            f"'{name}' must be one of {names}, got {raw[:30]!r}.",
            details=[{"field": name, "message": f"one of: {names}"}],
        )
    return raw


def _output_rendition_field(plan: OutputPlan | None) -> str | None:
    raw = request.form.get("output_rendition", "").strip()
    if not raw:
        return None
    names = [item.name for item in plan.renditions] if plan is not None else []
    if raw not in names:
        known = ", ".join(names) if names else "none: the request asks for no 'renditions' or 'profile'"
        raise ApiError(
            422,
            "invalid_output_rendition",
            f"'output_rendition' names no rendition of this request ({known}), got {raw[:32]!r}.",
            details=[{"field": "output_rendition", "message": f"renditions: {known}"}],
        )
    return None if raw == names[0] else raw


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag_field(name: str, default: bool) -> bool:
    raw = request.form.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise ApiError(400, f"invalid_{name}", f"'{name}' must be true or false, got {raw[:20]!r}.")


def _int_field(name: str, low: int, high: int, default: int | None, also: str = "") -> int | None:
    raw = request.form.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        choice = f" {also}" if also else ""
        raise ApiError(
            400, f"invalid_{name}", f"'{name}' must be an integer from {low} to {high}{choice}, got {raw[:50]!r}."
        )
    return int(raw)


def _webhook_url_field(settings: Settings) -> str | None:
    raw = request.form.get("webhook_url", "").strip()
    if not raw:
        return None
    problem = url_problem(raw, settings.max_url_length)
    if problem is not None:
        raise ApiError(
            400,
            "invalid_webhook_url",
            f"'webhook_url' must be an absolute http(s) URL, got {raw[:100]!r} ({problem.message}).",
        )
    if _is_blocked(settings, url_host(raw)):
        raise ApiError(
            422,
            "blocked_address",
            "'webhook_url' points at an address the service may not call.",
            details=[{"field": "webhook_url", "message": f"address not allowed: {raw[:100]!r}"}],
        )
    return raw
