"""Pool types: `<provider>` (pulled by a worker) or `<provider>:push` (pushed by the control
plane), with the aliases users bring from other tools."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def with_default_working_dir(
    pool_type: str, template: dict[str, Any], job_variables: dict[str, Any], directory: Path
) -> dict[str, Any]:
    """A process pool runs the entrypoint on the server's machine: unless told otherwise, in
    `directory`, where the code was found (the server may well run elsewhere). Other pools, and
    templates without a `working_dir` variable, get `job_variables` as they are."""
    properties = template.get("variables", {}).get("properties", {})
    if (
        parse_pool_type(pool_type).provider != "process"
        or "working_dir" in job_variables
        or "working_dir" not in properties
    ):
        return job_variables
    return {**job_variables, "working_dir": str(directory.resolve())}
