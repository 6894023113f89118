"""Engines and migrations.

SQLite runs in WAL mode and every transaction starts with BEGIN IMMEDIATE: writers then queue on
the busy timeout instead of failing when a reader tries to upgrade its lock, which is what
makes read-check-write sequences (state transitions, claims) safe with one writer at a time.
PostgreSQL uses row locks (`SELECT ... FOR UPDATE`) in the repository instead.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from skylane.errors import ConfigurationError
from skylane.settings import normalize_database_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def create_engine_for(url: str) -> sa.Engine:
    url = normalize_database_url(url)
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(
            "database URL is not a valid SQLAlchemy URL", field="database_url"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    raise ConfigurationError(
        f"unsupported database backend {parsed.get_backend_name()!r}; use sqlite:// or "
        "postgresql://",
        field="database_url",
    )


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(engine: sa.Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (idempotent)."""
    command.upgrade(alembic_config(engine), revision)


def redacted_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
