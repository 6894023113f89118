"""skylane: push runs of Python code straight onto serverless container platforms.

`from skylane import flow` gives the SDK's decorator (see `skylane.flows`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Flow", "__version__", "flow"]

if TYPE_CHECKING:
    from skylane.flows import Flow, flow


def __getattr__(name: str) -> Any:
    # Imported on first use: `skylane run execute` and the CLI need not load the SDK.
    if name in ("flow", "Flow"):
        from skylane import flows

        return getattr(flows, name)
    raise AttributeError(f"module 'skylane' has no attribute {name!r}")
