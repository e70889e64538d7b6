"""The built-in receiver's inbox per owner: received_webhooks.owner, each owner's last deliveries kept

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

"""

import json
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

RECEIVED = sa.table(
    "received_webhooks",
    sa.column("id", sa.BigInteger()),
    sa.column("body", sa.Text()),
    sa.column("owner", sa.String(64)),
)
REQUESTS = sa.table("requests", sa.column("id", sa.Uuid()), sa.column("owner_key_hash", sa.String(64)))


def _request_id(body: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(json.loads(body)["data"]["request_id"])
    except (TypeError, KeyError, ValueError, RecursionError):
        return None


def upgrade():
    with op.batch_alter_table("received_webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=False, server_default=""))
        batch_op.create_index("ix_received_webhooks_owner_id", ["owner", "id"], unique=False)
    # The deliveries kept so far (at most the last 200) go to the owner of the request each is about.
    connection = op.get_bind()
    for row_id, body in connection.execute(sa.select(RECEIVED.c.id, RECEIVED.c.body)).all():
        request_id = _request_id(body)
        if request_id is None:
            continue
        owner = connection.scalar(sa.select(REQUESTS.c.owner_key_hash).where(REQUESTS.c.id == request_id))
        if owner:
            connection.execute(sa.update(RECEIVED).where(RECEIVED.c.id == row_id).values(owner=owner))


def downgrade():
    with op.batch_alter_table("received_webhooks", schema=None) as batch_op:
        batch_op.drop_index("ix_received_webhooks_owner_id")
        batch_op.drop_column("owner")
