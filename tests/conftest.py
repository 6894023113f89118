"""Fixtures shared by every test: databases (SQLite always, PostgreSQL when reachable), a store,
the API app with a real admin key.

PostgreSQL: `SKYLANE_TEST_POSTGRES_URL` (default postgresql://postgres@127.0.0.1:5432/test). Each
test session creates its own database there and drops it at the end, so runs never collide.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from skylane.api.app import create_app
from skylane.models import ApiScope
from skylane.settings import Settings, normalize_database_url
from skylane.store import create_engine_for, migrate
from skylane.store.repository import Store
from skylane.testing.databases import (
    empty_postgres_tables,
    postgres_unreachable_reason,
    reset_postgres_schema,
    temporary_postgres_database,
)

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return normalize_database_url(os.environ.get("SKYLANE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a database created for this test session (dropped at the end)."""
    reason = postgres_unreachable_reason(postgres_admin_url())
    if reason:
        if os.environ.get("SKYLANE_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    with temporary_postgres_database(postgres_admin_url(), prefix="skylane_test") as url:
        yield url


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def migrated_sqlite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session; each test gets a copy (a migration run
    costs 0.3 s of CPU, a copy nothing)."""
    path = tmp_path_factory.mktemp("migrated") / "skylane.db"
    engine = create_engine_for(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database without rows, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "skylane.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite_file"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_server_url")
    empty_postgres_tables(url)
    return url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without even a schema, on each backend (for the migrations' own tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'skylane.db'}"
    url = request.getfixturevalue("postgres_server_url")
    reset_postgres_schema(url)
    return url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = create_engine_for(database_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """No test reads or writes the developer's real config or data directory."""
    home = tmp_path_factory.mktemp("skylane-home")
    monkeypatch.setenv("SKYLANE_HOME", str(home))
    for name in ("SKYLANE_API_URL", "SKYLANE_API_KEY", "SKYLANE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    # The CLI's tables take an explicit COLUMNS as the user's width; pytest-xdist's workers
    # run with COLUMNS=80 set, which would wrap what the tests read.
    monkeypatch.delenv("COLUMNS", raising=False)
    return home


@pytest.fixture
def settings() -> Settings:
    return Settings(
        dispatcher_interval_seconds=0.2, crash_grace_seconds=0.5, cancel_grace_seconds=2.0
    )


@pytest.fixture
def admin_key(store: Store) -> str:
    _, key = store.create_api_key(name="test-admin", scopes=[ApiScope.ADMIN])
    return key


@pytest.fixture
def api(store: Store, settings: Settings, admin_key: str) -> Iterator[TestClient]:
    """The API (no background services) with the admin key on every request."""
    app = create_app(settings, store)
    with TestClient(app, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield client
