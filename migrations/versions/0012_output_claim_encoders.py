"""Output claims name the image claim they were made for: image_outputs.encoder_image_id and encoder_claim_token

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-11

"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("image_outputs", schema=None) as batch:
        batch.add_column(sa.Column("encoder_image_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite")))
        batch.add_column(sa.Column("encoder_claim_token", sa.Integer()))


def downgrade():
    with op.batch_alter_table("image_outputs", schema=None) as batch:
        batch.drop_column("encoder_claim_token")
        batch.drop_column("encoder_image_id")
