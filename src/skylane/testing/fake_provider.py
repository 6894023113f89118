"""A fake provider: measure and test the dispatcher without a cloud.

The dispatcher's cost is claiming, rendering, submitting and recording; a real cloud adds its
own latency, throttling and bills, and moto or the emulators add their own CPU on the same
machine. `FakeAdapter` implements the adapter contract (`skylane.adapters.base.Adapter`) with
nothing behind it but a shared SQLite file, its "cloud", so that

- a benchmark can model the provider's API latency (`latency_seconds`, slept inside `submit`)
  and nothing else, and read back exactly when each run reached the provider;
- several dispatcher processes (replicas) can submit to one cloud at once, and double
  submissions show up: every `submit` call is recorded in `calls`, every resource created in
  `resources`.

`install()` registers it under the provider name `"fake"`, so pool types `fake:push` (and
`fake`) become valid in this process. Each process that builds adapters must call it (the
registry is a plain dict).

The cloud is one SQLite file in WAL mode, separate from skylane's database. Its path is the
pool's `settings["fake_state_path"]`, else `$SKYLANE_FAKE_PROVIDER_STATE`, else
`fake-provider.sqlite` in skylane's data directory. Tables:

- `resources`: one row per created resource: key, ref, run_id, submitted_at (`time.time()`
  when it was recorded, after the latency), pid of the submitting process, status, and when it
  was cancelled / cleaned up.
- `calls`: one row per `submit` call: key, ref returned, called_at, pid, and whether it created
  a resource.

Behaviour, from the pool's settings (job variables of the same name override the first two per
deployment or run):

- `latency_seconds` (default 0): slept inside `submit` before anything is recorded. Keep it
  below `submit_deadline_seconds`: the fake does not cut a call short as real adapters do, so
  a latency longer than the claim lease lets the dispatcher recover (and resubmit) the claim.
- `status` (default `RUNNING`): what `statuses` reports for a live resource; `SUCCEEDED`,
  `FAILED`, `PENDING` and `STOPPED` exercise the dispatcher's watch path.
- `idempotent` (default true): a second `submit` with a key that has a resource returns that
  resource's ref, as a provider with idempotency keys does. With false, every `submit` creates
  a new resource, so a dispatcher bug that submits one key twice becomes two resources.

A `limiter` given to the constructor is ignored: the fake has no rate limits of its own.

`FakeCloud(path)` reads the records back: `resources()`, `calls()`, `duplicates()`, `reset()`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from skylane.adapters.base import (
    MemoryResourceCache,
    ProviderLogLine,
    ProviderState,
    ProviderStatus,
    ResourceCache,
    RunContext,
)
from skylane.errors import InvalidInput, ProviderNotFound
from skylane.models import Pool
from skylane.settings import Settings, data_dir

PROVIDER = "fake"
STATE_ENV = "SKYLANE_FAKE_PROVIDER_STATE"
# Statuses a resource may be configured to report (NOT_FOUND is for unknown refs only).
REPORTABLE = frozenset(s.value for s in ProviderStatus) - {ProviderStatus.NOT_FOUND.value}
# SQLite's default limit of host parameters per statement is 999 on old builds.
_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    ref TEXT NOT NULL UNIQUE,
    run_id TEXT,
    submitted_at REAL NOT NULL,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    cancelled_at REAL,
    cleaned_up_at REAL
);
CREATE INDEX IF NOT EXISTS ix_resources_key ON resources (key);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    ref TEXT NOT NULL,
    called_at REAL NOT NULL,
    pid INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_calls_key ON calls (key);
"""
_RESOURCE_COLUMNS = "key, ref, run_id, submitted_at, pid, status, cancelled_at, cleaned_up_at"


@dataclass(frozen=True)
class FakeRequest:
    """What `submit` receives: the run it is for and how the fake should behave."""

    run_id: str
    name: str
    latency_seconds: float
    status: str


@dataclass(frozen=True)
class FakeResource:
    key: str
    ref: str
    run_id: str | None
    submitted_at: float
    pid: int
    status: str
    cancelled_at: float | None
    cleaned_up_at: float | None


@dataclass(frozen=True)
class FakeCall:
    key: str
    ref: str
    called_at: float
    pid: int
    created: bool


def state_path(pool_settings: dict[str, Any] | None = None) -> Path:
    """Where the cloud of a pool with these settings lives (see the module docstring)."""
    value = (pool_settings or {}).get("fake_state_path") or os.environ.get(STATE_ENV)
    return Path(value).expanduser() if value else data_dir() / "fake-provider.sqlite"


class FakeCloud:
    """The shared state file: what the adapter writes and what benchmarks and tests read.

    Safe to use from several threads (one SQLite connection per thread) and from several
    processes (WAL, and every write in a `BEGIN IMMEDIATE` transaction)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._write() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.execute("PRAGMA busy_timeout=60000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the lock up front, so a
        read-check-write sequence is atomic across processes."""
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- what the adapter does ---------------------------------------------------------------

    def submit(self, key: str, *, run_id: str | None, status: str, idempotent: bool = True) -> str:
        """Record one submit call; create a resource unless `idempotent` and `key` has one."""
        now, pid = time.time(), os.getpid()
        with self._write() as db:
            existing = None
            if idempotent:
                existing = db.execute(
                    "SELECT ref FROM resources WHERE key = ? ORDER BY id LIMIT 1", (key,)
                ).fetchone()
            if existing is not None:
                ref = existing[0]
            else:
                ref = f"fake-{uuid.uuid4().hex}"
                db.execute(
                    "INSERT INTO resources (key, ref, run_id, submitted_at, pid, status)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (key, ref, run_id, now, pid, status),
                )
            db.execute(
                "INSERT INTO calls (key, ref, called_at, pid, created) VALUES (?, ?, ?, ?, ?)",
                (key, ref, now, pid, int(existing is None)),
            )
        return ref

    def find(self, key: str) -> str | None:
        row = (
            self._connection()
            .execute("SELECT ref FROM resources WHERE key = ? ORDER BY id LIMIT 1", (key,))
            .fetchone()
        )
        return row[0] if row else None

    def statuses(self, refs: list[str]) -> dict[str, str]:
        """ref -> status for the refs that exist (a cancelled resource reports STOPPED)."""
        found: dict[str, str] = {}
        db = self._connection()
        unique = list(dict.fromkeys(refs))
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT ref, status, cancelled_at FROM resources WHERE ref IN ({marks})"
            for ref, status, cancelled_at in db.execute(query, chunk):
                found[ref] = ProviderStatus.STOPPED.value if cancelled_at else status
        return found

    def mark(self, ref: str, column: str) -> bool:
        """Set `cancelled_at` or `cleaned_up_at` of a resource (first time only); False if there
        is no such resource."""
        if column not in ("cancelled_at", "cleaned_up_at"):
            raise ValueError(f"cannot mark {column}")
        with self._write() as db:
            if db.execute("SELECT 1 FROM resources WHERE ref = ?", (ref,)).fetchone() is None:
                return False
            db.execute(
                f"UPDATE resources SET {column} = COALESCE({column}, ?) WHERE ref = ?",
                (time.time(), ref),
            )
        return True

    def set_status(self, ref: str, status: str) -> None:
        """What the cloud does by itself: a task starts, stops or fails (tests)."""
        status = status.upper()
        if status not in REPORTABLE:
            raise ValueError(f"status must be one of {', '.join(sorted(REPORTABLE))}")
        with self._write() as db:
            if (
                db.execute("UPDATE resources SET status = ? WHERE ref = ?", (status, ref)).rowcount
                != 1
            ):
                raise KeyError(ref)

    # --- what benchmarks and tests read -------------------------------------------------------

    def resources(self) -> list[FakeResource]:
        rows = self._connection().execute(f"SELECT {_RESOURCE_COLUMNS} FROM resources ORDER BY id")
        return [FakeResource(*row) for row in rows]

    def resource(self, ref: str) -> FakeResource | None:
        row = (
            self._connection()
            .execute(f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE ref = ?", (ref,))
            .fetchone()
        )
        return FakeResource(*row) if row else None

    def calls(self) -> list[FakeCall]:
        rows = self._connection().execute(
            "SELECT key, ref, called_at, pid, created FROM calls ORDER BY id"
        )
        return [FakeCall(k, r, t, p, bool(c)) for k, r, t, p, c in rows]

    def duplicates(self) -> dict[str, int]:
        """Keys with more than one resource, and how many each has."""
        rows = self._connection().execute(
            "SELECT key, COUNT(*) FROM resources GROUP BY key HAVING COUNT(*) > 1"
        )
        return dict(rows.fetchall())

    def repeated_calls(self) -> dict[str, int]:
        """Keys `submit` was called with more than once, and how often."""
        rows = self._connection().execute(
            "SELECT key, COUNT(*) FROM calls GROUP BY key HAVING COUNT(*) > 1"
        )
        return dict(rows.fetchall())

    def reset(self) -> None:
        """Forget every resource and call."""
        with self._write() as db:
            db.execute("DELETE FROM resources")
            db.execute("DELETE FROM calls")


# One FakeCloud per file and process: adapters are rebuilt per pool version, connections need
# not be.
_CLOUDS: dict[Path, FakeCloud] = {}
_CLOUDS_LOCK = threading.Lock()


def _cloud(path: Path) -> FakeCloud:
    with _CLOUDS_LOCK:
        cloud = _CLOUDS.get(path)
        if cloud is None:
            cloud = _CLOUDS[path] = FakeCloud(path)
        return cloud


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


class FakeAdapter:
    """The `fake` provider. See the module docstring."""

    provider: ClassVar[str] = PROVIDER

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        *,
        cache: ResourceCache | None = None,
        **_ignored: Any,  # constructor options of real adapters (limiter=...) mean nothing here
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.cache = cache or MemoryResourceCache()
        self.idempotent = _as_bool(pool.settings.get("idempotent", True))
        self.cloud = _cloud(state_path(pool.settings).resolve())

    @classmethod
    def default_template(cls) -> dict[str, Any]:
        """Two variables, both unset by default so that the pool's settings apply."""
        return {
            "job_configuration": {
                "latency_seconds": "{{ latency_seconds }}",
                "status": "{{ status }}",
            },
            "variables": {
                "type": "object",
                "properties": {
                    "latency_seconds": {
                        "title": "Latency",
                        "description": "Seconds `submit` takes (default: the pool's setting).",
                        "type": "number",
                        "minimum": 0,
                    },
                    "status": {
                        "title": "Status",
                        "description": "What the run reports (default: the pool's setting).",
                        "type": "string",
                        "enum": sorted(REPORTABLE),
                    },
                },
            },
        }

    def render(self, job_configuration: dict[str, Any], context: RunContext) -> FakeRequest:
        """Job configuration over pool settings over defaults. Pure."""

        def pick(name: str, default: Any) -> Any:
            value = job_configuration.get(name)
            return value if value not in (None, "") else self.pool.settings.get(name, default)

        try:
            latency = float(pick("latency_seconds", 0.0))
        except (TypeError, ValueError):
            raise InvalidInput(
                "latency_seconds must be a number", field="job_variables.latency_seconds"
            ) from None
        if latency < 0:
            raise InvalidInput(
                "latency_seconds must not be negative", field="job_variables.latency_seconds"
            )
        status = str(pick("status", ProviderStatus.RUNNING.value)).upper()
        if status not in REPORTABLE:
            raise InvalidInput(
                f"status must be one of {', '.join(sorted(REPORTABLE))}",
                field="job_variables.status",
            )
        return FakeRequest(
            run_id=str(context.run_id),
            name=context.deployment_name,
            latency_seconds=latency,
            status=status,
        )

    def describe(self, request: FakeRequest) -> dict[str, Any]:
        return {
            "run_id": request.run_id,
            "name": request.name,
            "latency_seconds": request.latency_seconds,
            "status": request.status,
            "state_path": str(self.cloud.path),
        }

    def submit(self, request: FakeRequest, key: str) -> str:
        if request.latency_seconds:
            time.sleep(request.latency_seconds)
        return self.cloud.submit(
            key, run_id=request.run_id, status=request.status, idempotent=self.idempotent
        )

    def find(self, key: str) -> str | None:
        return self.cloud.find(key)

    def statuses(self, refs: list[str]) -> dict[str, ProviderState]:
        found = self.cloud.statuses(refs)
        missing = ProviderState(ProviderStatus.NOT_FOUND)
        return {
            ref: ProviderState(ProviderStatus(found[ref])) if ref in found else missing
            for ref in refs
        }

    def cancel(self, ref: str) -> None:
        if not self.cloud.mark(ref, "cancelled_at"):
            raise ProviderNotFound(f"fake provider has no resource {ref}")

    def cleanup(self, ref: str) -> None:
        self.cloud.mark(ref, "cleaned_up_at")  # nothing there is nothing left to clean

    def teardown(self) -> None:
        """The fake creates nothing per pool."""

    def logs(self, ref: str, since: datetime | None = None) -> list[ProviderLogLine]:
        resource = self.cloud.resource(ref)
        if resource is None:
            raise ProviderNotFound(f"fake provider has no resource {ref}")
        at = datetime.fromtimestamp(resource.submitted_at, UTC)
        if since is not None and at <= since:
            return []
        return [ProviderLogLine(at, "stdout", f"fake resource {ref} submitted")]


SCRIPTED_PROVIDER = "fake-scripted"
# What the next `submit` or `find` calls of a `fake-scripted` pool raise, in order, keyed by
# (pool name, "submit" | "find"); None answers normally, and so does an empty script.
SCRIPT: dict[tuple[str, str], list[Exception | None]] = {}


class ScriptedFakeAdapter(FakeAdapter):
    """The fake cloud, failing calls as a test scripted in `SCRIPT`: a provider that throttles,
    has no capacity, or refuses the control plane's credentials, on cue."""

    provider: ClassVar[str] = SCRIPTED_PROVIDER

    def _scripted(self, operation: str) -> None:
        script = SCRIPT.get((self.pool.name, operation)) or []
        if script:
            error = script.pop(0)
            if error is not None:
                raise error

    def submit(self, request: FakeRequest, key: str) -> str:
        self._scripted("submit")
        return super().submit(request, key)

    def find(self, key: str) -> str | None:
        self._scripted("find")
        return super().find(key)


def install() -> None:
    """Register the fake providers (pool types `fake`, `fake:push`, `fake-scripted`,
    `fake-scripted:push`) in this process, with no script."""
    from skylane.adapters import ADAPTERS

    ADAPTERS[PROVIDER] = FakeAdapter  # type: ignore[assignment]
    ADAPTERS[SCRIPTED_PROVIDER] = ScriptedFakeAdapter  # type: ignore[assignment]
    SCRIPT.clear()


def uninstall() -> None:
    """Undo `install()` (for tests that must leave the registry as they found it)."""
    from skylane.adapters import ADAPTERS

    ADAPTERS.pop(PROVIDER, None)
    ADAPTERS.pop(SCRIPTED_PROVIDER, None)
