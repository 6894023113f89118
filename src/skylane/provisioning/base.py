"""What every cloud's provisioner shares: resources as steps, a plan, an apply that rolls back
what it created when a step fails, and a deprovision that removes only what skylane created.

A provisioner (`skylane.provisioning.aws`, later gcp and azure) is a list of `Step`s in
dependency order. Each step owns one cloud resource:
- `find(context)`: look the resource up; `Found(id, owned, drift)` or None. `owned` means it
  carries skylane's `skylane-pool=NAME` tag or label for this pool; `drift` lists what differs
  from what the step would create (a missing lifecycle policy...), which an apply updates.
- `create(context)`: create it, tagged for the pool; its id (ARN, resource name, resource id).
- `update(context, found)`: bring an existing resource in line (only called when it drifted).
- `delete(context, resource_id)`: remove it; a resource already gone is fine.
- `publish(context, resource_id)`: put what later steps and the template defaults need into
  `context.outputs` (an ARN, a registry URL...). Called for every step, created or not, so a
  plan of a fresh account can show every later step too.

A step may set `retained = True`: what it creates is left in place by a rollback and by
deprovision (an enabled Google Cloud API: disabling one deletes everything of it in the
project, the user's own resources included). Its records are still kept, marked created.

Resources that carry no tags (IAM bindings, Azure role assignments) cannot say they are
skylane's; `merge_records` keeps such a record marked created when a re-run finds it again.

`plan(steps, context)` asks every step and calls nothing that changes the cloud. `apply(plan,
context)` carries a plan out in order; when a step fails, every resource created by this apply
is deleted again in reverse order and `ProvisioningFailed` names the step and the cloud's
message. What an apply created or adopted is returned as `Provisioned` records, which the pool
keeps (`Pool.provisioned_resources`); `deprovision` deletes the records marked created, in
reverse order, and never touches an adopted one.

Nothing here imports a cloud SDK.
"""

from __future__ import annotations

import copy
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from skylane.errors import SkylaneError

log = logging.getLogger(__name__)

POOL_TAG = "skylane-pool"


class Action(enum.StrEnum):
    CREATE = "create"
    EXISTS = "exists"
    UPDATE = "update"


@dataclass
class Context:
    """What the steps of one provisioning share: the pool's name (for tags and names), the
    outputs published so far, and the template defaults to set when done."""

    pool: str
    outputs: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> dict[str, str]:
        return {POOL_TAG: self.pool}


@dataclass(frozen=True)
class Found:
    """An existing resource: its id, whether skylane created it for this pool, and what
    differs from what the step would create."""

    resource_id: str
    owned: bool = False
    drift: tuple[str, ...] = ()


class Step(Protocol):
    kind: str
    name: str
    # `retained: bool = True` (optional): never deleted by a rollback or deprovision.

    def find(self, context: Context) -> Found | None: ...

    def create(self, context: Context) -> str: ...

    def update(self, context: Context, found: Found) -> None: ...

    def delete(self, context: Context, resource_id: str) -> None: ...

    def publish(self, context: Context, resource_id: str | None) -> None: ...


@dataclass(frozen=True)
class PlanItem:
    step: Step
    action: Action
    found: Found | None
    detail: str = ""

    @property
    def row(self) -> dict[str, str]:
        """The plan table's row: resource, name, action, detail."""
        return {
            "resource": self.step.kind,
            "name": self.step.name,
            "action": self.action.value,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Provisioned:
    """One resource recorded on the pool: created by skylane (removed by deprovision) or
    adopted (left alone)."""

    kind: str
    name: str
    resource_id: str
    created: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "id": self.resource_id,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provisioned:
        return cls(str(data["kind"]), str(data["name"]), str(data["id"]), bool(data["created"]))


class ProvisioningFailed(SkylaneError):
    """A step failed; what this apply had created was deleted again (`rolled_back`), except
    what could not be (`left_behind`, each with its id, for the user to remove)."""

    status_code = 502
    code = "provisioning_failed"

    def __init__(
        self,
        step: Step,
        cause: BaseException,
        *,
        rolled_back: Sequence[Provisioned] = (),
        left_behind: Sequence[Provisioned] = (),
    ) -> None:
        said = getattr(cause, "message", None) or str(cause) or type(cause).__name__
        message = f"{step.kind} {step.name}: {said}"
        if rolled_back:
            message += f"; rolled back: {', '.join(f'{r.kind} {r.name}' for r in rolled_back)}"
        if left_behind:
            message += "; could not remove, delete by hand: " + ", ".join(
                f"{r.kind} {r.resource_id}" for r in left_behind
            )
        super().__init__(
            message,
            details={
                "step": {"kind": step.kind, "name": step.name},
                "rolled_back": [r.to_json() for r in rolled_back],
                "left_behind": [r.to_json() for r in left_behind],
            },
        )
        self.step = step
        self.rolled_back = list(rolled_back)
        self.left_behind = list(left_behind)


def plan(steps: Sequence[Step], context: Context) -> list[PlanItem]:
    """What an apply would do, step by step; changes nothing in the cloud."""
    items = []
    for step in steps:
        found = step.find(context)
        if found is None:
            items.append(PlanItem(step, Action.CREATE, None))
        elif found.drift:
            items.append(PlanItem(step, Action.UPDATE, found, "; ".join(found.drift)))
        else:
            items.append(PlanItem(step, Action.EXISTS, found, "" if found.owned else "adopted"))
        step.publish(context, found.resource_id if found else None)
    return items


def apply(
    items: Sequence[PlanItem],
    context: Context,
    *,
    progress: Callable[[PlanItem, str], None] | None = None,
) -> list[Provisioned]:
    """Carry out a plan in order; the resources it now stands on. On a failure, what this
    apply created is deleted again, newest first, and ProvisioningFailed is raised."""
    done: list[Provisioned] = []
    created: list[tuple[Step, Provisioned]] = []
    for item in items:
        step = item.step
        try:
            if item.action == Action.CREATE:
                resource_id = step.create(context)
                record = Provisioned(step.kind, step.name, resource_id, created=True)
                created.append((step, record))
            else:
                assert item.found is not None
                if item.action == Action.UPDATE:
                    step.update(context, item.found)
                resource_id = item.found.resource_id
                record = Provisioned(step.kind, step.name, resource_id, item.found.owned)
            step.publish(context, resource_id)
        except Exception as exc:
            log.warning("provisioning %s %s failed: %s", step.kind, step.name, exc)
            rolled_back, left_behind = _roll_back(created, context)
            raise ProvisioningFailed(
                step, exc, rolled_back=rolled_back, left_behind=left_behind
            ) from exc
        done.append(record)
        if progress is not None:
            progress(item, resource_id)
    return done


def _roll_back(
    created: list[tuple[Step, Provisioned]], context: Context
) -> tuple[list[Provisioned], list[Provisioned]]:
    rolled_back, left_behind = [], []
    for step, record in reversed(created):
        if is_retained(step):
            continue
        try:
            step.delete(context, record.resource_id)
            rolled_back.append(record)
        except Exception as exc:  # noqa: BLE001 - reported, the rest still rolled back
            log.error("cannot roll back %s %s: %s", record.kind, record.resource_id, exc)
            left_behind.append(record)
    return rolled_back, left_behind


def deprovision(
    records: Sequence[Provisioned], steps: Sequence[Step], context: Context
) -> list[Provisioned]:
    """Delete what skylane created (records marked created), newest first, with the step of
    the same kind and name; adopted resources are left alone. The records removed."""
    by_key = {(step.kind, step.name): step for step in steps}
    removed = []
    for record in reversed(records):
        if not record.created:
            continue
        step = by_key.get((record.kind, record.name))
        if step is not None and is_retained(step):
            continue
        if step is None:
            raise SkylaneError(
                f"no provisioning step deletes {record.kind} {record.name}; remove "
                f"{record.resource_id} by hand"
            )
        step.delete(context, record.resource_id)
        removed.append(record)
    return removed


def is_retained(step: Step) -> bool:
    """Whether what `step` creates stays when skylane removes the pool's resources."""
    return bool(getattr(step, "retained", False))


def merge_records(
    previous: Sequence[Provisioned], applied: Sequence[Provisioned]
) -> list[Provisioned]:
    """The pool's records after an apply: the applied ones, each still marked created when an
    earlier apply created the same resource (an untaggable one is found again as if adopted),
    and the earlier records of resources this apply did not touch."""
    created_before = {(r.kind, r.name, r.resource_id) for r in previous if r.created}
    merged = [
        Provisioned(
            r.kind,
            r.name,
            r.resource_id,
            r.created or (r.kind, r.name, r.resource_id) in created_before,
        )
        for r in applied
    ]
    touched = {(r.kind, r.name) for r in applied}
    kept = [r for r in previous if (r.kind, r.name) not in touched]
    return [*kept, *merged]


def with_defaults(
    template: dict[str, Any], defaults: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The base job template with `defaults` as its variables' defaults, so a deployment on the
    provisioned pool needs no job variable but the image; and the names it has no variable for
    (a custom template may lack some), left out."""
    result = copy.deepcopy(template)
    properties = result.get("variables", {}).get("properties", {})
    missing = []
    for name, value in defaults.items():
        if value is None:
            continue
        if isinstance(properties.get(name), dict):
            properties[name]["default"] = copy.deepcopy(value)
        else:
            missing.append(name)
    return result, missing
