"""Static reading of our Terraform: python-hcl2 parses each `.tf` file; this gathers what a
directory declares (variables, locals, outputs, resources, data sources, module calls, import
blocks) and what its expressions refer to. No Terraform binary is needed; `make
terraform-validate` runs `terraform validate` wherever one is installed.

python-hcl2 (>= 7) gives string literals with their quotes (`'"name"'`), expressions as
`'${...}'`, and block labels quoted."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
PROVIDER_PREFIXES = ("aws_", "google_", "azurerm_")


def label(text: str) -> str:
    return text.strip('"')


def literal(value: Any) -> Any:
    """A literal's Python value: quoted strings unquoted, lists and objects walked; an
    expression (`${...}`) is returned as it is."""
    if isinstance(value, str):
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            return value[1:-1].replace('\\"', '"')
        return value
    if isinstance(value, list):
        return [literal(v) for v in value]
    if isinstance(value, dict):
        return {label(k): literal(v) for k, v in value.items() if k != "__is_block__"}
    return value


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def template_parts(text: str) -> list[str]:
    """The `${...}` parts of a string (braces inside counted)."""
    parts, start = [], 0
    while (i := text.find("${", start)) != -1:
        depth, j = 0, i + 1
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        parts.append(text[i + 2 : j])
        start = j + 1
    return parts


def walk_strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in walk_strings(item)]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in walk_strings(value)]
    return []


_NAMED = re.compile(r"(?<![\w.\"'])(var|local|module|data|each|count|path|self|terraform)\.(\w+)")
_DATA = re.compile(r"(?<![\w.\"'])data\.(\w+)\.(\w+)")
_MODULE_OUTPUT = re.compile(r"(?<![\w.\"'])module\.(\w+)\.(\w+)")
_RESOURCE = re.compile(r"(?<![\w.\"'])((?:aws|google|azurerm)_\w+)\.(\w+)")


@dataclass
class References:
    variables: set[str] = field(default_factory=set)
    locals: set[str] = field(default_factory=set)
    modules: set[str] = field(default_factory=set)
    module_outputs: set[tuple[str, str]] = field(default_factory=set)
    data: set[str] = field(default_factory=set)
    resources: set[str] = field(default_factory=set)


def references(node: Any) -> References:
    """What the expressions in `node` refer to (only inside `${...}`, so prose in a
    description never counts)."""
    found = References()
    for text in walk_strings(node):
        for code in template_parts(text):
            for kind, name in _NAMED.findall(code):
                if kind == "var":
                    found.variables.add(name)
                elif kind == "local":
                    found.locals.add(name)
                elif kind == "module":
                    found.modules.add(name)
            found.module_outputs |= set(_MODULE_OUTPUT.findall(code))
            found.data |= {f"data.{t}.{n}" for t, n in _DATA.findall(code)}
            # `data.aws_vpc.default` is not matched: a "." comes before its type.
            found.resources |= {f"{t}.{n}" for t, n in _RESOURCE.findall(code)}
    return found


@dataclass
class Directory:
    """One module or root: its files parsed, and what it declares."""

    path: Path
    files: dict[str, dict[str, Any]]
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    imports: list[dict[str, Any]] = field(default_factory=list)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def load(path: Path) -> Directory:
    """The directory's `.tf` files parsed (once per process: python-hcl2 is slow; treat the
    result as read-only)."""
    return _load(
        Path(path).resolve(), tuple(tf.stat().st_mtime_ns for tf in Path(path).glob("*.tf"))
    )


@functools.lru_cache(maxsize=64)
def _load(path: Path, _stamp: tuple[int, ...]) -> Directory:
    files = {}
    for tf in sorted(path.glob("*.tf")):
        with tf.open() as handle:
            files[tf.name] = hcl2.load(handle)
    directory = Directory(path, files)
    for parsed in files.values():
        for block in parsed.get("variable", []):
            directory.variables.update({label(k): v for k, v in block.items()})
        for block in parsed.get("output", []):
            directory.outputs.update({label(k): v for k, v in block.items()})
        for block in parsed.get("locals", []):
            directory.locals.update({k: v for k, v in block.items() if k != "__is_block__"})
        for block in parsed.get("resource", []):
            for rtype, named in block.items():
                for rname, body in named.items():
                    directory.resources[f"{label(rtype)}.{label(rname)}"] = body
        for block in parsed.get("data", []):
            for dtype, named in block.items():
                for dname, body in named.items():
                    directory.data[f"data.{label(dtype)}.{label(dname)}"] = body
        for block in parsed.get("module", []):
            directory.modules.update({label(k): v for k, v in block.items()})
        directory.imports += parsed.get("import", [])
        directory.terraform += parsed.get("terraform", [])
    return directory


def module_dirs() -> list[Path]:
    return sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())


def example_dirs() -> list[Path]:
    return sorted(p for p in (TERRAFORM / "examples").iterdir() if p.is_dir())


# --- evaluating the few expressions the tests need -------------------------------------------


def _python(expression: str, values: dict[str, Any], directory: Directory) -> Any:
    """A simple HCL expression (`var.x ? 1 : 0`, `var.x != null ? 1 : 0`, `local.list`,
    `toset(local.list)`, `length(...)`) evaluated with `values` for `var.*`. Anything
    more is a failure: counts and for_each over what the tests cannot follow should not be
    written."""
    code = expression.strip()
    if code.startswith("${") and code.endswith("}"):
        code = code[2:-1]

    def local_value(match: re.Match[str]) -> str:
        value = literal(directory.locals[match.group(1)])
        if is_expression(value):
            raise ValueError(f"local.{match.group(1)} is not a literal")
        return repr(value)

    code = re.sub(r"\blocal\.(\w+)\b", local_value, code)
    code = re.sub(r"\bvar\.(\w+)\b", lambda m: repr(values[m.group(1)]), code)
    code = re.sub(r"\bnull\b", "None", code)
    code = re.sub(r"\btrue\b", "True", code)
    code = re.sub(r"\bfalse\b", "False", code)
    code = code.replace("&&", " and ").replace("||", " or ")
    code = re.sub(r"!(?!=)", " not ", code)
    ternary = re.fullmatch(r"(.+?)\?(.+):(.+)", code)
    if ternary:
        condition, yes, no = ternary.groups()
        code = f"({yes}) if ({condition}) else ({no})"
    return eval(code, {"__builtins__": {}}, {"toset": list, "length": len, "tolist": list})  # noqa: S307


def planned_addresses(directory: Directory, inputs: dict[str, Any]) -> set[str]:
    """The resource addresses the module has for `inputs` (and its variables' defaults):
    counted ones as `type.name[i]`, for_each ones as `type.name["key"]`."""
    values = {name: literal(body.get("default")) for name, body in directory.variables.items()}
    values.update(inputs)
    addresses = set()
    for address, body in directory.resources.items():
        if "count" in body:
            count = _python(body["count"], values, directory)
            addresses |= {f"{address}[{i}]" for i in range(int(count))}
        elif "for_each" in body:
            keys = _python(body["for_each"], values, directory)
            addresses |= {f'{address}["{key}"]' for key in keys}
        else:
            addresses.add(address)
    return addresses


def render_name(value: Any, names: dict[str, str]) -> str:
    """A name attribute written as a plain template (`"skylane-${local.slug}-task"`) with
    `names` substituted for its `${local.x}` / `${var.x}` parts."""
    text = literal(value)
    assert isinstance(text, str), f"a name must be a string template, not {value!r}"

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        assert key in names, f"{key} in {value!r} is not one of the names the tests know"
        return names[key]

    rendered = re.sub(r"\$\{((?:local|var)\.\w+)\}", substitute, text)
    assert "${" not in rendered, f"{value!r}: a name must be plain text and local/var references"
    return rendered


def check_emitted_root(directory: Path, provider: str, records: list[Any]) -> dict[str, str]:
    """Check a root module `--emit-terraform` wrote: it parses, calls the copy of our module
    it carries with inputs the module declares, and has an import block for each resource
    standing for a record (a resource group skylane adopted excepted), each targeting a
    resource the module has for those inputs. Returns the import blocks, `to` -> id."""
    from skylane.provisioning import terraform

    root = load(directory)
    module = load(directory / "modules" / terraform.MODULES[provider])
    call = root.modules["pool"]
    assert literal(call["source"]) == f"./modules/{terraform.MODULES[provider]}"
    inputs = {k: literal(v) for k, v in call.items() if k not in ("source", "__is_block__")}
    assert set(inputs) <= set(module.variables), "the root passes an input the module lacks"
    planned = planned_addresses(module, inputs)
    imports = {}
    for block in root.imports:
        to = literal(block["to"]).replace('\\"', '"')
        to = to.removeprefix("${").removesuffix("}")
        imports[to] = literal(block["id"])
    assert all(to.startswith("module.pool.") for to in imports)
    assert {to.removeprefix("module.pool.") for to in imports} <= planned
    adopted_groups = [r for r in records if r.kind == "resource-group" and not r.created]
    expected = terraform.module_addresses(provider, [r for r in records if r not in adopted_groups])
    assert set(imports) == {f"module.pool.{address}" for address in expected}
    # (Import targets are addresses, not outputs: only the outputs' references are checked.)
    for module_name, output_name in references(root.outputs).module_outputs:
        assert module_name == "pool" and output_name in module.outputs, output_name
    return imports
