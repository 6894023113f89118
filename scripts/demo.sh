#!/usr/bin/env bash
# `make demo`: a server on a temporary SQLite database, a process:push pool, the example flow
# deployed and run to COMPLETED with its own log lines; then everything is stopped and removed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/.venv/bin"
WORK="$(mktemp -d -t skylane-demo.XXXXXX)"
export SKYLANE_HOME="$WORK/home"
export SKYLANE_DATABASE_URL="sqlite:///$WORK/skylane.db"
PORT="$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export SKYLANE_API_URL="http://127.0.0.1:$PORT"
SERVER_PID=""

cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    fi
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

step "done: the run COMPLETED; stopping the server"
