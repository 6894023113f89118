"""The migrations build exactly the schema the models describe, and can be undone."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from skylane.store import create_engine_for, migrate
from skylane.store.db import alembic_config
from skylane.store.tables import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine_for(database_url)
    migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_migrations_can_be_undone_and_redone(database_url: str) -> None:
    engine = create_engine_for(database_url)
    migrate(engine)
    command.downgrade(alembic_config(engine), "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert "provider_resources" in sa.inspect(engine).get_table_names()
    engine.dispose()
