"""images.claimed_by: the task that holds an image, so only its own redelivery may take it over

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
