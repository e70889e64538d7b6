"""Outputs: perceptual quality, formats, never bigger, outputs shared across requests, source versions

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade():
    op.create_table(
        "image_outputs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("variant", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bytes_in", sa.BigInteger(), nullable=True),
        sa.Column("bytes_out", sa.BigInteger(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("quality", sa.Integer(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("kept_source", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_outputs")),
    )
    with op.batch_alter_table("image_outputs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_outputs_variant"), ["variant"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_outputs_last_used_at"), ["last_used_at"], unique=False)
        batch_op.create_index(
            "uq_image_outputs_variant_encoding",
            ["variant"],
            unique=True,
            postgresql_where=sa.text("stored_at IS NULL"),
            sqlite_where=sa.text("stored_at IS NULL"),
        )
    op.create_table(
        "source_versions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("url_hash", sa.String(length=64), nullable=False),
        sa.Column("etag", sa.Text(), nullable=True),
        sa.Column("last_modified", sa.Text(), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_versions")),
        sa.UniqueConstraint("owner", "url_hash", name="uq_source_versions_owner_url_hash"),
    )
    with op.batch_alter_table("source_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_source_versions_updated_at"), ["updated_at"], unique=False)
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.alter_column("quality", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("target_score", sa.Double(), nullable=True))
        batch_op.add_column(
            sa.Column("output_format", sa.String(length=8), nullable=False, server_default=sa.text("'jpeg'"))
        )
        batch_op.add_column(sa.Column("never_bigger", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("output_id", BigId, nullable=True))
        batch_op.add_column(sa.Column("reused", sa.Boolean(), nullable=False, server_default=sa.text("false")))
        batch_op.add_column(sa.Column("quality", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("score", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("kept_source", sa.Boolean(), nullable=False, server_default=sa.text("false")))
        batch_op.create_index(batch_op.f("ix_images_output_id"), ["output_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_images_output_id_image_outputs"), "image_outputs", ["output_id"], ["id"]
        )


def downgrade():
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_images_output_id_image_outputs"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_images_output_id"))
        for column in ("kept_source", "score", "quality", "reused", "output_id"):
            batch_op.drop_column(column)
    with op.batch_alter_table("requests", schema=None) as batch_op:
        for column in ("never_bigger", "output_format", "target_score"):
            batch_op.drop_column(column)
        batch_op.alter_column("quality", existing_type=sa.Integer(), nullable=False)
    op.drop_table("source_versions")
    op.drop_table("image_outputs")
