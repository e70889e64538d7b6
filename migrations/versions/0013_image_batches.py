"""Images travel in batches: images.queued_in names the message that carries a queued image

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("images", schema=None) as batch:
        batch.add_column(sa.Column("queued_in", sa.String(length=64)))


def downgrade():
    with op.batch_alter_table("images", schema=None) as batch:
        batch.drop_column("queued_in")
