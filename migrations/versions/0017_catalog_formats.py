"""Catalog files as platforms export them: the format a request was read as, how its file is given back,
the feed it was fetched from, each product's key, and each record of the file as written

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("input_format", sa.String(24), nullable=True))
        batch_op.add_column(sa.Column("output_mode", sa.String(8), nullable=True))
        batch_op.add_column(sa.Column("output_rendition", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("csv_delimiter", sa.String(1), nullable=True))
        batch_op.add_column(sa.Column("feed_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("feed_sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("products") as batch_op:
        batch_op.add_column(sa.Column("key", sa.Text(), nullable=True))
    op.create_table(
        "request_records",
        sa.Column("request_id", sa.Uuid(), sa.ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("record", sa.Text(), nullable=False),
    )


def downgrade():
    op.drop_table("request_records")
    with op.batch_alter_table("products") as batch_op:
        batch_op.drop_column("key")
    with op.batch_alter_table("requests") as batch_op:
        for name in ("feed_sha256", "feed_url", "csv_delimiter", "output_rendition", "output_mode", "input_format"):
            batch_op.drop_column(name)
