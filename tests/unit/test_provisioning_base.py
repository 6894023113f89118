"""The provisioning engine (plan, apply with rollback, deprovision) on steps over an in-memory
"cloud": what is checked is the engine's bookkeeping; each cloud's steps are tested against
moto or the emulators in their own files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from skylane.provisioning.base import (
    POOL_TAG,
    Action,
    Context,
    Found,
    Provisioned,
    ProvisioningFailed,
    apply,
    deprovision,
    plan,
)


@dataclass
class Cloud:
    """Resources by name: their tags and settings; a record of every change."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    refuse_delete: set[str] = field(default_factory=set)


@dataclass
class Bucket:
    cloud: Cloud
    name: str
    kind: str = "bucket"
    retention: int = 7

    def find(self, context: Context) -> Found | None:
        found = self.cloud.resources.get(self.name)
        if found is None:
            return None
        drift = () if found["retention"] == self.retention else ("retention",)
        owned = found["tags"].get(POOL_TAG) == context.pool
        return Found(f"id-{self.name}", owned=owned, drift=drift)

    def create(self, context: Context) -> str:
        if self.name in self.cloud.refuse:
            raise RuntimeError(f"AccessDenied: may not create {self.name}")
        self.cloud.resources[self.name] = {"tags": context.tags, "retention": self.retention}
        self.cloud.changes.append(f"create {self.name}")
        return f"id-{self.name}"

    def update(self, context: Context, found: Found) -> None:
        self.cloud.resources[self.name]["retention"] = self.retention
        self.cloud.changes.append(f"update {self.name}")

    def delete(self, context: Context, resource_id: str) -> None:
        if self.name in self.cloud.refuse_delete:
            raise RuntimeError(f"cannot delete {self.name}")
        self.cloud.resources.pop(self.name, None)
        self.cloud.changes.append(f"delete {self.name}")

    def publish(self, context: Context, resource_id: str | None) -> None:
        context.outputs[self.name] = resource_id or f"id-{self.name} (to be created)"
        context.defaults[f"{self.name}_id"] = resource_id


def steps(cloud: Cloud, *names: str) -> list[Bucket]:
    return [Bucket(cloud, name) for name in names or ("registry", "role", "cluster")]


def test_plan_asks_and_changes_nothing() -> None:
    cloud = Cloud()
    items = plan(steps(cloud), Context("p"))
    assert [(i.step.name, i.action) for i in items] == [
        ("registry", Action.CREATE),
        ("role", Action.CREATE),
        ("cluster", Action.CREATE),
    ]
    assert cloud.changes == [] and cloud.resources == {}
    assert items[0].row == {
        "resource": "bucket",
        "name": "registry",
        "action": "create",
        "detail": "",
    }


def test_apply_creates_what_the_plan_said_and_a_second_run_changes_nothing() -> None:
    cloud = Cloud()
    context = Context("p")
    seen: list[str] = []
    records = apply(
        plan(steps(cloud), context), context, progress=lambda item, rid: seen.append(rid)
    )
    assert cloud.changes == ["create registry", "create role", "create cluster"]
    assert all(r.created for r in records) and seen == [r.resource_id for r in records]
    assert context.defaults == {
        "registry_id": "id-registry",
        "role_id": "id-role",
        "cluster_id": "id-cluster",
    }
    assert {name: r["tags"] for name, r in cloud.resources.items()} == {
        name: {POOL_TAG: "p"} for name in ("registry", "role", "cluster")
    }

    again = plan(steps(cloud), Context("p"))
    assert {i.action for i in again} == {Action.EXISTS}
    assert apply(again, Context("p")) == records
    assert len(cloud.changes) == 3


def test_drift_is_planned_as_update_and_fixed() -> None:
    cloud = Cloud()
    apply(plan(steps(cloud), Context("p")), Context("p"))
    cloud.resources["role"]["retention"] = 30
    items = plan(steps(cloud), Context("p"))
    assert [i.action for i in items] == [Action.EXISTS, Action.UPDATE, Action.EXISTS]
    assert items[1].detail == "retention"
    apply(items, Context("p"))
    assert cloud.resources["role"]["retention"] == 7 and cloud.changes[-1] == "update role"


@pytest.mark.parametrize("failing", ["registry", "role", "cluster"])
def test_a_failure_at_any_step_rolls_back_what_this_apply_created(failing: str) -> None:
    cloud = Cloud(refuse={failing})
    with pytest.raises(ProvisioningFailed) as caught:
        apply(plan(steps(cloud), Context("p")), Context("p"))
    assert cloud.resources == {}
    error = caught.value
    assert error.step.name == failing
    assert f"bucket {failing}: AccessDenied" in error.message
    assert error.details["step"] == {"kind": "bucket", "name": failing}
    assert [r.name for r in error.rolled_back] == list(
        reversed(["registry", "role", "cluster"][: ["registry", "role", "cluster"].index(failing)])
    )


def test_rollback_leaves_what_existed_before_and_reports_what_it_could_not_remove() -> None:
    cloud = Cloud(refuse={"cluster"}, refuse_delete={"role"})
    cloud.resources["registry"] = {"tags": {}, "retention": 7}  # the user's own
    with pytest.raises(ProvisioningFailed) as caught:
        apply(plan(steps(cloud), Context("p")), Context("p"))
    assert "registry" in cloud.resources  # adopted, never rolled back
    assert [r.name for r in caught.value.left_behind] == ["role"]
    assert "delete by hand: bucket id-role" in caught.value.message


def test_deprovision_removes_only_what_skylane_created() -> None:
    cloud = Cloud()
    cloud.resources["registry"] = {"tags": {}, "retention": 7}  # existed before
    records = apply(plan(steps(cloud), Context("p")), Context("p"))
    assert [(r.name, r.created) for r in records] == [
        ("registry", False),
        ("role", True),
        ("cluster", True),
    ]
    stored = [r.to_json() for r in records]  # as the pool keeps them
    removed = deprovision([Provisioned.from_json(r) for r in stored], steps(cloud), Context("p"))
    assert [r.name for r in removed] == ["cluster", "role"]  # newest first
    assert list(cloud.resources) == ["registry"]


def test_defaults_become_the_templates_variable_defaults() -> None:
    from skylane.adapters.ecs import EcsAdapter
    from skylane.provisioning.base import with_defaults

    template = EcsAdapter.default_template()
    updated, missing = with_defaults(
        template, {"cluster": "arn:aws:ecs:eu-west-1:1:cluster/p", "not_a_variable": 1, "x": None}
    )
    assert updated["variables"]["properties"]["cluster"]["default"].endswith("cluster/p")
    assert missing == ["not_a_variable"]
    assert "default" not in template["variables"]["properties"]["cluster"]  # not changed


@dataclass
class Switch(Bucket):
    """Like an enabled cloud API: created by skylane, but never turned off again."""

    kind: str = "switch"
    retained: bool = True


def test_a_retained_step_survives_rollback_and_deprovision() -> None:
    cloud = Cloud(refuse={"cluster"})
    chain = [Switch(cloud, "api"), Bucket(cloud, "registry"), Bucket(cloud, "cluster")]
    with pytest.raises(ProvisioningFailed) as caught:
        apply(plan(chain, Context("p")), Context("p"))
    assert list(cloud.resources) == ["api"]
    assert [r.name for r in caught.value.rolled_back] == ["registry"]

    cloud.refuse.clear()
    records = apply(plan(chain, Context("p")), Context("p"))
    assert [(r.name, r.created) for r in records] == [
        ("api", True),  # as the failed apply left it, still the pool's
        ("registry", True),
        ("cluster", True),
    ]
    removed = deprovision(records, chain, Context("p"))
    assert [r.name for r in removed] == ["cluster", "registry"]
    assert list(cloud.resources) == ["api"]


def test_merge_records_keeps_what_an_earlier_apply_created() -> None:
    from skylane.provisioning.base import merge_records

    earlier = [
        Provisioned("binding", "run.developer", "projects/p#run.developer", created=True),
        Provisioned("bucket", "old", "id-old", created=True),
        Provisioned("bucket", "theirs", "id-theirs", created=False),
    ]
    # A re-run finds the binding again (no tag says whose it is) and a new bucket.
    applied = [
        Provisioned("binding", "run.developer", "projects/p#run.developer", created=False),
        Provisioned("bucket", "theirs", "id-theirs", created=False),
        Provisioned("bucket", "new", "id-new", created=True),
    ]
    merged = merge_records(earlier, applied)
    assert [(r.name, r.created) for r in merged] == [
        ("old", True),  # not touched by this apply: kept as it was
        ("run.developer", True),  # still skylane's
        ("theirs", False),  # never becomes skylane's
        ("new", True),
    ]
    # The same name with another id is another resource: not skylane's by inheritance.
    moved = [Provisioned("binding", "run.developer", "projects/q#run.developer", False)]
    assert [r.created for r in merge_records(earlier, moved) if r.kind == "binding"] == [False]
