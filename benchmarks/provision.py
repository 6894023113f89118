"""Provisioning: how long `pool provision` takes, and how many cloud calls it makes, for each
cloud's push pool, from a fresh account to provisioned, again (all "exists"), and back.

    .venv/bin/python benchmarks/provision.py                   # all three clouds, 5 rounds
    .venv/bin/python benchmarks/provision.py --cloud gcp --rounds 10 --output provision.json

Procedure, per cloud and round, in this process through the provisioning engine (the same
calls `skylane pool provision` makes, without the CLI and the control plane around them):
1. `plan` of a fresh account (dry run), `apply` of that plan, `plan` again (every step
   "exists"), `apply` of that (changes nothing), `deprovision`.
2. Each phase's wall time, and the cloud requests it sent (counted where they arrive: the
   emulators' request logs; for AWS a count of botocore API calls, as moto_server keeps no
   log), split into reads and changes.
Clouds: AWS is moto_server (a subprocess, over HTTP), Google Cloud and Azure skylane's local
emulators (in this process, over HTTP and gRPC, and HTTPS for ARM). So the times are skylane's
own work plus loopback round trips; a real cloud adds its latency to every call, which the
call counts let you estimate (calls x round trip).

Prints one JSON object (`emit`).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from _common import emit, log, machine

from skylane.pool_types import parse_pool_type
from skylane.provisioning import base
from skylane.provisioning.registry import Provisioner, ProvisionOptions, provisioner_for

PHASES = ("plan_fresh", "apply_fresh", "plan_again", "apply_again", "deprovision")


@dataclass
class Cloud:
    """One cloud's pool type, where to provision, and a count of the calls sent so far by
    kind: {"read": n, "change": n}."""

    pool_type: str
    options: ProvisionOptions
    calls: Callable[[], Counter[str]]


@contextlib.contextmanager
def aws() -> Iterator[Cloud]:
    import os

    from botocore.client import BaseClient

    from skylane.testing.moto import FAKE_AWS_ENV, moto_server

    os.environ.update(FAKE_AWS_ENV)
    counted: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counting(self: BaseClient, operation: str, params: Any) -> Any:
        read = operation.startswith(("Describe", "Get", "List"))
        counted["read" if read else "change"] += 1
        return original(self, operation, params)

    with moto_server() as url:
        BaseClient._make_api_call = counting  # type: ignore[method-assign]
        try:
            options = ProvisionOptions(region="us-east-1", settings={"endpoint_url": url})
            yield Cloud("ecs:push", options, lambda: Counter(counted))
        finally:
            BaseClient._make_api_call = original  # type: ignore[method-assign]


@contextlib.contextmanager
def gcp() -> Iterator[Cloud]:
    from skylane.testing.gcp import CloudRunEmulator
    from skylane.testing.gcp_platform import MUTATING_RPCS

    # A fresh project: the APIs are off until the first round enables them (for good).
    with CloudRunEmulator(platform_apis_enabled=False) as emulator:

        def calls() -> Counter[str]:
            return Counter(
                "change" if r.rpc in MUTATING_RPCS else "read" for r in emulator.requests()
            )

        options = ProvisionOptions(
            region="europe-west1",
            project="bench-project",
            settings={"endpoint_url": emulator.url, "iam_endpoint": emulator.iam_target},
        )
        yield Cloud("cloud-run:push", options, calls)


@contextlib.contextmanager
def azure() -> Iterator[Cloud]:
    from skylane.testing.azure import AciEmulator
    from skylane.testing.azure_resources import MUTATING

    # Long-running creates and deletes (groups, registries) take 0.2 s, polled every 0.1 s.
    with AciEmulator(resource_groups=[]) as emulator:
        emulator.configure_resources(operation_seconds=0.2)

        def calls() -> Counter[str]:
            return Counter(
                "change" if r.operation in MUTATING else "read" for r in emulator.requests()
            )

        options = ProvisionOptions(
            region="westeurope",
            subscription="00000000-0000-4000-8000-0000000be7c4",
            settings={
                "endpoint_url": emulator.url,
                "ca_bundle": emulator.ca_bundle,
                "lro_poll_seconds": 0.1,
            },
        )
        yield Cloud("aci:push", options, calls)


CLOUDS: dict[str, Callable[[], contextlib.AbstractContextManager[Cloud]]] = {
    "aws": aws,
    "gcp": gcp,
    "azure": azure,
}


def one_round(cloud: Cloud, pool: str) -> dict[str, dict[str, float]]:
    kind = parse_pool_type(cloud.pool_type)
    measured: dict[str, dict[str, float]] = {}

    def phase(name: str, action: Callable[[], Any]) -> Any:
        before = cloud.calls()
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        sent = cloud.calls() - before
        measured[name] = {
            "seconds": seconds,
            "reads": sent["read"],
            "changes": sent["change"],
        }
        return result

    def fresh() -> Provisioner:
        return provisioner_for(kind, pool, cloud.options)

    provisioner = fresh()
    items = phase("plan_fresh", lambda: base.plan(provisioner.steps, provisioner.context))
    assert base.Action.UPDATE not in {i.action for i in items}, [i.row for i in items]
    records = phase("apply_fresh", lambda: base.apply(items, provisioner.context))
    again = fresh()
    items = phase("plan_again", lambda: base.plan(again.steps, again.context))
    assert {i.action for i in items} == {base.Action.EXISTS}, [i.row for i in items]
    phase("apply_again", lambda: base.apply(items, again.context))
    gone = fresh()
    phase("deprovision", lambda: base.deprovision(records, gone.steps, gone.context))
    measured["resources"] = {"steps": len(items), "created": sum(r.created for r in records)}
    return measured


def summary(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Times as median and max over the rounds; calls as counted in the last round, and in the
    first when it differed (Google's first round also enables the project's APIs)."""
    out: dict[str, Any] = {"steps": rounds[0]["resources"]["steps"]}
    for name in PHASES:
        seconds = [r[name]["seconds"] for r in rounds]
        first, last = rounds[0][name], rounds[-1][name]
        out[name] = {
            "median_ms": round(1000 * statistics.median(seconds), 1),
            "max_ms": round(1000 * max(seconds), 1),
            "reads": last["reads"],
            "changes": last["changes"],
        }
        if (first["reads"], first["changes"]) != (last["reads"], last["changes"]):
            out[name]["first_round"] = {"reads": first["reads"], "changes": first["changes"]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cloud", choices=sorted(CLOUDS), action="append")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "benchmark": "provision",
        "machine": machine(),
        "rounds": args.rounds,
        "clouds": {},
    }
    for name in args.cloud or sorted(CLOUDS):
        with CLOUDS[name]() as cloud:
            rounds = []
            for i in range(args.rounds):
                log(f"{name}: round {i + 1}/{args.rounds}")
                rounds.append(one_round(cloud, f"bench-{i}"))
            result["clouds"][name] = {"pool_type": cloud.pool_type, **summary(rounds)}
    emit(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
