"""Rate limit states in the database, shared by every control-plane replica.

One row of `rate_limit_state` per scope key holds the JSON state of `skylane.rate_limits.take`.
`RateLimitStore.take` is one short transaction: lock the row, apply `take` at this process's
`time.time()` read once the lock is held, write the new state back. The lock is
`SELECT ... FOR UPDATE` on PostgreSQL (a missing row is created race-free with
`INSERT ... ON CONFLICT DO NOTHING`); on SQLite every transaction starts with `BEGIN IMMEDIATE`
(see `skylane.store.db`), which already serializes writers. Nothing sleeps inside a transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from skylane.rate_limits import MAX_KEY_LENGTH, Grant, RateLimit, take
from skylane.store.tables import RateLimitStateRow

_TABLE: sa.Table = RateLimitStateRow.__table__  # type: ignore[assignment]


class RateLimitStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def take(
        self,
        key: str,
        limits: Sequence[RateLimit],
        count: int = 1,
        now: float | None = None,
    ) -> Grant:
        """Take up to `count` calls from the shared state of `key` (one transaction).

        `now` defaults to `time.time()` read once the row is locked, so grants are accounted in
        the order they are made. The state is written only when something was granted or the
        row is new (a refused take changes nothing that matters)."""
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"a rate limit key must have 1 to {MAX_KEY_LENGTH} characters")
        if self.is_postgres:
            return self._take_postgres(key, limits, count, now)
        return self._take_sqlite(key, limits, count, now)

    def _take_postgres(
        self, key: str, limits: Sequence[RateLimit], count: int, now: float | None
    ) -> Grant:
        select = sa.select(_TABLE.c.state).where(_TABLE.c.key == key).with_for_update()
        with self.engine.begin() as connection:
            row = connection.execute(select).first()
            if row is None:
                grant = take(None, limits, count, time.time() if now is None else now)
                inserted = connection.execute(
                    pg_insert(_TABLE)
                    .values(key=key, state=grant.state, updated_at=_utcnow())
                    .on_conflict_do_nothing(index_elements=[_TABLE.c.key])
                    .returning(_TABLE.c.key)
                ).first()
                if inserted is not None:
                    return grant
                # Another replica created the row meanwhile: the insert waited for its
                # transaction, so the row can now be locked and read.
                row = connection.execute(select).one()
            grant = take(row.state, limits, count, time.time() if now is None else now)
            if grant.granted:
                connection.execute(
                    sa.update(_TABLE)
                    .where(_TABLE.c.key == key)
                    .values(state=grant.state, updated_at=_utcnow())
                )
            return grant

    def _take_sqlite(
        self, key: str, limits: Sequence[RateLimit], count: int, now: float | None
    ) -> Grant:
        # The engine begins every transaction with BEGIN IMMEDIATE: this one holds the write
        # lock from its first statement to its commit.
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(_TABLE.c.state).where(_TABLE.c.key == key)).first()
            grant = take(
                None if row is None else row.state,
                limits,
                count,
                time.time() if now is None else now,
            )
            if row is None or grant.granted:
                statement = sqlite_insert(_TABLE).values(
                    key=key, state=grant.state, updated_at=_utcnow()
                )
                connection.execute(
                    statement.on_conflict_do_update(
                        index_elements=[_TABLE.c.key],
                        set_={
                            "state": statement.excluded.state,
                            "updated_at": statement.excluded.updated_at,
                        },
                    )
                )
            return grant

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored state of `key`, or None."""
        with self.engine.begin() as connection:
            return connection.execute(
                sa.select(_TABLE.c.state).where(_TABLE.c.key == key)
            ).scalar_one_or_none()

    def reset(self, key: str | None = None) -> int:
        """Forget the state of `key` (every key when None); returns how many were removed.
        For tests and benchmarks: a forgotten bucket starts full again."""
        statement = sa.delete(_TABLE)
        if key is not None:
            statement = statement.where(_TABLE.c.key == key)
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount


def _utcnow() -> datetime:
    return datetime.now(UTC)
