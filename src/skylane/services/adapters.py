"""Adapters inside the control plane: building them for a pool (with the store-backed cache)
and rendering a run's provider request, the same way for the dispatcher and for previews."""

from __future__ import annotations

import uuid
from typing import Any

from skylane import templates
from skylane.adapters import Adapter, RunContext, adapter_class
from skylane.models import Deployment, Pool, Run
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
