"""The built-in receiver's inbox: each owner keeps its own last deliveries, whatever the others receive."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import func, select

from access.api_keys import hash_key
from delivery import inbox, signing
from intake.csv_input import ProductRow
from lifecycle import creation
from models import ReceivedWebhook, db

pytestmark = pytest.mark.usefixtures("clean_quiet_tables")

KEPT = 5


def owned_request(owner_key_hash: str | None) -> str:
    rows = [ProductRow(1, "P", (f"http://127.0.0.2:9/{uuid.uuid4().hex}.jpg",), 2)]
    request_id = creation.create_request(rows, creation.UploadOptions(owner_key_hash=owner_key_hash)).id
    db.session.commit()
    return str(request_id)


def receive(app, owner_key_hash: str | None, request_id: str, webhook_id: str) -> None:
    """POST a delivery about ``request_id`` to the receiver, signed as its owner's would be."""
    body = json.dumps({"type": "request.completed", "data": {"request_id": request_id}}).encode()
    secret = signing.tenant_secret(app.extensions["webhook_secret"], owner_key_hash)
    answer = app.test_client().post(
        "/api/webhooks/receive", data=body, headers=signing.signed_headers(secret, webhook_id, body)
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def received_ids(owner_key_hash: str | None) -> list[str]:
    return [entry["webhook_id"] for entry in inbox.list_received(owner_key_hash)]


def test_one_tenants_flood_does_not_push_out_anothers_deliveries(quiet_service, base_url, monkeypatch):
    monkeypatch.setattr(inbox, "KEPT", KEPT)
    app = quiet_service.app
    flooder, other = hash_key(f"a-{uuid.uuid4().hex}"), hash_key(f"b-{uuid.uuid4().hex}")
    flooders_request, others_request, open_request = owned_request(flooder), owned_request(other), owned_request(None)
    receive(app, other, others_request, "msg_other")
    receive(app, None, open_request, "msg_open")

    for n in range(3 * KEPT):
        receive(app, flooder, flooders_request, f"msg_flood_{n}")

    assert received_ids(other) == ["msg_other"]
    assert received_ids(None) == ["msg_open"]
    assert received_ids(flooder) == [f"msg_flood_{n}" for n in reversed(range(2 * KEPT, 3 * KEPT))]
    # The flooder's oldest are deleted, not only hidden.
    db.session.remove()
    assert db.session.scalar(select(func.count()).select_from(ReceivedWebhook)) == KEPT + 2
