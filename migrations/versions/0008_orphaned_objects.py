"""Orphaned objects: the sweep finds not-stored output claims by age, and resumes its listing of the store

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12

"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("position", sa.Text(), nullable=True))
    op.create_index(
        "ix_image_outputs_not_stored_created_at",
        "image_outputs",
        ["created_at"],
        unique=False,
        postgresql_where=sa.text("stored_at IS NULL"),
        sqlite_where=sa.text("stored_at IS NULL"),
    )


def downgrade():
    op.drop_index("ix_image_outputs_not_stored_created_at", table_name="image_outputs")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_column("position")
