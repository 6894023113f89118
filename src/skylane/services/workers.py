"""Pull workers as the control plane sees them: which pools they may work for, what they may
touch, and whether a pool is ready (a pull pool is ready only while one of its workers is
online)."""

from __future__ import annotations

from typing import Literal

from skylane.errors import Conflict, Forbidden
from skylane.models import Pool, PoolStatus
from skylane.pool_types import parse_pool_type
from skylane.settings import Settings
from skylane.store.repository import Store


def check_worker_pool(pool: Pool) -> None:
    """Refuse a worker for a push pool that has no fallback, saying why it is not needed."""
    if parse_pool_type(pool.type).push and pool.fallback is None:
        raise Conflict(
            f"pool {pool.name!r} is a {pool.type} pool: the control plane submits its runs "
            "itself, so it needs no worker. To have workers take its runs whenever the control "
            f"plane cannot push them, turn fallback on (skylane pool update {pool.name} "
            "--fallback worker); for a pool only workers run, create a pull pool (type "
            f"{parse_pool_type(pool.type).provider}).",
            field="pool",
        )


def check_attempts_are_workers(store: Store, pool_name: str, worker: str, *keys: str) -> None:
    """A worker acts only on attempts it claimed, of the pool it works for."""
    foreign = store.attempts_not_claimed_by(list(keys), pool_name, worker)
    if foreign:
        raise Forbidden(
            f"attempt {foreign[0]} is not one worker {worker!r} claimed in pool {pool_name!r}",
            field="key",
        )


def pool_status(store: Store, settings: Settings, name: str) -> PoolStatus:
    pool = store.get_pool(name)
    workers = store.list_workers(name, offline_seconds=settings.worker_offline_seconds)
    online = [w for w in workers if w.online]
    push = parse_pool_type(pool.type).push
    by_workers = not push or pool.fallback_since is not None
    status: Literal["ready", "paused", "not_ready"] = "ready"
    reason: str | None = None
    if pool.paused:
        status, reason = "paused", "the pool is paused: no run is dispatched"
    elif by_workers and not online:
        status = "not_ready"
        reason = (
            f"no worker is online (start one: skylane worker start --pool {name})"
            if not push
            else f"in fallback ({pool.fallback_reason}) and no worker is online"
        )
    elif pool.fallback_since is not None:
        reason = f"in fallback since {pool.fallback_since:%Y-%m-%d %H:%M:%S} UTC: "
        reason += f"{pool.fallback_reason}"
    return PoolStatus(
        pool_name=name,
        status=status,
        reason=reason,
        dispatched_by="workers" if by_workers else "control plane",
        workers=workers,
    )
