"""The images a task holds are found by its id: a batch's redelivery gives back every image its earlier run
claimed, those it took from the queue's next message included

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

PROCESSING = sa.text("status = 'PROCESSING'")


def upgrade():
    op.create_index(
        "ix_images_processing_claimed_by",
        "images",
        ["claimed_by"],
        postgresql_where=PROCESSING,
        sqlite_where=PROCESSING,
    )


def downgrade():
    op.drop_index("ix_images_processing_claimed_by", table_name="images")
