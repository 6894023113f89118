"""Reading `terraform output -json` of a root that uses a skylane push-pool module, for
`skylane pool create NAME --type TYPE --from-terraform-output FILE`.

Our modules (and the roots `--emit-terraform` writes) output `pool_template_defaults` (the
template variables' defaults, keyed by variable), `pool_settings` (region, project,
subscription...) and `pool_credentials` (the dispatcher identity the control plane may use). A
root that wraps the module in an output of its own (`output "pool" { value = module.pool }`)
works too: the one output whose value holds `pool_template_defaults` is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from skylane.errors import InvalidInput
from skylane.provisioning.terraform import CREDENTIALS_OUTPUT, DEFAULTS_OUTPUT, SETTINGS_OUTPUT

OPTION = "--from-terraform-output"


class TerraformPoolOutputs(BaseModel):
    """What a pool takes from Terraform's outputs."""

    model_config = ConfigDict(frozen=True)

    template_defaults: dict[str, Any]
    settings: dict[str, Any] = Field(default_factory=dict)
    credentials: dict[str, Any] = Field(default_factory=dict)
    image_repository: str | None = None


def read_terraform_output(path: Path) -> TerraformPoolOutputs:
    """The pool's outputs in `path` (the JSON `terraform output -json` prints); InvalidInput
    naming the option and saying what is wrong otherwise."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}", field=OPTION) from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{path} is not JSON (line {exc.lineno}: {exc.msg}); write it with "
            "`terraform output -json > FILE`",
            field=OPTION,
        ) from exc
    if not isinstance(document, dict):
        raise InvalidInput(
            f"{path} must hold the object `terraform output -json` prints", field=OPTION
        )
    values = {name: _value(name, output, path) for name, output in document.items()}
    if DEFAULTS_OUTPUT not in values:
        nested = [
            name
            for name, value in values.items()
            if isinstance(value, dict) and DEFAULTS_OUTPUT in value
        ]
        if len(nested) > 1:
            raise InvalidInput(
                f"{path}: outputs {', '.join(sorted(nested))} all hold {DEFAULTS_OUTPUT}; "
                "keep one (or output the module's pool_template_defaults at the top level)",
                field=OPTION,
            )
        if not nested:
            raise InvalidInput(
                f"{path} has no output {DEFAULTS_OUTPUT} (outputs: "
                f"{', '.join(sorted(values)) or 'none'}): output the skylane module's "
                f"{DEFAULTS_OUTPUT}, {SETTINGS_OUTPUT} and {CREDENTIALS_OUTPUT} from your root "
                "module, as terraform/examples/ does",
                field=OPTION,
            )
        values = values[nested[0]]
    defaults = _object(values, DEFAULTS_OUTPUT, path, required=True)
    settings = _object(values, SETTINGS_OUTPUT, path)
    credentials = _object(values, CREDENTIALS_OUTPUT, path)
    repository = values.get("image_repository")
    if repository is not None and not isinstance(repository, str):
        raise InvalidInput(f"{path}: output image_repository must be a string", field=OPTION)
    return TerraformPoolOutputs(
        template_defaults={k: v for k, v in defaults.items() if v is not None},
        settings={k: v for k, v in settings.items() if v is not None},
        credentials={k: v for k, v in credentials.items() if v is not None},
        image_repository=repository or None,
    )


def _value(name: str, output: Any, path: Path) -> Any:
    # `terraform output -json` wraps each output: {"sensitive": ..., "type": ..., "value": ...}.
    if not isinstance(output, dict) or "value" not in output:
        raise InvalidInput(
            f"{path}: output {name} has no value; is this `terraform output -json`?",
            field=OPTION,
        )
    return output["value"]


def _object(values: dict[str, Any], name: str, path: Path, *, required: bool = False) -> dict:
    value = values.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{path}: output {name} must be an object, not {type(value).__name__}", field=OPTION
        )
    return value
