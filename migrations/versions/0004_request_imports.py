"""Big uploads answered before their rows are stored: the import task writes them

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("importing", sa.Boolean(), nullable=False, server_default=sa.text("false")))
    op.create_table(
        "request_imports",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("rows", sa.LargeBinary(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_request_imports_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_request_imports")),
    )


def downgrade():
    op.drop_table("request_imports")
    with op.batch_alter_table("requests", schema=None) as batch_op:
        batch_op.drop_column("importing")
