"""Fenced claims: images.claim_token, moved by every claim and take-over; image_outputs.superseded_at

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09

"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ENCODING_BEFORE = "stored_at IS NULL"
ENCODING_AFTER = "stored_at IS NULL AND superseded_at IS NULL"


def _encoding_index(where: str) -> None:
    op.drop_index("uq_image_outputs_variant_encoding", table_name="image_outputs")
    op.create_index(
        "uq_image_outputs_variant_encoding",
        "image_outputs",
        ["variant"],
        unique=True,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_token", sa.Integer(), nullable=False, server_default=sa.text("0")))
    with op.batch_alter_table("image_outputs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    _encoding_index(ENCODING_AFTER)


def downgrade():
    op.execute("DELETE FROM image_outputs WHERE superseded_at IS NOT NULL")
    _encoding_index(ENCODING_BEFORE)
    with op.batch_alter_table("image_outputs", schema=None) as batch_op:
        batch_op.drop_column("superseded_at")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("claim_token")
