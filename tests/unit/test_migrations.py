"""The migrations build exactly the schema the models describe, and can be undone."""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from skylane.store import create_engine_for, migrate
from skylane.store.db import alembic_config
from skylane.store.tables import Base


def test_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    engine = create_engine_for(empty_database_url)
    migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_migrations_can_be_undone_and_redone(empty_database_url: str) -> None:
    engine = create_engine_for(empty_database_url)
    migrate(engine)
    command.downgrade(alembic_config(engine), "base")
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert "provider_resources" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_replicas_migrating_a_new_database_at_once_all_succeed(empty_database_url: str) -> None:
    # Kubernetes starts every replica at once, and each runs the migrations at start: four
    # processes (alembic keeps its state in module globals, so threads would not do).
    code = (
        "import sys; from skylane.store import create_engine_for, migrate; "
        "migrate(create_engine_for(sys.argv[1]))"
    )
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", code, empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in replicas if p.stderr]
    assert [code for code, _ in outcomes] == [0, 0, 0, 0], [err[-2000:] for _, err in outcomes]
    engine = create_engine_for(empty_database_url)
    with engine.connect() as connection:
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        script = ScriptDirectory.from_config(alembic_config(engine))
        assert [v[0] for v in versions] == [script.get_current_head()]
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    engine.dispose()
