"""Renditions, marketplace compliance and near-duplicates: a request's output plan, each image's further
renditions, the compliance report and perceptual hash of images and outputs, and the hash bands looked up to
find duplicates

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _figures() -> list[sa.Column]:
    return [
        sa.Column("bytes_in", sa.BigInteger(), nullable=True),
        sa.Column("bytes_out", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("compliance", sa.JSON(), nullable=True),
        sa.Column("phash", sa.BigInteger(), nullable=True),
    ]


def upgrade():
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("output_plan", sa.JSON(), nullable=True))
    with op.batch_alter_table("image_outputs") as batch_op:
        batch_op.add_column(sa.Column("compliance", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("phash", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("images") as batch_op:
        batch_op.add_column(sa.Column("compliance", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("phash", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("duplicate_of_id", BIG_ID, nullable=True))
        batch_op.create_foreign_key(
            "fk_images_duplicate_of_id_images", "images", ["duplicate_of_id"], ["id"], ondelete="SET NULL"
        )
    op.create_table(
        "image_renditions",
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("output_id", BIG_ID, nullable=False),
        sa.Column("output_key", sa.Text(), nullable=False),
        sa.Column("reused", sa.Boolean(), nullable=False),
        *_figures(),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_image_renditions_image_id_images", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["output_id"], ["image_outputs.id"], name="fk_image_renditions_output_id_image_outputs"
        ),
        sa.PrimaryKeyConstraint("image_id", "position", name="pk_image_renditions"),
    )
    op.create_index("ix_image_renditions_output_id", "image_renditions", ["output_id"])
    op.create_table(
        "image_hash_bands",
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("band", sa.Integer(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_image_hash_bands_image_id_images", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("image_id", "band", name="pk_image_hash_bands"),
    )
    op.create_index("ix_image_hash_bands_owner_band_value", "image_hash_bands", ["owner", "band", "value"])


def downgrade():
    op.drop_index("ix_image_hash_bands_owner_band_value", table_name="image_hash_bands")
    op.drop_table("image_hash_bands")
    op.drop_index("ix_image_renditions_output_id", table_name="image_renditions")
    op.drop_table("image_renditions")
    with op.batch_alter_table("images") as batch_op:
        batch_op.drop_constraint("fk_images_duplicate_of_id_images", type_="foreignkey")
        batch_op.drop_column("duplicate_of_id")
        batch_op.drop_column("phash")
        batch_op.drop_column("compliance")
    with op.batch_alter_table("image_outputs") as batch_op:
        batch_op.drop_column("phash")
        batch_op.drop_column("compliance")
    with op.batch_alter_table("requests") as batch_op:
        batch_op.drop_column("output_plan")
