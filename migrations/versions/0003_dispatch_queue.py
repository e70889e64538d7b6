"""Dispatch by the database: images queued a window at a time, retries scheduled in rows, leases

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WAITING_IMAGE = "status = 'PENDING' AND queued_at IS NULL"
RELEASED_IMAGE = "status = 'PENDING' AND queued_at IS NULL AND requeues > 0"
IN_FLIGHT_IMAGE = "status = 'PROCESSING' OR (status = 'PENDING' AND queued_at IS NOT NULL)"


def upgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_images_waiting",
        "images",
        ["request_id", "id"],
        postgresql_where=sa.text(WAITING_IMAGE),
        sqlite_where=sa.text(WAITING_IMAGE),
    )
    op.create_index(
        "ix_images_released",
        "images",
        ["id"],
        postgresql_where=sa.text(RELEASED_IMAGE),
        sqlite_where=sa.text(RELEASED_IMAGE),
    )
    op.create_index(
        "ix_images_in_flight",
        "images",
        ["request_id"],
        postgresql_where=sa.text(IN_FLIGHT_IMAGE),
        sqlite_where=sa.text(IN_FLIGHT_IMAGE),
    )
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("dispatched_at")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade():
    op.drop_table("leases")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_column("queued_at")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_images_in_flight", table_name="images")
    op.drop_index("ix_images_released", table_name="images")
    op.drop_index("ix_images_waiting", table_name="images")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("not_before")
        batch_op.drop_column("queued_at")
        batch_op.drop_column("retries")
