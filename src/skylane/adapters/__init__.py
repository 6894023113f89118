"""Provider adapters, registered in one plain dict keyed by provider name."""

from __future__ import annotations

from skylane.adapters.aci import AciAdapter
from skylane.adapters.base import Adapter, ProviderState, ProviderStatus, RunContext
from skylane.adapters.cloud_run import CloudRunAdapter
from skylane.adapters.ecs import EcsAdapter
from skylane.adapters.process import ProcessAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    ProcessAdapter.provider: ProcessAdapter,
    EcsAdapter.provider: EcsAdapter,
    CloudRunAdapter.provider: CloudRunAdapter,
    AciAdapter.provider: AciAdapter,
}


def registered_providers() -> list[str]:
    return sorted(ADAPTERS)


def adapter_class(provider: str) -> type[Adapter]:
    return ADAPTERS[provider]


__all__ = [
    "ADAPTERS",
    "Adapter",
    "ProviderState",
    "ProviderStatus",
    "RunContext",
    "adapter_class",
    "registered_providers",
]
