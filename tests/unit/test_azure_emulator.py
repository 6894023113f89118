"""The Azure Container Instances emulator (`skylane.testing.azure`), driven through the official
`azure-mgmt-containerinstance` client over HTTPS (the emulator's own CA passed as
`connection_verify`), with a fixed bearer token; plain httpx for the control API and for what
the SDK never does (calls without a token or an api-version).

The SDK picks the exception class from the HTTP status alone: 401 `ClientAuthenticationError`,
404 `ResourceNotFoundError`, 409 `ResourceExistsError` (quota and capacity errors included),
anything else `HttpResponseError`; ARM's error code is `exc.error.code`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("azure.mgmt.containerinstance")
pytest.importorskip("cryptography")

from azure.core.credentials import AccessToken  # noqa: E402
from azure.core.exceptions import (  # noqa: E402
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.policies import SansIOHTTPPolicy  # noqa: E402
from azure.mgmt.containerinstance import ContainerInstanceManagementClient, models  # noqa: E402

from skylane.testing.azure import AciEmulator, Fault  # noqa: E402
from skylane.testing.server import stop_process  # noqa: E402
from skylane.testing.waiting import wait_until as shared_wait_until  # noqa: E402

SUB = "6f1c2b3a-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
RG = "skylane-rg"
GROUPS = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance"
API = {"api-version": "2023-05-01"}
IDENTITY = (
    f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/"
    "userAssignedIdentities/skylane-runner"
)


class FixedToken:
    """A TokenCredential with a fixed token: the emulator accepts any."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def client_for(emulator: AciEmulator) -> ContainerInstanceManagementClient:
    return ContainerInstanceManagementClient(
        credential=FixedToken(),
        subscription_id=SUB,
        base_url=emulator.url,
        connection_verify=emulator.ca_bundle,
        retry_total=0,
        polling_interval=0.01,
    )


@pytest.fixture(scope="module")
def server() -> Iterator[AciEmulator]:
    with AciEmulator(provision_seconds=0.02, run_seconds=0.05) as started:
        yield started


@pytest.fixture
def emulator(server: AciEmulator) -> AciEmulator:
    server.reset()  # back to the constructor's plan, without faults, groups or request log
    return server


@pytest.fixture
def client(emulator: AciEmulator) -> ContainerInstanceManagementClient:
    return client_for(emulator)


def a_group(
    *,
    command: list[str] | None = None,
    env: list[models.EnvironmentVariable] | None = None,
    cpu: float = 1.0,
    memory: float = 1.5,
    **group: Any,
) -> models.ContainerGroup:
    container = models.Container(
        name="main",
        image="python:3.12-slim",
        command=command,
        environment_variables=env
        or [models.EnvironmentVariable(name="SKYLANE_RUN_ID", value="r1")],
        resources=models.ResourceRequirements(
            requests=models.ResourceRequests(cpu=cpu, memory_in_gb=memory)
        ),
    )
    group.setdefault("location", "West Europe")
    group.setdefault("restart_policy", "Never")
    return models.ContainerGroup(containers=[container], os_type="Linux", **group)


def group_body(**properties: Any) -> dict[str, Any]:
    """A valid PUT body as JSON, `properties` merged into its `properties`."""
    body: dict[str, Any] = {
        "location": "westeurope",
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "properties": {
                        "image": "python:3.12-slim",
                        "resources": {"requests": {"cpu": 1.0, "memoryInGB": 1.5}},
                    },
                }
            ],
        },
    }
    body["properties"].update(properties)
    return body


def create(
    client: ContainerInstanceManagementClient, name: str, group: Any = None, **kwargs: Any
) -> models.ContainerGroup:
    poller = client.container_groups.begin_create_or_update(
        RG, name, group if group is not None else a_group(), **kwargs
    )
    return poller.result(timeout=5)


def put_json(client: ContainerInstanceManagementClient, name: str, body: Any) -> Any:
    """A PUT of `body` exactly as given (the SDK passes bytes through unserialized)."""
    return client.container_groups.begin_create_or_update(
        RG, name, json.dumps(body).encode(), polling=False
    ).result()


def trusting(emulator: AciEmulator) -> ssl.SSLContext:
    """What a plain HTTPS client (httpx) trusts to call the emulator."""
    return ssl.create_default_context(cafile=emulator.ca_bundle)


def wait_until(check: Callable[[], Any], timeout: float = 3.0) -> Any:
    return shared_wait_until(check, "the emulator", timeout=timeout, interval=0.01)


def terminated(client: ContainerInstanceManagementClient, name: str) -> models.ContainerGroup:
    def check() -> models.ContainerGroup | None:
        group = client.container_groups.get(RG, name)
        view = group.containers[0].instance_view
        return group if view and view.current_state.state == "Terminated" else None

    return wait_until(check)


def events(group: models.ContainerGroup) -> list[tuple[str, str]]:
    return [(e.name, e.type) for e in group.containers[0].instance_view.events]


# -- the life of a group ----------------------------------------------------------------------


def test_create_runs_the_group_to_success(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    created = create(client, "skylane-a1", a_group(tags={"skylane-run": "r1"}))

    assert created.provisioning_state == "Succeeded"
    assert created.id == f"{GROUPS}/containerGroups/skylane-a1"
    assert created.type == "Microsoft.ContainerInstance/containerGroups"
    assert created.location == "westeurope"  # "West Europe", normalized as ARM does
    assert created.tags == {"skylane-run": "r1"}
    [put] = emulator.requests("containerGroups.createOrUpdate")
    assert put.method == "PUT" and put.status == 201
    assert put.query == API
    assert put.body["properties"]["containers"][0]["properties"]["image"] == "python:3.12-slim"
    assert "Authorization" not in put.headers and put.headers["Content-Type"] == "application/json"
    assert emulator.requests("operations.get"), "the poller follows Azure-AsyncOperation"

    done = terminated(client, "skylane-a1")
    assert done.instance_view.state == "Succeeded"
    state = done.containers[0].instance_view.current_state
    assert (state.exit_code, state.detail_status) == (0, "Completed")
    assert state.start_time < state.finish_time
    assert done.containers[0].instance_view.restart_count == 0
    assert events(done) == [("Pulling", "Normal"), ("Pulled", "Normal"), ("Started", "Normal")]


def test_states_follow_the_clock() -> None:
    clock = FakeClock()
    with AciEmulator(provision_seconds=2, run_seconds=10, clock=clock) as emulator:
        client = client_for(emulator)
        headers: dict[str, str] = {}
        poller = client.container_groups.begin_create_or_update(
            RG,
            "timed",
            a_group(),
            raw_response_hook=lambda r: headers.update(r.http_response.headers),
        )
        operation = headers["Azure-AsyncOperation"]
        assert re.fullmatch(
            rf"{emulator.url}/subscriptions/{SUB}/providers/Microsoft\.ContainerInstance/"
            r"locations/westeurope/operations/[-0-9a-f]{36}\?api-version=2023-05-01",
            operation,
        )
        [put] = emulator.requests("containerGroups.createOrUpdate")
        assert put.response["properties"]["provisioningState"] == "Pending"

        def get() -> Any:
            return client.container_groups.get(RG, "timed")

        pending = get()
        assert (pending.provisioning_state, pending.instance_view.state) == ("Pending", "Pending")
        assert pending.containers[0].instance_view is None  # not scheduled yet
        assert not poller.done()
        assert poller.status() in ("InProgress", "Creating")  # the operation's status

        clock.now += 1
        creating = get()
        assert creating.provisioning_state == "Creating"
        waiting = creating.containers[0].instance_view
        assert (waiting.current_state.state, waiting.current_state.detail_status) == (
            "Waiting",
            "ContainerCreating",
        )
        assert [e.name for e in waiting.events] == ["Pulling"]
        assert waiting.events[0].message == 'pulling image "python:3.12-slim"'
        operation_status = httpx.get(
            operation, headers={"Authorization": "Bearer x"}, verify=trusting(emulator)
        ).json()
        assert operation_status["status"] == "Creating"

        clock.now += 1
        assert poller.result(timeout=5).provisioning_state == "Succeeded"
        assert (poller.done(), poller.status()) == (True, "Succeeded")
        running = get()
        assert running.instance_view.state == "Running"
        current = running.containers[0].instance_view.current_state
        assert (current.state, current.exit_code, current.finish_time) == ("Running", None, None)
        assert events(running) == [
            ("Pulling", "Normal"),
            ("Pulled", "Normal"),
            ("Started", "Normal"),
        ]
        finished_operation = emulator.requests("operations.get")[-1].response
        assert finished_operation["status"] == "Succeeded"
        assert {"id", "name", "startTime", "endTime"} <= set(finished_operation)

        clock.now += 10
        done = get()
        assert done.instance_view.state == "Succeeded"
        final = done.containers[0].instance_view.current_state
        assert final.state == "Terminated" and final.exit_code == 0
        assert final.finish_time - final.start_time == timedelta(seconds=10)


def test_non_zero_exit_fails_the_group(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.plan_group("three", exit_code=3)

    create(client, "three")

    failed = terminated(client, "three")
    assert failed.provisioning_state == "Succeeded"
    assert failed.instance_view.state == "Failed"
    state = failed.containers[0].instance_view.current_state
    assert (state.exit_code, state.detail_status) == (3, "Error")


def test_provision_error_fails_provisioning(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.fail_provisioning("nope")

    with pytest.raises(HttpResponseError) as raised:
        create(client, "nope")

    message = (
        "The image 'python:3.12-slim' in container group 'nope' is not accessible. Please check "
        "the image and registry credential."
    )
    assert raised.value.error.code == "InaccessibleImage"
    assert raised.value.error.message == message
    failed = client.container_groups.get(RG, "nope")
    assert failed.provisioning_state == "Failed"
    assert failed.instance_view.state == "Failed"
    view = failed.containers[0].instance_view
    assert view.current_state.state == "Waiting"
    assert view.events[-1].name == "Failed" and view.events[-1].type == "Warning"
    assert view.events[-1].message == message


def test_secure_values_are_never_returned(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    env = [
        models.EnvironmentVariable(name="PLAIN", value="visible"),
        models.EnvironmentVariable(name="TOKEN", secure_value="s3cr3t-env"),
    ]
    group = a_group(
        env=env,
        identity=models.ContainerGroupIdentity(
            type="UserAssigned", user_assigned_identities={IDENTITY: {}}
        ),
        image_registry_credentials=[
            models.ImageRegistryCredential(
                server="example.azurecr.io", username="puller", password="s3cr3t-registry"
            ),
            models.ImageRegistryCredential(server="other.azurecr.io", identity=IDENTITY),
        ],
    )

    created = create(client, "secretive", group)

    listed = list(client.container_groups.list_by_resource_group(RG))
    for seen in (created, client.container_groups.get(RG, "secretive"), listed[0]):
        variables = seen.containers[0].environment_variables
        assert [(v.name, v.value, v.secure_value) for v in variables] == [
            ("PLAIN", "visible", None),
            ("TOKEN", None, None),
        ]
        credentials = seen.image_registry_credentials
        assert [(c.server, c.username, c.password) for c in credentials] == [
            ("example.azurecr.io", "puller", None),
            ("other.azurecr.io", None, None),
        ]
        assert credentials[1].identity == IDENTITY
        assigned = seen.identity.user_assigned_identities[IDENTITY]
        assert assigned.client_id and assigned.principal_id
    answers = json.dumps([r.response for r in emulator.requests()] + emulator.groups())
    assert "s3cr3t" not in answers
    # What the client sent is logged as sent.
    assert "s3cr3t-env" in json.dumps(emulator.requests("containerGroups.createOrUpdate")[0].body)


def test_if_none_match_refuses_an_existing_group(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    create(client, "once", headers={"If-None-Match": "*"})

    with pytest.raises(HttpResponseError) as raised:
        create(client, "once", a_group(cpu=2), headers={"If-None-Match": "*"})
    assert raised.value.status_code == 412
    assert raised.value.error.code == "PreconditionFailed"
    assert type(raised.value) is HttpResponseError  # 412 is in no error map of the SDK
    with pytest.raises(ResourceExistsError):
        create(
            client,
            "once",
            headers={"If-None-Match": "*"},
            error_map={412: ResourceExistsError},
        )
    # Without the header the PUT answers 200 and changes nothing.
    again = create(client, "once", a_group(cpu=2))
    assert again.containers[0].resources.requests.cpu == 1.0
    statuses = [r.status for r in emulator.requests("containerGroups.createOrUpdate")]
    assert statuses == [201, 412, 412, 200]
    assert len(emulator.groups()) == 1


def test_stop_stops_a_running_group(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.hold_group("held")
    create(client, "held")

    client.container_groups.stop(RG, "held")

    stopped = client.container_groups.get(RG, "held")
    assert stopped.provisioning_state == "Succeeded"
    assert stopped.instance_view.state == "Stopped"
    state = stopped.containers[0].instance_view.current_state
    assert (state.state, state.exit_code, state.detail_status) == ("Terminated", 143, "Stopped")
    assert [name for name, _ in events(stopped)][-1] == "Killing"
    assert [r.status for r in emulator.requests("containerGroups.stop")] == [204]
    client.container_groups.stop(RG, "held")  # stopping a stopped group is fine


def test_stop_while_provisioning_conflicts(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.plan_group("slow", provision_seconds=30)
    client.container_groups.begin_create_or_update(RG, "slow", a_group(), polling=False)

    with pytest.raises(ResourceExistsError) as raised:
        client.container_groups.stop(RG, "slow")

    assert raised.value.status_code == 409
    assert raised.value.error.code == "ContainerGroupTransitioning"


def test_finish_group_ends_a_held_group(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.hold_group("manual")
    create(client, "manual")
    wait_until(lambda: client.container_groups.get(RG, "manual").instance_view.state == "Running")

    emulator.finish_group("manual", exit_code=2)

    group = client.container_groups.get(RG, "manual")
    assert group.instance_view.state == "Failed"
    assert group.containers[0].instance_view.current_state.exit_code == 2
    with pytest.raises(ValueError, match="already finished"):
        emulator.finish_group("manual")


def test_delete_then_get_is_not_found(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    create(client, "doomed")

    deleted = client.container_groups.begin_delete(RG, "doomed").result(timeout=5)

    assert deleted.name == "doomed"
    with pytest.raises(ResourceNotFoundError) as raised:
        client.container_groups.get(RG, "doomed")
    assert raised.value.error.code == "ResourceNotFound"
    assert raised.value.error.message.startswith(
        "The Resource 'Microsoft.ContainerInstance/containerGroups/doomed' under resource group "
        f"'{RG}' was not found."
    )
    assert client.container_groups.begin_delete(RG, "doomed").result(timeout=5) is None
    assert [r.status for r in emulator.requests("containerGroups.delete")] == [200, 204]
    with pytest.raises(ResourceNotFoundError):
        client.container_groups.stop(RG, "doomed")


def test_delete_before_provisioning_cancels_the_create(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.plan_group("early", provision_seconds=30)
    poller = client.container_groups.begin_create_or_update(RG, "early", a_group())

    client.container_groups.begin_delete(RG, "early").result(timeout=5)

    with pytest.raises(HttpResponseError):
        poller.result(timeout=5)
    assert emulator.requests("operations.get")[-1].response["status"] == "Canceled"


def test_list_by_resource_group_follows_next_links() -> None:
    with AciEmulator(provision_seconds=0, list_page_size=2) as emulator:
        client = client_for(emulator)
        for index in range(5):
            put_json(client, f"group-{index}", group_body())
        other = client.container_groups.begin_create_or_update(
            "other-rg", "elsewhere", a_group(), polling=False
        )
        other.result()

        listed = list(client.container_groups.list_by_resource_group(RG))

        assert [g.name for g in listed] == [f"group-{index}" for index in range(5)]
        assert all(g.instance_view is None for g in listed)  # lists leave the states out
        assert all(g.containers[0].instance_view is None for g in listed)
        assert listed[0].provisioning_state == "Succeeded"
        pages = emulator.requests("containerGroups.listByResourceGroup")
        assert [r.query.get("$skiptoken") for r in pages] == [None, "2", "4"]
        assert [len(r.response["value"]) for r in pages] == [2, 2, 1]
        assert len(list(client.container_groups.list())) == 6


def test_logs_with_tail_and_timestamps(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    create(client, "chatty")
    for index in range(4):
        emulator.write_log("chatty", f"line {index}")

    assert client.containers.list_logs(RG, "chatty", "main").content == (
        "line 0\nline 1\nline 2\nline 3\n"
    )
    assert client.containers.list_logs(RG, "chatty", "main", tail=2).content == "line 2\nline 3\n"
    stamped = client.containers.list_logs(RG, "chatty", "main", tail=1, timestamps=True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line 3\n", stamped.content)
    assert emulator.requests("containers.listLogs")[-1].query == {
        **API,
        "tail": "1",
        "timestamps": "true",
    }
    with pytest.raises(ResourceNotFoundError) as raised:
        client.containers.list_logs(RG, "chatty", "sidecar")
    assert raised.value.error.code == "ContainerNotFound"
    with pytest.raises(ResourceNotFoundError) as missing:
        client.containers.list_logs(RG, "absent", "main")
    assert missing.value.error.code == "ResourceNotFound"


def test_unknown_resource_groups_are_not_found() -> None:
    with AciEmulator(resource_groups=[RG.upper()], provision_seconds=0) as emulator:
        client = client_for(emulator)
        put_json(client, "fine", group_body())  # resource group names ignore case
        assert client.container_groups.get(RG.upper(), "fine").name == "fine"

        with pytest.raises(ResourceNotFoundError) as raised:
            client.container_groups.get("missing-rg", "fine")

        assert raised.value.error.code == "ResourceGroupNotFound"
        assert raised.value.error.message == "Resource group 'missing-rg' could not be found."


# -- validation ------------------------------------------------------------------------------


def _without_image(body: dict[str, Any]) -> None:
    del body["properties"]["containers"][0]["properties"]["image"]


def _zero_cpu(body: dict[str, Any]) -> None:
    body["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"] = 0


def _no_memory(body: dict[str, Any]) -> None:
    del body["properties"]["containers"][0]["properties"]["resources"]["requests"]["memoryInGB"]


def _both_values(body: dict[str, Any]) -> None:
    body["properties"]["containers"][0]["properties"]["environmentVariables"] = [
        {"name": "X", "value": "1", "secureValue": "2"}
    ]


def _bad_gpu(body: dict[str, Any]) -> None:
    requests = body["properties"]["containers"][0]["properties"]["resources"]["requests"]
    requests["gpu"] = {"count": 1, "sku": "A100"}


def _bad_registry(body: dict[str, Any]) -> None:
    body["properties"]["imageRegistryCredentials"] = [{"server": "x.azurecr.io", "username": "u"}]


def _unknown_identity(body: dict[str, Any]) -> None:
    body["properties"]["imageRegistryCredentials"] = [
        {"server": "x.azurecr.io", "identity": IDENTITY}
    ]


def _bad_subnet(body: dict[str, Any]) -> None:
    body["properties"]["subnetIds"] = [{"id": "subnet-1"}]


def _no_name_servers(body: dict[str, Any]) -> None:
    body["properties"]["dnsConfig"] = {"searchDomains": "example.com"}


@pytest.mark.parametrize(
    ("name", "change", "code", "named"),
    [
        ("Upper-Case", None, "InvalidContainerGroupName", "'Upper-Case'"),
        ("double--hyphen", None, "InvalidContainerGroupName", "'double--hyphen'"),
        ("-leading", None, "InvalidContainerGroupName", "'-leading'"),
        ("x" * 64, None, "InvalidContainerGroupName", "x" * 64),
        ("ok", lambda b: b.pop("location"), "LocationRequired", "location"),
        (
            "ok",
            lambda b: b["properties"].pop("containers"),
            "InvalidRequestContent",
            "'containers'",
        ),
        ("ok", _without_image, "InvalidRequestContent", "'image'"),
        ("ok", _no_memory, "ResourceRequestsNotSpecified", "container 'main'"),
        ("ok", _zero_cpu, "InvalidResourceRequests", "'cpu'"),
        ("ok", lambda b: b["properties"].update(osType="Solaris"), "InvalidOsType", "'osType'"),
        (
            "ok",
            lambda b: b["properties"].update(restartPolicy="Sometimes"),
            "InvalidRestartPolicy",
            "'Sometimes'",
        ),
        ("ok", _both_values, "InvalidEnvironmentVariable", "'secureValue'"),
        ("ok", _bad_gpu, "InvalidResourceRequests", "'A100'"),
        ("ok", _bad_registry, "InvalidImageRegistryCredential", "'password'"),
        ("ok", _unknown_identity, "InvalidImageRegistryCredential", "[0].identity'"),
        (
            "ok",
            lambda b: b.update(identity={"type": "UserAssigned"}),
            "InvalidIdentity",
            "userAssignedIdentities",
        ),
        ("ok", _bad_subnet, "InvalidSubnetId", "'subnet-1'"),
        ("ok", _no_name_servers, "InvalidRequestContent", "'nameServers'"),
    ],
)
def test_validation_errors_name_the_property(
    emulator: AciEmulator,
    client: ContainerInstanceManagementClient,
    name: str,
    change: Callable[[dict[str, Any]], Any] | None,
    code: str,
    named: str,
) -> None:
    body = group_body()
    if change is not None:
        change(body)

    with pytest.raises(HttpResponseError) as raised:
        put_json(client, name, body)

    assert raised.value.status_code == 400
    assert raised.value.error.code == code
    assert named in raised.value.error.message
    assert emulator.groups() == []


def test_a_valid_body_with_every_option_is_accepted(
    client: ContainerInstanceManagementClient,
) -> None:
    body = group_body(
        imageRegistryCredentials=[{"server": "x.azurecr.io", "identity": IDENTITY}],
        subnetIds=[
            {
                "id": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/"
                "virtualNetworks/vnet/subnets/aci"
            }
        ],
        dnsConfig={"nameServers": ["10.0.0.4"]},
        restartPolicy="never",  # enumerations ignore case
    )
    body["identity"] = {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}}
    requests = body["properties"]["containers"][0]["properties"]["resources"]["requests"]
    requests["gpu"] = {"count": 1, "sku": "V100"}

    created = put_json(client, "everything", body)

    assert created.restart_policy == "Never"
    assert created.containers[0].resources.requests.gpu.sku == "V100"
    assert created.dns_config.name_servers == ["10.0.0.4"]


# -- calls the SDK never makes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def plain() -> Iterator[AciEmulator]:
    with AciEmulator(tls=False, provision_seconds=0) as started:
        yield started


def test_plain_http_requires_api_version_and_a_bearer_token(plain: AciEmulator) -> None:
    assert plain.url.startswith("http://") and plain.ca_bundle is None
    url = f"{plain.url}{GROUPS}/containerGroups/x"
    bearer = {"Authorization": "Bearer anything"}

    missing_version = httpx.get(url, headers=bearer)
    assert missing_version.status_code == 400
    assert missing_version.json()["error"]["code"] == "MissingApiVersionParameter"

    anonymous = httpx.get(url, params=API)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == {
        "code": "AuthenticationFailed",
        "message": "Authentication failed. The 'Authorization' header is missing.",
    }
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    assert httpx.get(url, params=API, headers={"Authorization": "Basic x"}).status_code == 401

    lower = url.replace("resourceGroups", "resourcegroups").replace(
        "Microsoft.ContainerInstance", "microsoft.containerinstance"
    )
    not_found = httpx.get(lower, params=API, headers=bearer)
    assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "ResourceNotFound"


def test_the_sdk_gets_401_without_a_token_it_can_send(plain: AciEmulator) -> None:
    # azure-core sends no bearer token over plain http: the reason the emulator serves HTTPS.
    client = ContainerInstanceManagementClient(FixedToken(), SUB, base_url=plain.url, retry_total=0)
    with pytest.raises(ServiceRequestError, match="non-TLS"):
        client.container_groups.get(RG, "x")
    unauthenticated = ContainerInstanceManagementClient(
        FixedToken(),
        SUB,
        base_url=plain.url,
        retry_total=0,
        authentication_policy=SansIOHTTPPolicy(),  # sends no token at all
    )
    with pytest.raises(ClientAuthenticationError) as raised:
        unauthenticated.container_groups.get(RG, "x")
    assert raised.value.error.code == "AuthenticationFailed"


def test_a_plain_https_client_trusts_the_ca_bundle(emulator: AciEmulator) -> None:
    answer = httpx.get(
        f"{emulator.url}{GROUPS}/containerGroups",
        params=API,
        headers={"Authorization": "Bearer x"},
        verify=trusting(emulator),
    )
    assert answer.status_code == 200 and answer.json() == {"value": []}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{emulator.url}/emulator/")  # not trusted by default


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inject", "error_class", "status", "code", "said"),
    [
        (
            lambda e: e.throttle("containerGroups.createOrUpdate", retry_after=2),
            HttpResponseError,
            429,
            "TooManyRequests",
            "Write_ObservationWindow",
        ),
        (
            lambda e: e.quota_reached(),
            ResourceExistsError,
            409,
            "ContainerGroupQuotaReached",
            "Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota "
            "'StandardCores' exceeded in region 'westeurope'. Limit: '10', Usage: '10', "
            "Requested: '1'.",
        ),
        (
            lambda e: e.capacity_unavailable(),
            ResourceExistsError,
            409,
            "ServiceUnavailable",
            "The requested resource with '2' CPU and '3.5' GB memory is not available in the "
            "location 'westeurope' at this moment. Please retry with a different resource "
            "request or at another time.",
        ),
        (lambda e: e.internal_error(), HttpResponseError, 500, "InternalServerError", "tracking"),
        (lambda e: e.unavailable(), HttpResponseError, 503, "ServiceUnavailable", "unavailable"),
        (
            lambda e: e.forbid("containerGroups.createOrUpdate", count=1),
            HttpResponseError,
            403,
            "AuthorizationFailed",
            "does not have authorization to perform action "
            "'Microsoft.ContainerInstance/containerGroups/write' over scope "
            f"'{GROUPS}/containerGroups/faulted'",
        ),
    ],
)
def test_faults_raise_the_sdk_errors(
    emulator: AciEmulator,
    client: ContainerInstanceManagementClient,
    inject: Callable[[AciEmulator], Fault],
    error_class: type[HttpResponseError],
    status: int,
    code: str,
    said: str,
) -> None:
    fault = inject(emulator)

    with pytest.raises(error_class) as raised:
        create(client, "faulted", a_group(cpu=2, memory=3.5))

    error = raised.value
    assert (error.status_code, error.error.code) == (status, code)
    assert said in error.error.message
    assert ("Retry-After" in error.response.headers) == (status == 429)
    if status == 429:
        assert error.response.headers["Retry-After"] == "2"
    assert emulator.groups() == []  # an error fault does not do the call
    [request] = emulator.requests()
    assert (request.status, request.fault) == (status, fault.id)
    assert emulator.faults()[0].fired == 1
    assert create(client, "faulted").provisioning_state == "Succeeded"  # one fire only


def test_throttled_reads_say_so_and_faults_match_their_operation(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    create(client, "read")
    emulator.throttle("containerGroups.get", count=2, retry_after=0.5)

    for _ in range(2):
        with pytest.raises(HttpResponseError) as raised:
            client.container_groups.get(RG, "read")
        assert raised.value.response.headers["Retry-After"] == "0.5"
        assert "Read_ObservationWindow" in raised.value.error.message
    assert list(client.container_groups.list_by_resource_group(RG))  # not a get
    assert client.container_groups.get(RG, "read").name == "read"


def test_forbidden_resource_group(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.forbid(resource_group="locked")

    with pytest.raises(HttpResponseError) as raised:
        client.container_groups.stop("locked", "g")

    assert raised.value.status_code == 403
    assert "'Microsoft.ContainerInstance/containerGroups/stop/action'" in raised.value.message
    assert create(client, "free").name == "free"


def test_timeout_after_applies_the_call_but_never_answers(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    emulator.timeout_after("containerGroups.createOrUpdate", seconds=2)
    started = time.monotonic()

    with pytest.raises(ServiceResponseTimeoutError):
        client.container_groups.begin_create_or_update(
            RG, "lost", a_group(), read_timeout=0.3
        ).result()

    assert time.monotonic() - started < 1.5
    assert emulator.group("lost")["name"] == "lost"  # it went through
    [request] = emulator.requests("containerGroups.createOrUpdate")
    assert request.dropped and request.status == 201
    # The caller looks, and finds it.
    assert client.container_groups.get(RG, "lost").name == "lost"
    # Without a client timeout, the dropped connection is the error.
    emulator.timeout_after("containerGroups.get", seconds=0.05)
    with pytest.raises(ServiceResponseError, match="closed connection"):
        client.container_groups.get(RG, "lost")


def test_delay_answers_late(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    create(client, "slowpoke")
    emulator.delay("containerGroups.get", seconds=0.2)
    started = time.monotonic()

    assert client.container_groups.get(RG, "slowpoke").name == "slowpoke"

    assert time.monotonic() - started >= 0.2


def test_fault_rules_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        Fault(operation="containerGroups.create")
    with pytest.raises(ValueError, match="unknown fault fields"):
        Fault.from_json({"stauts": 429})
    fault = Fault.from_json({"status": 429, "operation": "containerGroups.get"})
    assert (fault.code, fault.method, fault.count) == ("TooManyRequests", "*", 1)
    assert fault.matches("containerGroups.get", "GET", "/x")
    assert not fault.matches("containerGroups.delete", "DELETE", "/x")


# -- the control API ------------------------------------------------------------------------------


def test_control_api_over_http(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    control = httpx.Client(base_url=f"{emulator.url}/emulator", verify=trusting(emulator))
    assert control.post("/configure", json={"group": "ctl", "hold": True}).status_code == 200
    create(client, "ctl")
    added = control.post(
        "/faults",
        json={"status": 503, "operation": "containerGroups.get", "retry_after": 3},
    ).json()["faults"][0]
    assert control.get("/faults").json()["faults"][0]["id"] == added["id"]

    with pytest.raises(HttpResponseError) as raised:
        client.container_groups.get(RG, "ctl")
    assert raised.value.response.headers["Retry-After"] == "3"

    finished = control.post("/finish", json={"group": f"{RG}/ctl", "exit_code": 4}).json()
    state = finished["properties"]["containers"][0]["properties"]["instanceView"]["currentState"]
    assert state["exitCode"] == 4
    assert control.post("/logs", json={"group": "ctl", "text": "from outside"}).status_code == 200
    assert client.containers.list_logs(RG, "ctl", "main").content == "from outside\n"
    counts = control.get("/").json()
    assert counts["groups"] == 1 and counts["processes"] == 0 and counts["faults"] == 1
    logged = control.get("/requests", params={"operation": "containerGroups.get"}).json()
    assert [(r["status"], r["fault"]) for r in logged][-1] == (503, added["id"])
    assert "Authorization" not in logged[0]["headers"]
    assert [g["name"] for g in control.get("/groups").json()] == ["ctl"]
    assert control.get("/groups/missing").status_code == 404
    assert control.delete(f"/faults/{added['id']}").json() == {"removed": added["id"]}
    assert control.post("/configure", json={"hold": "yes"}).status_code == 400
    assert control.post("/reset").json() == {"reset": True}
    assert emulator.groups() == [] and emulator.requests() == []


def test_wait_for_requests(
    emulator: AciEmulator, client: ContainerInstanceManagementClient
) -> None:
    create(client, "waited")
    assert len(emulator.wait_for_requests(1, "containerGroups.createOrUpdate", timeout=1)) == 1
    with pytest.raises(TimeoutError):
        emulator.wait_for_requests(1, "containerGroups.stop", timeout=0.05)


# -- containers as processes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runner_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AciEmulator]:
    workdir = tmp_path_factory.mktemp("workdir")
    with AciEmulator(provision_seconds=0.01, run_containers=True, workdir=workdir) as started:
        yield started


@pytest.fixture
def runner(runner_server: AciEmulator) -> AciEmulator:
    runner_server.reset()  # also stops what the previous test left running
    return runner_server


def run_python(client: ContainerInstanceManagementClient, name: str, code: str, **kw: Any) -> None:
    create(client, name, a_group(command=["python", "-c", code], **kw))


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] == "Z"
    return False


def test_container_runs_as_a_process_and_its_output_is_its_logs(
    runner: AciEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYLANE_HOST_ONLY", "leaked")
    client = client_for(runner)
    # The pauses order the lines: stdout and stderr are read apart, as ACI reads them.
    code = (
        "import json, os, sys, time; env = dict(os.environ); "
        "print(json.dumps({k: env.get(k) for k in ('PLAIN', 'TOKEN', 'SKYLANE_HOST_ONLY')}), "
        "flush=True); time.sleep(0.05); print('oops', file=sys.stderr); time.sleep(0.05); "
        "print(os.getcwd())"
    )
    env = [
        models.EnvironmentVariable(name="PLAIN", value="visible"),
        models.EnvironmentVariable(name="TOKEN", secure_value="s3cr3t"),
    ]

    run_python(client, "hello", code, env=env)

    done = terminated(client, "hello")
    assert done.instance_view.state == "Succeeded"
    assert done.containers[0].instance_view.current_state.exit_code == 0
    lines = client.containers.list_logs(RG, "hello", "main").content.splitlines()
    assert json.loads(lines[0]) == {
        "PLAIN": "visible",
        "TOKEN": "s3cr3t",
        "SKYLANE_HOST_ONLY": None,
    }
    assert lines[1] == "oops"
    assert os.path.realpath(lines[2]) == os.path.realpath(runner.workdir or "")


def test_process_exit_code_fails_the_group(runner: AciEmulator) -> None:
    client = client_for(runner)

    run_python(client, "three", "import sys; print('bye'); sys.exit(3)")

    failed = terminated(client, "three")
    assert failed.instance_view.state == "Failed"
    state = failed.containers[0].instance_view.current_state
    assert (state.exit_code, state.detail_status) == (3, "Error")
    assert client.containers.list_logs(RG, "three", "main").content == "bye\n"


def test_stop_and_delete_stop_the_process(runner: AciEmulator) -> None:
    client = client_for(runner)
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(30)"
    for name in ("stopped", "deleted"):
        run_python(client, name, code)
    pids = {
        name: int(wait_until(lambda n=name: client.containers.list_logs(RG, n, "main").content))
        for name in ("stopped", "deleted")
    }

    client.container_groups.stop(RG, "stopped")
    client.container_groups.begin_delete(RG, "deleted").result(timeout=5)

    wait_until(lambda: all(gone(pid) for pid in pids.values()))
    wait_until(
        lambda: (
            httpx.get(f"{runner.url}/emulator/", verify=trusting(runner)).json()["processes"] == 0
        )
    )
    stopped = client.container_groups.get(RG, "stopped")
    assert stopped.instance_view.state == "Stopped"
    state = stopped.containers[0].instance_view.current_state
    # Its process died of the SIGTERM: 128 + 15, as a container's.
    assert (state.state, state.exit_code, state.detail_status) == ("Terminated", 143, "Stopped")


def test_a_container_without_a_command_cannot_start(runner: AciEmulator) -> None:
    client = client_for(runner)

    create(client, "entrypoint")

    failed = terminated(client, "entrypoint")
    state = failed.containers[0].instance_view.current_state
    assert (failed.instance_view.state, state.exit_code) == ("Failed", 127)
    assert events(failed)[-1] == ("Failed", "Warning")
    assert "has none" in client.containers.list_logs(RG, "entrypoint", "main").content


# -- standalone -----------------------------------------------------------------------------------


def test_standalone_module_serves_until_terminated(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skylane.testing.azure",
            "--port",
            "0",
            "--cert-dir",
            str(tmp_path),
            "--provision-seconds",
            "0",
            "--run-seconds",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        ca_bundle = process.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        assert ca_bundle == str(tmp_path / "ca.pem")
        client = ContainerInstanceManagementClient(
            FixedToken(),
            SUB,
            base_url=url,
            connection_verify=ca_bundle,
            retry_total=0,
            polling_interval=0.01,
        )
        assert create(client, "remote").provisioning_state == "Succeeded"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    finally:
        stop_process(process, grace=10)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
