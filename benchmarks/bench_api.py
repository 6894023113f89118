"""`api_throughput`: the HTTP API of a real `skylane server start --services api` (no
dispatcher, so created runs stay SCHEDULED and nothing else uses the CPU).

One httpx client with keep-alive, sequential requests (one in flight at a time): the figures are
the latency of one request and its inverse, not the server's capacity under concurrent load.
Every request is timed with time.perf_counter around the call; requests/second is the count
divided by the wall time of the whole sequence. Each kind gets a few unmeasured warm-up calls.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from _common import memory_mib, summarize
from _server import Server

WARMUP = 5
LOG_BATCH_LINES = 100


def _timed(n: int, call: Callable[[int], httpx.Response]) -> dict[str, Any]:
    for i in range(WARMUP):
        call(-1 - i).raise_for_status()
    latencies = []
    size = 0
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        response = call(i)
        latencies.append((time.perf_counter() - t) * 1000)
        response.raise_for_status()
        size = len(response.content)
    elapsed = time.perf_counter() - start
    return {
        "requests": n,
        "requests_per_s": round(n / elapsed, 1),
        **summarize(latencies, "ms", 2),
        "response_bytes": size,
    }


def _log_batch(i: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "logs": [
            {
                "timestamp": now,
                "level": "INFO",
                "stream": "logging",
                "message": f"2025-01-31 12:00:00 INFO flows.etl - batch {i} line {j}: "
                "loaded 1024 rows from s3://bucket/key into the warehouse",
            }
            for j in range(LOG_BATCH_LINES)
        ]
    }


def api_throughput(
    server: Server, *, runs: int, lists: int, gets: int, log_batches: int
) -> dict[str, Any]:
    with server.http() as http:
        http.post("/api/pools", json={"name": "bench", "type": "process:push"}).raise_for_status()
        deployment = http.post(
            "/api/deployments",
            json={
                "flow_name": "noop",
                "name": "bench",
                "pool": "bench",
                "entrypoint": f"{server.workdir / 'flows' / 'noop.py'}:noop",
            },
        )
        deployment.raise_for_status()
        runs_path = f"/api/deployments/{deployment.json()['id']}/runs"
        created: list[str] = []

        def create(_: int) -> httpx.Response:
            response = http.post(runs_path, json={"parameters": {}, "job_variables": {}})
            if response.is_success:
                created.append(response.json()["id"])
            return response

        result: dict[str, Any] = {
            "method": (
                "one httpx.Client with keep-alive, sequential requests (one in flight), "
                f"{WARMUP} unmeasured warm-up requests per kind, admin API key"
            ),
            "health": _timed(gets, lambda _: http.get("/health")),
            "create_run": _timed(runs, create),
        }
        result["list_runs_limit_100"] = _timed(
            lists, lambda _: http.get("/api/runs", params={"limit": 100})
        )
        result["list_runs_limit_100"]["runs_in_database"] = len(created)
        result["get_run"] = _timed(gets, lambda i: http.get(f"/api/runs/{created[i % 50]}"))
        log_run = created[0] if created else str(uuid.uuid4())
        logs = _timed(
            log_batches, lambda i: http.post(f"/api/runs/{log_run}/logs", json=_log_batch(i))
        )
        logs["lines_per_batch"] = LOG_BATCH_LINES
        logs["lines_per_s"] = round(logs["requests_per_s"] * LOG_BATCH_LINES, 0)
        result["post_logs_batch_100"] = logs
        result["server_after"] = memory_mib(server.pid)
    return result
