"""Fenced claims: images.claim_token, moved by every claim and take-over

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


def upgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_token", sa.Integer(), nullable=False, server_default=sa.text("0")))


def downgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("claim_token")
