"""Whose runs a dispatcher or reconciler handles: the control plane's, or one pull worker's.

- The control plane (`CONTROL_PLANE`) pushes the runs of push pools, except while a pool with
  `fallback: worker` is in fallback (the control plane could not push it), and watches what it
  submitted, plus what a push pool's worker submitted and left behind when it went offline.
- A worker of pool P (`DispatchScope.for_worker(P, name)`) claims P's runs when P is a pull pool,
  or while P is in fallback, and watches what it submitted, plus what the pool's offline
  workers submitted (it adopts those).

The SQL conditions live here so every query that hands out work applies the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from skylane.store.tables import AttemptRow, PoolRow, RunRow, WorkerRow

# A worker is online while its last heartbeat is younger than this (three missed beats of the
# default 10 s), unless the caller says otherwise.
DEFAULT_WORKER_OFFLINE_SECONDS = 30.0


@dataclass(frozen=True)
class DispatchScope:
    pool_name: str | None = None
    worker: str | None = None

    @classmethod
    def for_worker(cls, pool_name: str, worker: str) -> DispatchScope:
        return cls(pool_name=pool_name, worker=worker)

    @property
    def is_worker(self) -> bool:
        return self.worker is not None

    def describe(self) -> str:
        return f"worker {self.worker} of pool {self.pool_name}" if self.worker else "control plane"


CONTROL_PLANE = DispatchScope()


def _is_push() -> Any:
    return PoolRow.type.like("%:push")


def claimable(scope: DispatchScope) -> Any:
    """Pools whose SCHEDULED runs (and expired claims) `scope` may take (joined on PoolRow)."""
    if not scope.is_worker:
        return sa.and_(_is_push(), PoolRow.fallback_since.is_(None))
    return sa.and_(
        PoolRow.name == scope.pool_name,
        sa.or_(sa.not_(_is_push()), PoolRow.fallback_since.is_not(None)),
    )


def online_worker(now: datetime, offline_seconds: float, name: Any, pool_id: Any) -> Any:
    """EXISTS: a worker called `name` of pool `pool_id` heartbeat within `offline_seconds`."""
    return sa.exists().where(
        WorkerRow.pool_id == pool_id,
        WorkerRow.name == name,
        WorkerRow.stopped_at.is_(None),
        WorkerRow.last_heartbeat_at >= now - timedelta(seconds=offline_seconds),
    )


def watched(scope: DispatchScope, now: datetime, offline_seconds: float) -> Any:
    """Submitted attempts `scope` watches (joined on RunRow and PoolRow)."""
    orphaned = sa.and_(
        AttemptRow.by_worker.is_(True),
        sa.not_(online_worker(now, offline_seconds, AttemptRow.claimed_by, RunRow.pool_id)),
    )
    if not scope.is_worker:
        return sa.or_(AttemptRow.by_worker.is_(False), sa.and_(_is_push(), orphaned))
    return sa.and_(
        PoolRow.name == scope.pool_name,
        AttemptRow.by_worker.is_(True),
        sa.or_(AttemptRow.claimed_by == scope.worker, orphaned),
    )
