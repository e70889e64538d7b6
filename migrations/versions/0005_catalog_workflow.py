"""The catalog workflow: cancel, sizes per image, the upload's own columns, idempotency keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancelled_images", sa.Integer(), nullable=False, server_default=sa.text("0")))
        batch_op.add_column(sa.Column("bytes_in", sa.BigInteger(), nullable=False, server_default=sa.text("0")))
        batch_op.add_column(sa.Column("bytes_out", sa.BigInteger(), nullable=False, server_default=sa.text("0")))
        batch_op.add_column(sa.Column("csv_header", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("csv_line_end", sa.String(length=2), nullable=True))
        batch_op.add_column(sa.Column("csv_bom", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_record", sa.Text(), nullable=True))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bytes_in", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("bytes_out", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("width", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("height", sa.Integer(), nullable=True))
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_idempotency_keys_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("owner", "key", name="uq_idempotency_keys_owner_key"),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_idempotency_keys_request_id"), ["request_id"], unique=False)


def downgrade():
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("images", schema=None) as batch_op:
        for column in ("height", "width", "bytes_out", "bytes_in"):
            batch_op.drop_column(column)
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("source_record")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        for column in ("csv_bom", "csv_line_end", "csv_header", "bytes_out", "bytes_in", "cancelled_images"):
            batch_op.drop_column(column)
