#!/usr/bin/env bash
# `make demo`: a server on a temporary SQLite database, a process:push pool, the example flow
# deployed and run to COMPLETED with its own log lines, on a schedule too; then an ECS (moto),
# a Cloud Run and an ACI pool (skylane's local emulators) provisioned with `pool provision`, a
# run pushed to each, and each deprovisioned; then everything is stopped and removed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
WORK="$(mktemp -d -t skylane-demo.XXXXXX)"
export SKYLANE_HOME="$WORK/home"
export SKYLANE_DATABASE_URL="sqlite:///$WORK/skylane.db"
PORT="$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export SKYLANE_API_URL="http://127.0.0.1:$PORT"
MOTO_PORT="$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
MOTO_URL="http://127.0.0.1:$MOTO_PORT"
# moto accepts any credentials; these keep boto3 from looking for real ones.
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_DEFAULT_REGION=us-east-1
SERVER_PID=""
MOTO_PID=""
GCP_PID=""
AZURE_PID=""
# A secret only the control plane holds: the ACI step sends it to the container as a secure value.
export DEMO_GREETING_SECRET="demo-secret-$RANDOM$RANDOM"

cleanup() {
    for pid in "$SERVER_PID" "$MOTO_PID" "$GCP_PID" "$AZURE_PID"; do
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "skylane server init   (database: $SKYLANE_DATABASE_URL)"
SKYLANE_API_KEY="$("$BIN/skylane" server init --output json | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')"
export SKYLANE_API_KEY
echo "admin key created (kept in SKYLANE_API_KEY for this demo)"

step "skylane server start --port $PORT"
"$BIN/skylane" server start --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    "$BIN/python" -c "import httpx, sys; httpx.get('$SKYLANE_API_URL/health').raise_for_status()" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
    sleep 0.2
done
echo "server is up at $SKYLANE_API_URL"

step "skylane pool create local --type process:push"
"$BIN/skylane" pool create local --type process:push

step "skylane deployment create demo --entrypoint examples/flows/hello.py:hello --pool local"
"$BIN/skylane" deployment create demo --entrypoint examples/flows/hello.py:hello --pool local \
    --param name=skylane

step "skylane deployment run hello/demo --param count=3 --watch"
"$BIN/skylane" deployment run hello/demo --param count=3 --watch

step "skylane run ls"
"$BIN/skylane" run ls

step "skylane deployment schedule add hello/demo --interval 5 --param name=scheduled   (a run every 5 s)"
"$BIN/skylane" deployment schedule add hello/demo --interval 5 --param name=scheduled
SCHEDULED_DONE=""
for _ in $(seq 1 150); do
    SCHEDULED_DONE="$("$BIN/skylane" run ls --deployment hello/demo --state COMPLETED --output json | "$BIN/python" -c 'import json, sys; print(next((r["id"] for r in json.load(sys.stdin) if r["schedule_id"]), ""))')"
    [ -n "$SCHEDULED_DONE" ] && break
    sleep 0.2
done
[ -n "$SCHEDULED_DONE" ] || { echo "no scheduled run completed"; "$BIN/skylane" run ls; exit 1; }
echo "scheduled run $SCHEDULED_DONE COMPLETED"
"$BIN/skylane" run logs "$SCHEDULED_DONE" | tail -n 2

step "skylane deployment inspect hello/demo   (its schedule and next run times)"
"$BIN/skylane" deployment inspect hello/demo

step "skylane deployment schedule pause hello/demo   (its runs still to come are removed)"
"$BIN/skylane" deployment schedule pause hello/demo
"$BIN/skylane" run ls --deployment hello/demo --upcoming

step "skylane init --pool local   (in a folder holding flows/etl.py: a commented skylane.yaml)"
mkdir -p "$WORK/etl/flows"
cat >"$WORK/etl/flows/etl.py" <<'FLOW'
from skylane import flow


@flow
def etl(day: str = "today") -> None:
    print(f"etl for {day}")
FLOW
(cd "$WORK/etl" && "$BIN/skylane" init --pool local)
sed -i 's/^    schedules: \[\]$/    schedules: [{cron: "0 2 * * *", timezone: Europe\/Berlin}]/' "$WORK/etl/skylane.yaml"
grep -n "schedules:" "$WORK/etl/skylane.yaml" | head -n 1

step "skylane deploy   (checks, then registers etl/etl with its schedule; a process pool needs no image)"
(cd "$WORK/etl" && "$BIN/skylane" deploy)

step "skylane deploy   (again: nothing changed, nothing touched)"
(cd "$WORK/etl" && "$BIN/skylane" deploy)
"$BIN/skylane" deployment run etl/etl --param day=monday --watch | tail -n 3

step "moto_server on $MOTO_URL: a local AWS (with the AWS-managed IAM policies a real account has)"
MOTO_IAM_LOAD_MANAGED_POLICIES=true "$BIN/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
"$BIN/python" - "$MOTO_URL" <<'PY'
import sys, time, boto3, httpx
url = sys.argv[1]
for _ in range(100):
    try:
        httpx.get(url + "/moto-api/", timeout=1); break
    except httpx.HTTPError:
        time.sleep(0.1)
# Keep tasks where they are: moto would otherwise advance them one state per DescribeTasks.
httpx.post(url + "/moto-api/state-manager/set-transition", json={
    "model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}})
print("moto_server is up")
PY

step "skylane pool provision aws --type ecs:push --region us-east-1 --setting endpoint_url=$MOTO_URL --dry-run   (the plan; nothing changes)"
"$BIN/skylane" pool provision aws --type ecs:push --region us-east-1 \
    --setting "endpoint_url=$MOTO_URL" --dry-run

step "skylane pool provision aws --type ecs:push --region us-east-1 --setting endpoint_url=$MOTO_URL --yes   (registry, roles, cluster, logs, network; the pool points at them)"
"$BIN/skylane" pool provision aws --type ecs:push --region us-east-1 \
    --setting "endpoint_url=$MOTO_URL" --yes

step "skylane deployment create nightly --entrypoint examples/flows/hello.py:hello --pool aws --image ...   (no other job variable needed)"
"$BIN/skylane" deployment create nightly --entrypoint examples/flows/hello.py:hello --pool aws \
    --image 123456789012.dkr.ecr.us-east-1.amazonaws.com/skylane-aws:demo

step "skylane deployment render hello/nightly   (the exact ECS requests a run sends)"
"$BIN/skylane" deployment render hello/nightly --param name=ecs

step "skylane deployment run hello/nightly --param name=ecs"
RUN_ID="$("$BIN/skylane" deployment run hello/nightly --param name=ecs --output json | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
TASK_ARN=""
for _ in $(seq 1 100); do
    TASK_ARN="$("$BIN/skylane" run inspect "$RUN_ID" --output json | "$BIN/python" -c 'import json, sys; print(next((a["provider_ref"] for a in json.load(sys.stdin)["attempts"] if a["provider_ref"]), ""))')"
    [ -n "$TASK_ARN" ] && break
    sleep 0.2
done
[ -n "$TASK_ARN" ] || { echo "the run was not pushed to ECS"; "$BIN/skylane" run inspect "$RUN_ID"; exit 1; }
echo "run $RUN_ID is ECS task $TASK_ARN"
"$BIN/python" - "$MOTO_URL" "$TASK_ARN" <<'PY'
import json, sys, boto3
ecs = boto3.client("ecs", endpoint_url=sys.argv[1])
task = ecs.describe_tasks(cluster="skylane-aws", tasks=[sys.argv[2]], include=["TAGS"])["tasks"][0]
definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])
print("task status:", task["lastStatus"], "| tags:", {t["key"]: t["value"] for t in task["tags"]})
print("its task definition, as registered in ECS:")
print(json.dumps(definition["taskDefinition"]["containerDefinitions"], indent=2, default=str))
PY
echo "(moto runs no containers, so the flow itself cannot start there)"

step "skylane run cancel $RUN_ID   (StopTask, then CANCELLED)"
"$BIN/skylane" run cancel "$RUN_ID"
for _ in $(seq 1 100); do
    STATE="$("$BIN/skylane" run inspect "$RUN_ID" --output json | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["state"])')"
    [ "$STATE" = "CANCELLED" ] && break
    sleep 0.2
done
echo "run $RUN_ID $STATE"
[ "$STATE" = "CANCELLED" ]

step "skylane pool deprovision aws --yes   (removes what provisioning created; the default VPC it adopted stays)"
"$BIN/skylane" pool deprovision aws --yes

step "the Cloud Run emulator (python -m skylane.testing.gcp --run-containers --platform-apis-disabled): a local Google Cloud project"
# It runs each job's command as a local process in this directory, in place of the image; the
# project's APIs start disabled, as in a new project, so provisioning has to enable them.
"$BIN/python" -m skylane.testing.gcp --port 0 --start-seconds 0.5 --run-containers \
    --platform-apis-disabled --workdir "$PWD" >"$WORK/gcp.out" 2>"$WORK/gcp.log" &
GCP_PID=$!
GCP_IAM=""
for _ in $(seq 1 100); do
    GCP_IAM="$(sed -n 's/^iam_endpoint=//p' "$WORK/gcp.out" 2>/dev/null || true)"
    [ -n "$GCP_IAM" ] && break
    kill -0 "$GCP_PID" 2>/dev/null || { cat "$WORK/gcp.log"; exit 1; }
    sleep 0.1
done
GCP_URL="$(head -n 1 "$WORK/gcp.out")"
echo "Cloud Run, Cloud Logging, Service Usage, Artifact Registry, Resource Manager at $GCP_URL; IAM (gRPC) at $GCP_IAM"

step "skylane pool provision gcp --type cloud-run:push --project demo-project --region europe-west1 --setting endpoint_url=... --setting iam_endpoint=... --yes   (APIs, registry, service accounts, IAM bindings)"
"$BIN/skylane" pool provision gcp --type cloud-run:push --project demo-project \
    --region europe-west1 --setting "endpoint_url=$GCP_URL" --setting "iam_endpoint=$GCP_IAM" --yes

step "skylane deployment create cloudrun --entrypoint examples/flows/hello.py:hello --pool gcp --image ...   (no other job variable needed)"
"$BIN/skylane" deployment create cloudrun --entrypoint examples/flows/hello.py:hello --pool gcp \
    --image europe-west1-docker.pkg.dev/demo-project/skylane-gcp/hello:demo

step "skylane deployment render hello/cloudrun   (the exact CreateJob request a run sends)"
"$BIN/skylane" deployment render hello/cloudrun --param name=cloud-run

step "skylane deployment run hello/cloudrun --param name=cloud-run --watch"
"$BIN/skylane" deployment run hello/cloudrun --param name=cloud-run --watch
"$BIN/python" - "$GCP_URL" <<'PY'
import sys, time, httpx
url = sys.argv[1]
# The reconciler deletes the job once the run is over.
for _ in range(100):
    if httpx.get(url + "/emulator/").json()["jobs"] == 0:
        break
    time.sleep(0.1)
calls = httpx.get(url + "/emulator/requests").json()
seen = {}
for call in calls:
    seen[call["rpc"]] = seen.get(call["rpc"], 0) + 1
print("calls the Google emulator received:", ", ".join(f"{rpc} x{n}" for rpc, n in seen.items()))
print("jobs left:", httpx.get(url + "/emulator/").json()["jobs"])
PY

step "skylane pool deprovision gcp --yes   (removes the registry, accounts and bindings; the APIs stay on)"
"$BIN/skylane" pool deprovision gcp --yes

step "the ARM emulator (python -m skylane.testing.azure --run-containers): a local Azure Resource Manager, over TLS"
"$BIN/python" -m skylane.testing.azure --port 0 --provision-seconds 0.5 --run-containers \
    --workdir "$PWD" >"$WORK/azure.out" 2>"$WORK/azure.log" &
AZURE_PID=$!
AZURE_CA=""
for _ in $(seq 1 100); do
    AZURE_CA="$(sed -n 2p "$WORK/azure.out" 2>/dev/null || true)"
    [ -n "$AZURE_CA" ] && break
    kill -0 "$AZURE_PID" 2>/dev/null || { cat "$WORK/azure.log"; exit 1; }
    sleep 0.1
done
AZURE_URL="$(head -n 1 "$WORK/azure.out")"
echo "Azure Resource Manager (resource groups, registries, identities, roles, container groups) at $AZURE_URL, its CA in $AZURE_CA"

step "skylane pool provision azure --type aci:push --subscription ... --region westeurope --setting endpoint_url=... --setting ca_bundle=... --yes   (resource group, registry, identities, roles)"
"$BIN/skylane" pool provision azure --type aci:push \
    --subscription 00000000-0000-4000-8000-00000000de70 --region westeurope \
    --setting "endpoint_url=$AZURE_URL" --setting "ca_bundle=$AZURE_CA" \
    --setting lro_poll_seconds=0.2 --yes
ACR="$("$BIN/skylane" pool inspect azure --output json | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["settings"]["image_repository"])')"

step "skylane deployment create aci --entrypoint examples/flows/hello.py:hello --pool azure --image $ACR/hello:demo --job-variable secure_env.GREETING_SECRET.env=DEMO_GREETING_SECRET"
"$BIN/skylane" deployment create aci --entrypoint examples/flows/hello.py:hello --pool azure \
    --image "$ACR/hello:demo" --job-variable memory=1 \
    --job-variable secure_env.GREETING_SECRET.env=DEMO_GREETING_SECRET

step "skylane deployment render hello/aci   (the exact container group PUT a run sends; secure values masked)"
"$BIN/skylane" deployment render hello/aci --param name=aci

step "skylane deployment run hello/aci --param name=aci --watch"
"$BIN/skylane" deployment run hello/aci --param name=aci --watch
"$BIN/python" - "$AZURE_URL" "$AZURE_CA" <<'PY'
import ssl, sys, time, httpx
url = sys.argv[1]
ca = ssl.create_default_context(cafile=sys.argv[2])  # the emulator's own CA
# The reconciler deletes the container group once the run is over.
for _ in range(100):
    if httpx.get(url + "/emulator/", verify=ca).json()["groups"] == 0:
        break
    time.sleep(0.1)
calls = httpx.get(url + "/emulator/requests", verify=ca).json()
seen = {}
for call in calls:
    seen[call["operation"]] = seen.get(call["operation"], 0) + 1
print("calls ARM received:", ", ".join(f"{op} x{n}" for op, n in seen.items()))
print("container groups left:", httpx.get(url + "/emulator/", verify=ca).json()["groups"])
PY

step "skylane pool deprovision azure --yes   (its resource group, and everything in it, goes)"
"$BIN/skylane" pool deprovision azure --yes

step "done: a local run and a scheduled run COMPLETED; an ECS, a Cloud Run and an ACI pool were provisioned, a run was pushed to ECS (moto), one ran on Cloud Run and one on ACI (emulators), and all three pools were deprovisioned; stopping"
