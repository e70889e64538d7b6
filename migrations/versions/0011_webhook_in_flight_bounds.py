"""Webhook attempts bounded in flight: webhook_events.host, in_flight_until and resent_at

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10

"""

from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

BATCH = 1000


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "")[:255]
    except ValueError:
        return ""


def _fill_hosts() -> None:
    connection = op.get_bind()
    events = sa.table("webhook_events", sa.column("id", sa.String), sa.column("url", sa.Text), sa.column("host"))
    after = ""
    while True:
        rows = connection.execute(
            sa.select(events.c.id, events.c.url).where(events.c.id > after).order_by(events.c.id).limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            events.update().where(events.c.id == sa.bindparam("event_id")).values(host=sa.bindparam("event_host")),
            [{"event_id": event_id, "event_host": _host(url)} for event_id, url in rows],
        )
        after = rows[-1][0]


def upgrade():
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=False, server_default=sa.text("''")))
        batch_op.add_column(sa.Column("in_flight_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_webhook_events_in_flight_until", ["in_flight_until"], unique=False)
    _fill_hosts()


def downgrade():
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_in_flight_until")
        batch_op.drop_column("resent_at")
        batch_op.drop_column("in_flight_until")
        batch_op.drop_column("host")
