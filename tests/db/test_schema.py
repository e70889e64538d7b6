"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from support.backing import SeparateDatabase

from config import Settings
from models import db


def test_the_migrated_schema_is_the_models_schema(backing_services, tmp_path):
    database = SeparateDatabase(backing_services, tmp_path)
    try:
        engine = sa.create_engine(Settings.from_env({**backing_services, "DATABASE_URL": database.url}).database_url)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = [d for d in compare_metadata(context, db.metadata) if d[0] != "remove_table"]
        engine.dispose()
    finally:
        database.drop()
    assert differences == [], "\n".join(map(str, differences))
