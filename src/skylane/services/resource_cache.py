"""The adapters' ResourceCache, kept in the store so it survives restarts and is shared by
every dispatcher replica and pull worker (a worker's store is the worker API)."""

from __future__ import annotations

import uuid

from skylane.services.dispatch_store import DispatchStore


class StoreResourceCache:
    def __init__(self, store: DispatchStore, pool_id: uuid.UUID) -> None:
        self._store = store
        self._pool_id = pool_id

    def get(self, kind: str, key: str) -> str | None:
        return self._store.get_provider_resource(self._pool_id, kind, key)

    def put(self, kind: str, key: str, value: str) -> str:
        return self._store.put_provider_resource(self._pool_id, kind, key, value)

    def items(self, kind: str) -> dict[str, str]:
        return self._store.list_provider_resources(self._pool_id, kind)

    def delete(self, kind: str, key: str) -> None:
        self._store.delete_provider_resource(self._pool_id, kind, key)
