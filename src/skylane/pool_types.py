"""Pool types: `<provider>` (pulled by a worker) or `<provider>:push` (pushed by the control
plane), with the aliases users bring from other tools."""

from __future__ import annotations

from dataclasses import dataclass

from skylane.errors import InvalidInput

PROVIDER_ALIASES = {
    "azure-container-instance": "aci",
    "cloud-run-v2": "cloud-run",
}


@dataclass(frozen=True)
class PoolType:
    provider: str
    push: bool

    @property
    def name(self) -> str:
        return f"{self.provider}:push" if self.push else self.provider

    def __str__(self) -> str:
        return self.name


def parse_pool_type(value: str, *, field: str = "type") -> PoolType:
    """Canonical pool type for `value`, or InvalidInput listing the types this build knows."""
    from skylane.adapters import registered_providers

    raw = (value or "").strip().lower()
    provider, _, suffix = raw.partition(":")
    provider = PROVIDER_ALIASES.get(provider, provider)
    known = registered_providers()
    if not raw or suffix not in ("", "push") or provider not in known:
        choices = ", ".join(f"{p}, {p}:push" for p in sorted(known))
        raise InvalidInput(f"unknown pool type {value!r}; known types: {choices}", field=field)
    return PoolType(provider=provider, push=suffix == "push")
