"""Adapters inside the control plane: building them for a pool (with the store-backed cache)
and rendering a run's provider request, the same way for the dispatcher and for previews."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from skylane import templates
from skylane.adapters import Adapter, RunContext, adapter_class
from skylane.models import Deployment, Pool, Run
from skylane.pool_types import parse_pool_type
from skylane.services.dispatch_store import DispatchStore
from skylane.services.resource_cache import StoreResourceCache
from skylane.settings import Settings

if TYPE_CHECKING:
    from skylane.rate_limits import RateLimiter

# Stands in for a run that does not exist yet: previews and deploy-time checks render with it.
PREVIEW_RUN_ID = uuid.UUID(int=0)
PREVIEW_TOKEN = "sklr_preview_****"


def make_adapter(
    store: DispatchStore, settings: Settings, pool: Pool, *, limiter: RateLimiter | None = None
) -> Adapter:
    """The pool type's adapter for `pool`, remembering what it creates in the store. With a
    `limiter`, its rate-limited calls (e.g. ECS RunTask) take tokens shared by all replicas."""
    provider = parse_pool_type(pool.type).provider
    return adapter_class(provider)(
        pool, settings, cache=StoreResourceCache(store, pool.id), limiter=limiter
    )


class PoolAdapters:
    """One adapter per pool version (name and `updated_at`), kept while the process runs, so
    clients, sessions and caches are reused across passes. Thread-safe."""

    def __init__(
        self, store: DispatchStore, settings: Settings, *, limiter: RateLimiter | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.limiter = limiter
        self._adapters: dict[tuple[str, datetime], Adapter] = {}
        self._lock = threading.Lock()

    def get(self, pool: Pool) -> Adapter:
        key = (pool.name, pool.updated_at)
        with self._lock:
            adapter = self._adapters.get(key)
            if adapter is None:
                # A changed pool gets a new adapter; the old version's is dropped.
                for old in [k for k in self._adapters if k[0] == pool.name]:
                    del self._adapters[old]
                adapter = make_adapter(self.store, self.settings, pool, limiter=self.limiter)
                self._adapters[key] = adapter
            return adapter


def job_variable_layers(deployment: Deployment, run: Run | None = None) -> list[Any]:
    """What fills a pool's template, in order: the deployment's image (for the `image`
    variable, unless job variables set it), its job variables, then the run's."""
    layers: list[Any] = [
        {"image": deployment.image} if deployment.image else None,
        deployment.job_variables,
    ]
    if run is not None:
        layers.append(run.job_variables)
    return layers


def render_run(
    adapter: Adapter,
    pool: Pool,
    deployment: Deployment,
    run: Run | None,
    context: RunContext,
    *,
    template_checked: bool = False,
) -> Any:
    """The exact provider request for a run (or, with `run` None, for the deployment's
    defaults). Pure: templates and the adapter's `render` do no I/O."""
    _, job_configuration = templates.resolve_job_configuration(
        pool.base_job_template,
        *job_variable_layers(deployment, run),
        template_checked=template_checked,
    )
    return adapter.render(job_configuration, context)


def preview_context(pool: Pool, deployment: Deployment, api_url: str) -> RunContext:
    """A RunContext for a run that does not exist (previews, deploy-time checks)."""
    return RunContext(
        run_id=PREVIEW_RUN_ID,
        flow_name=deployment.flow_name,
        deployment_name=deployment.full_name,
        pool_name=pool.name,
        entrypoint=deployment.entrypoint,
        api_url=api_url,
        run_token=PREVIEW_TOKEN,
        idempotency_key=f"skl-{PREVIEW_RUN_ID.hex}-1",
        image=deployment.image,
    )
