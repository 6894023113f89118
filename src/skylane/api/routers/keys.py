from __future__ import annotations

from fastapi import APIRouter, Depends

from skylane.api.auth import require
from skylane.api.deps import get_store
from skylane.api.schemas import ApiKeyCreate, ApiKeyCreated
from skylane.models import ApiKeyInfo, ApiScope
from skylane.store.repository import Store

router = APIRouter(
    prefix="/api", tags=["api keys"], dependencies=[Depends(require(ApiScope.ADMIN))]
)


@router.post("/keys", response_model=ApiKeyCreated, status_code=201)
def create_key(body: ApiKeyCreate, store: Store = Depends(get_store)) -> ApiKeyCreated:
    info, plaintext = store.create_api_key(
        name=body.name, scopes=body.scopes, expires_at=body.expires_at
    )
    return ApiKeyCreated(
        id=info.id,
        name=info.name,
        scopes=info.scopes,
        expires_at=info.expires_at,
        api_key=plaintext,
    )


@router.get("/keys", response_model=list[ApiKeyInfo])
def list_keys(store: Store = Depends(get_store)) -> list[ApiKeyInfo]:
    return store.list_api_keys()


@router.delete("/keys/{key_id}", response_model=ApiKeyInfo)
def revoke_key(key_id: str, store: Store = Depends(get_store)) -> ApiKeyInfo:
    return store.revoke_api_key(key_id)
