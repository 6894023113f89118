"""Alembic environment: the engine comes from `skylane.store.db.migrate`."""

from alembic import context

from skylane.store.tables import Base

# A constant of skylane's own for pg_advisory_xact_lock ("skylane" in ASCII, as an integer).
MIGRATION_LOCK_KEY = int.from_bytes(b"skylane", "big")

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Replicas starting at once migrate one after the other: the next one waits here,
            # then finds the schema at head and does nothing. (SQLite has one writer anyway.)
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()
