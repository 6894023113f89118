from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Depends

from skylane import __version__
from skylane.api.deps import get_store
from skylane.api.schemas import Health
from skylane.store.repository import Store

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(store: Store = Depends(get_store)) -> Health:
    """Liveness and database reachability; needs no key."""
    with store.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    return Health(version=__version__, database=store.engine.dialect.name)
