"""Building adapters for pools inside the control plane (with the store-backed cache)."""

from __future__ import annotations

import uuid

from skylane.adapters import Adapter, RunContext, adapter_class
from skylane.models import Deployment, Pool
from skylane.pool_types import parse_pool_type
from skylane.services.resource_cache import StoreResourceCache
from skylane.settings import Settings
from skylane.store.repository import Store

# Stands in for a run that does not exist yet: previews and deploy-time checks render with it.
PREVIEW_RUN_ID = uuid.UUID(int=0)
PREVIEW_TOKEN = "sklr_preview_****"


def make_adapter(store: Store, settings: Settings, pool: Pool) -> Adapter:
    provider = parse_pool_type(pool.type).provider
    return adapter_class(provider)(pool, settings, cache=StoreResourceCache(store, pool.id))


def preview_context(
    pool: Pool, deployment_full_name: str, entrypoint: str, image: str | None, api_url: str
) -> RunContext:
    flow_name = deployment_full_name.split("/", 1)[0]
    return RunContext(
        run_id=PREVIEW_RUN_ID,
        flow_name=flow_name,
        deployment_name=deployment_full_name,
        pool_name=pool.name,
        entrypoint=entrypoint,
        api_url=api_url,
        run_token=PREVIEW_TOKEN,
        idempotency_key=f"skl-{PREVIEW_RUN_ID.hex}-1",
        image=image,
    )


def deployment_preview_context(pool: Pool, deployment: Deployment, api_url: str) -> RunContext:
    return preview_context(
        pool, deployment.full_name, deployment.entrypoint, deployment.image, api_url
    )
