"""Every change of a request's row is notified (NOTIFY request_changes, "<id> <status>") at its commit, on PostgreSQL

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE OR REPLACE FUNCTION requests_notify_change() RETURNS trigger AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM pg_notify('request_changes', OLD.id::text || ' DELETED');
            ELSE
                PERFORM pg_notify('request_changes', NEW.id::text || ' ' || NEW.status);
            END IF;
            RETURN NULL;
        END;
        $$ LANGUAGE plpgsql
        """
    )
    op.execute(
        """
        CREATE TRIGGER requests_notify_change AFTER UPDATE OR DELETE ON requests
        FOR EACH ROW EXECUTE FUNCTION requests_notify_change()
        """
    )


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS requests_notify_change ON requests")
    op.execute("DROP FUNCTION IF EXISTS requests_notify_change()")
