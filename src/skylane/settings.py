"""SKYLANE_* settings.

Precedence, highest first: explicit arguments (CLI flags), environment variables
(`SKYLANE_API_URL`, ...), the user's config file (written by `skylane config set`), defaults.

`SKYLANE_HOME` moves everything skylane keeps on disk (config file, SQLite database, process
run state) into one directory; without it the platform's user config and data directories are
used.
"""

from __future__ import annotations

import json
import os
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_PORT = 4200

# Keys `skylane config set` may write, mapped to the Settings field they fill.
CONFIG_KEYS = {"api-url": "api_url", "api-key": "api_key"}


def home_dir() -> Path | None:
    value = os.environ.get("SKYLANE_HOME")
    return Path(value).expanduser() if value else None


def config_file() -> Path:
    home = home_dir()
    base = home if home else Path(platformdirs.user_config_dir("skylane"))
    return base / "config.toml"


def data_dir() -> Path:
    home = home_dir()
    return home if home else Path(platformdirs.user_data_dir("skylane"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKYLANE_", extra="ignore")

    # Client side: where the API is and which key to use.
    api_url: str = f"http://127.0.0.1:{DEFAULT_PORT}"
    api_key: SecretStr | None = None

    # Server side.
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Base URL runs use to reach the API from where they execute (a container may need a
    # public address); defaults to the server's own address.
    public_api_url: str | None = None
    # Dispatcher: wake-ups are event-driven (a run created or freed, a pool changed, the next
    # due time); this is only the longest it sleeps when nothing happens.
    dispatcher_interval_seconds: float = Field(default=5.0, gt=0)
    # Provider calls one dispatcher replica makes at once (submissions and look-ups).
    dispatcher_concurrency: int = Field(default=32, ge=1, le=1024)
    # Runs claimed per database transaction.
    dispatcher_batch_size: int = Field(default=100, ge=1, le=10_000)
    # How long a dispatcher owns a claimed run before another may recover it (find, resubmit).
    claim_lease_seconds: float = Field(default=120.0, gt=0)
    # One submission (its provider calls, their retries and rate-limit waits) starts no call
    # after this; with the provider timeout it is shorter than the lease, so a live dispatcher
    # never loses a claim mid-call.
    submit_deadline_seconds: float = Field(default=60.0, gt=0)
    # Timeout of each HTTP call to a provider (connect and read).
    provider_timeout_seconds: float = Field(default=20.0, gt=0)
    # Failed submit calls per run before a retryable provider error fails it.
    max_submit_attempts: int = Field(default=5, ge=1)
    # A run the provider has no capacity or quota for waits this long before it fails.
    capacity_retry_seconds: float = Field(default=3600.0, ge=0)
    # Reconciler: how often it checks submitted runs with their providers.
    reconciler_interval_seconds: float = Field(default=5.0, gt=0)
    # A submitted run whose runtime has not reported RUNNING after this long is stopped and
    # marked CRASHED (a pool's `start_timeout_seconds` setting overrides it).
    start_timeout_seconds: float = Field(default=900.0, gt=0)
    # After this many heartbeat intervals without a beat the provider is asked about a run.
    missed_heartbeats: int = Field(default=3, ge=1)
    # Scheduler: how often it looks for schedules whose upcoming runs need creating.
    scheduler_interval_seconds: float = Field(default=10.0, gt=0)
    # Each active schedule has its runs created this far ahead...
    schedule_lookahead_seconds: float = Field(default=3600.0, gt=0)
    # ...and at least this many upcoming runs (a daily schedule: the next 3 days)...
    schedule_min_runs: int = Field(default=3, ge=1, le=1000)
    # ...but at most this many at once (an every-second schedule: the next 100 s).
    schedule_max_runs: int = Field(default=100, ge=1, le=10_000)
    # A scheduled time more than this far in the past that never reached the dispatcher (the
    # control plane was down, the pool or deployment paused, a concurrency limit full) is
    # missed, and the schedule's catch-up policy (latest, all, none) decides what runs.
    schedule_grace_seconds: float = Field(default=300.0, gt=0)
    # `run ls` and `deployment inspect` show a run as late once it is this overdue and still
    # not submitted.
    late_after_seconds: float = Field(default=10.0, ge=0)
    # A run whose provider says it ended but which reported no final state is marked CRASHED
    # after this long (the runtime may still be flushing its last calls).
    crash_grace_seconds: float = 5.0
    # Fallback of push pools with `fallback: worker`: their runs go to the pool's workers when
    # the control plane's credentials are refused, or the provider has been unreachable this
    # long; every `fallback_probe_seconds` the control plane checks whether it can push again.
    fallback_after_seconds: float = Field(default=60.0, ge=0)
    fallback_probe_seconds: float = Field(default=30.0, gt=0)
    # Pull workers heartbeat this often; the server shows one offline (and adopts its runs to
    # other workers) after `worker_offline_seconds` without a beat.
    worker_heartbeat_seconds: float = Field(default=10.0, gt=0)
    worker_offline_seconds: float = Field(default=30.0, gt=0)
    # SIGTERM -> SIGKILL grace when cancelling.
    cancel_grace_seconds: float = 30.0
    # Runtime (inside the container).
    heartbeat_seconds: float = 30.0
    log_batch_seconds: float = 0.5

    @model_validator(mode="after")
    def _lease_outlives_submission(self) -> Settings:
        # A call made just before the deadline may last the provider timeout: the lease must
        # outlive both, or another dispatcher could recover (and submit) a claim still in flight.
        if self.claim_lease_seconds <= self.submit_deadline_seconds + self.provider_timeout_seconds:
            raise ValueError(
                "claim_lease_seconds must be longer than submit_deadline_seconds plus "
                "provider_timeout_seconds (a call made at the deadline may last that long), or "
                "a claim could expire while its dispatcher is still submitting it"
            )
        if self.schedule_max_runs < self.schedule_min_runs:
            raise ValueError("schedule_max_runs must be at least schedule_min_runs")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)

    @cached_property
    def resolved_database_url(self) -> str:
        return normalize_database_url(self.database_url or default_database_url())


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'skylane.db'}"


def normalize_database_url(url: str) -> str:
    """Accept the URL forms users copy from elsewhere; we ship the psycopg (v3) driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def get_settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def read_config() -> dict[str, Any]:
    path = config_file()
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return tomllib.load(f)


def write_config_value(key: str, value: str) -> Path:
    """Set one key of the config file, keeping the others; the file is private to the user."""
    if key not in CONFIG_KEYS:
        from skylane.errors import InvalidInput

        raise InvalidInput(
            f"unknown config key {key!r}; known keys: {', '.join(sorted(CONFIG_KEYS))}",
            field="key",
        )
    config = read_config()
    config[CONFIG_KEYS[key]] = value
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON string escapes are valid TOML basic-string escapes.
    text = "".join(f"{k} = {json.dumps(str(v))}\n" for k, v in sorted(config.items()))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path
