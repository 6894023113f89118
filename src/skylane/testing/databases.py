"""Throwaway databases for tests and benchmarks."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from skylane.settings import normalize_database_url


def postgres_unreachable_reason(admin_url: str) -> str | None:
    """None when PostgreSQL answers at `admin_url`, else why not (for a skip message)."""
    url = normalize_database_url(admin_url)
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means: not usable, and say why
        shown = make_url(url).render_as_string(hide_password=True)
        return f"PostgreSQL not reachable at {shown}: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def temporary_postgres_database(admin_url: str, prefix: str = "skylane_tmp") -> Iterator[str]:
    """Create a fresh database next to `admin_url`'s, yield its URL, drop it afterwards (even
    while connections to it are still open)."""
    admin = sa.create_engine(normalize_database_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield (
            make_url(normalize_database_url(admin_url))
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reset_postgres_schema(url: str) -> None:
    """Empty a database completely (drop and recreate its public schema)."""
    engine = sa.create_engine(normalize_database_url(url))
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def empty_postgres_tables(url: str) -> None:
    """A migrated database with no rows: its tables truncated when the schema is at head
    (fast), else the schema dropped and migrated again (after a test that downgraded it)."""
    from alembic.script import ScriptDirectory

    from skylane.store.db import alembic_config, create_engine_for, migrate
    from skylane.store.tables import Base

    engine = create_engine_for(url)
    try:
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        with engine.begin() as connection:
            at = None
            if connection.scalar(sa.text("SELECT to_regclass('public.alembic_version')")):
                at = connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
            if at == head:
                tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
                connection.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                return
        reset_postgres_schema(url)
        migrate(engine)
    finally:
        engine.dispose()
