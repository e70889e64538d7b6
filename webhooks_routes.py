"""Webhook deliveries of a request, and the built-in receiver for trying the flow out."""

from __future__ import annotations

import json
import math

from flask import Blueprint, current_app, request

from access import api_keys, rate_limits
from delivery import inbox, outbox, signing
from errors import ApiError
from queueing import broker, task_names
from reading import webhook_log
from web.request_lookup import load_request

bp = Blueprint("webhooks", __name__)


@bp.get("/api/requests/<request_id>/webhook-deliveries")
@rate_limits.read_limit
def list_deliveries(request_id: str):
    found = load_request(request_id)
    return {
        "request_id": str(found.id),
        "webhook_url": found.webhook_url,
        "events": webhook_log.describe_events(found.id),
    }


@bp.post("/api/requests/<request_id>/webhook-deliveries")
@rate_limits.upload_limit
def resend_delivery(request_id: str):
    found = load_request(request_id)
    try:
        event_id = outbox.reopen_last_event(found.id)
    except outbox.ResendTooSoon as error:
        cooldown_s = current_app.config["SETTINGS"].webhook_resend_cooldown_s
        raise ApiError(
            429,
            "resend_too_soon",
            f"The webhook of this request was re-sent less than {cooldown_s:g} seconds ago: one re-send per"
            f" request per {cooldown_s:g} seconds.",
            headers={"Retry-After": str(max(1, math.ceil(error.retry_after_s)))},
        ) from None
    if event_id is None:
        raise ApiError(
            409, "no_webhook_event", "The request has no webhook event yet: it is not final, or has no webhook_url."
        )
    broker.send(task_names.DELIVER_TASK, event_id)
    return {"request_id": str(found.id), "webhook_id": event_id, "status": "PENDING"}, 202


@bp.get("/api/webhook-secret")
@rate_limits.read_limit
def get_webhook_secret():
    secret = signing.tenant_secret(current_app.extensions["webhook_secret"], api_keys.owner_key_hash())
    return {"secret": secret}, 200, {"Cache-Control": "no-store"}


@bp.post("/api/webhooks/receive")
def receive_webhook():
    body = request.get_data(cache=False)
    headers = {name.lower(): value for name, value in request.headers.items()}
    # A delivery about a tenant's request must carry that tenant's signature, or one tenant could
    # plant entries that another is shown.
    owner = inbox.owner_of(body)
    secret = signing.tenant_secret(current_app.extensions["webhook_secret"], owner)
    try:
        webhook_id = signing.verify(secret, headers, body)
    except signing.InvalidSignature as error:
        raise ApiError(401, "invalid_signature", f"The webhook's signature does not verify: {error}.") from None
    try:
        json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", "The webhook body is not JSON.") from None
    inbox.record(webhook_id, body, owner)
    current_app.logger.info("webhook received: %s", webhook_id)
    return {"received": True, "webhook_id": webhook_id}


@bp.get("/api/webhooks/received")
@rate_limits.read_limit
def list_received():
    return {"received": inbox.list_received(api_keys.owner_key_hash())}
