"""Rate limits: the pure algorithm (fake clock), parsing of pool overrides, the store-backed
shared state on SQLite and PostgreSQL, and that concurrent threads and processes taking from one
key never exceed a limit (checked on every interval of the grants actually made)."""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from skylane.errors import InvalidInput, ThrottledError
from skylane.rate_limits import (
    DEFAULT_LIMITS,
    MAX_GRANT_ENTRIES,
    Grant,
    MemoryRateLimiter,
    RateLimit,
    RateLimited,
    RateLimiter,
    RateScope,
    TokenBucket,
    UnlimitedRateLimiter,
    Window,
    limits_for,
    parse_rate_limits,
    take,
)
from skylane.services.rate_limiter import SharedRateLimiter
from skylane.store import create_engine_for, migrate
from skylane.store.rate_limits import RateLimitStore

T0 = 1_700_000_000.0
ACI = DEFAULT_LIMITS["aci:CreateContainerGroup"]


# --- helpers -------------------------------------------------------------------------------


def assert_bucket_bound(times: Sequence[float], burst: int, per_second: float) -> None:
    """In every interval [t_i, t_j] of grant times: at most burst + per_second * (t_j - t_i)."""
    times = sorted(times)
    for i in range(len(times)):
        for j in range(i, len(times)):
            calls = j - i + 1
            bound = burst + per_second * (times[j] - times[i])
            assert calls <= bound, (
                f"{calls} grants in {times[j] - times[i]:.6f} s exceed the bound {bound:.6f}"
            )


def assert_window_bound(times: Sequence[float], limit: int, seconds: float) -> None:
    """In every interval of length `seconds` (both ends included): at most `limit` grants."""
    times = sorted(times)
    j = 0
    for i in range(len(times)):
        j = max(j, i)
        while j + 1 < len(times) and times[j + 1] <= times[i] + seconds:
            j += 1
        assert j - i + 1 <= limit, f"{j - i + 1} grants within {seconds} s of {times[i]}"


def drain(
    limits: Sequence[RateLimit], start: float, until: float, count: int = 1
) -> tuple[list[float], dict[str, Any] | None]:
    """Take as fast as the limits allow on a fake clock; returns every grant time."""
    state: dict[str, Any] | None = None
    now = start
    times: list[float] = []
    while now < until:
        grant = take(state, limits, count, now)
        state = grant.state
        times.extend([grant.at] * grant.granted)
        if grant.granted < count:
            assert grant.wait_seconds > 0
            now = grant.at + grant.wait_seconds
    return times, state


# --- the algorithm -------------------------------------------------------------------------


def test_bucket_bursts_then_refills_at_its_rate() -> None:
    bucket = (TokenBucket(burst=5, per_second=2),)
    grant = take(None, bucket, 10, T0)
    assert grant.granted == 5
    assert grant.at == T0
    assert grant.wait_seconds == pytest.approx(0.5, abs=1e-5)

    grant = take(grant.state, bucket, 1, T0 + 0.25)
    assert grant.granted == 0
    assert grant.wait_seconds == pytest.approx(0.25, abs=1e-5)

    grant = take(grant.state, bucket, 3, T0 + 0.5)
    assert grant.granted == 1
    assert grant.wait_seconds == pytest.approx(0.5, abs=1e-5)

    grant = take(grant.state, bucket, 1, T0 + 1.75)  # 2.5 tokens back
    assert grant.granted == 1
    grant = take(grant.state, bucket, 5, T0 + 1.75)
    assert grant.granted == 1
    assert grant.wait_seconds == pytest.approx(0.25, abs=1e-5)  # 0.5 token left, 2/s

    grant = take(grant.state, bucket, 100, T0 + 1000)  # refill stops at the burst
    assert grant.granted == 5


def test_bucket_sustained_rate_and_exact_bound() -> None:
    times, state = drain((TokenBucket(burst=100, per_second=20),), T0, T0 + 60, count=7)
    # 100 at once, then 20 per second.
    assert len(times) == pytest.approx(100 + 20 * 60, abs=7)
    assert_bucket_bound(times, 100, 20)
    assert state is not None and "grants" not in state


def test_wait_is_the_earliest_time_another_token_is_available() -> None:
    bucket = (TokenBucket(burst=1, per_second=4),)
    grant = take(None, bucket, 2, T0)
    assert grant.granted == 1
    assert grant.wait_seconds == pytest.approx(0.25, abs=1e-5)
    early = take(grant.state, bucket, 1, T0 + grant.wait_seconds * 0.99)
    assert early.granted == 0
    due = take(grant.state, bucket, 1, T0 + grant.wait_seconds)
    assert due.granted == 1


def test_window_allows_limit_then_waits_for_the_oldest_to_age_out() -> None:
    window = (Window(limit=3, seconds=10),)
    state = None
    for offset in (0, 1, 2):
        grant = take(state, window, 1, T0 + offset)
        assert grant.granted == 1
        state = grant.state
    refused = take(state, window, 1, T0 + 5)
    assert refused.granted == 0
    # The first grant (T0) leaves the window just after T0 + 10.
    assert refused.wait_seconds == pytest.approx(5, abs=1e-3)
    assert take(state, window, 1, T0 + 10).granted == 0  # both ends of a window count
    later = take(state, window, 5, T0 + 5 + refused.wait_seconds)
    assert later.granted == 1


def test_aci_defaults_100_per_5_minutes_and_300_per_hour() -> None:
    assert (Window(limit=100, seconds=300), Window(limit=300, seconds=3600)) == ACI
    grant = take(None, ACI, 150, T0)
    assert grant.granted == 100
    assert grant.wait_seconds == pytest.approx(300, abs=1e-3)
    assert take(grant.state, ACI, 1, T0 + 299).granted == 0
    grant = take(grant.state, ACI, 150, T0 + 300 + grant.wait_seconds - 300)
    assert grant.granted == 100  # the first 100 aged out together

    # Take as fast as both windows allow for three hours.
    times, state = drain(ACI, T0, T0 + 3 * 3600, count=40)
    assert_window_bound(times, 100, 300)
    assert_window_bound(times, 300, 3600)
    first_hour = [t for t in times if t <= T0 + 3600]
    assert len(first_hour) == 300  # the hourly cap, not 12 x 100
    assert state is not None
    assert len(state["grants"]) <= 300
    assert sum(n for _, n in state["grants"]) <= 300


def test_hourly_cap_wait_points_at_the_hour_not_the_five_minutes() -> None:
    state = None
    for k in range(3):  # 300 in the first 15 minutes
        grant = take(state, ACI, 100, T0 + k * 301)
        assert grant.granted == 100
        state = grant.state
    refused = take(state, ACI, 1, T0 + 1000)
    assert refused.granted == 0
    # The 5-minute window is free again, the hourly one only after T0 + 3600.
    assert refused.wait_seconds == pytest.approx(T0 + 3600 - (T0 + 1000), abs=1e-3)


def test_state_stays_bounded() -> None:
    window = (Window(limit=5000, seconds=60),)
    state = None
    for k in range(1500):
        grant = take(state, window, 1, T0 + k * 0.01)
        assert grant.granted == 1
        state = grant.state
    assert state is not None
    assert len(state["grants"]) <= MAX_GRANT_ENTRIES
    assert sum(n for _, n in state["grants"]) == 1500  # merged, never lost
    grant = take(state, window, 5000, T0 + 30)
    assert grant.granted == 3500

    # Old entries are dropped once outside the longest window.
    later = take(grant.state, window, 1, T0 + 1000)
    assert later.state["grants"] == [[T0 + 1000, 1]]


def test_bucket_and_window_together() -> None:
    limits = (TokenBucket(burst=10, per_second=10), Window(limit=15, seconds=5))
    times, _ = drain(limits, T0, T0 + 30, count=4)
    assert_bucket_bound(times, 10, 10)
    assert_window_bound(times, 15, 5)
    grant = take(None, limits, 20, T0)
    assert grant.granted == 10
    grant = take(grant.state, limits, 20, T0 + 1)
    assert grant.granted == 5
    assert grant.wait_seconds == pytest.approx(4, abs=1e-3)  # the window, not the bucket


def test_the_same_bucket_twice_counts_once() -> None:
    bucket = TokenBucket(burst=4, per_second=1)
    grant = take(None, (bucket, bucket), 2, T0)
    assert take(grant.state, (bucket,), 5, T0).granted == 2


def test_no_limits_grants_everything_without_state() -> None:
    grant = take(None, (), 1000, T0)
    assert grant == Grant(granted=1000, state={}, wait_seconds=0.0, at=T0)


def test_clock_going_back_neither_refills_nor_ages() -> None:
    bucket = (TokenBucket(burst=2, per_second=1),)
    grant = take(None, bucket, 2, T0 + 10)
    behind = take(grant.state, bucket, 1, T0)  # a replica whose clock lags by 10 s
    assert behind.granted == 0
    assert behind.at == T0 + 10
    assert behind.wait_seconds == pytest.approx(1, abs=1e-5)


def test_changed_limits_keep_what_still_applies() -> None:
    old = (TokenBucket(burst=10, per_second=1), Window(limit=5, seconds=60))
    grant = take(None, old, 10, T0)
    assert grant.granted == 5
    # A bigger bucket does not start full: it gets no more than the old bucket had (5 + 2).
    new = (TokenBucket(burst=100, per_second=1), Window(limit=6, seconds=60))
    changed = take(grant.state, new, 100, T0 + 2)
    assert changed.granted == 1  # the window history is kept: 5 of 6 used
    only_bucket = take(grant.state, new[:1], 100, T0 + 2)
    assert only_bucket.granted == 7
    # An unreadable state starts fresh.
    assert take({"v": 99, "junk": True}, new, 100, T0).granted == 6


def test_take_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        take(None, (TokenBucket(burst=1, per_second=1),), 0, T0)
    with pytest.raises(ValueError):
        TokenBucket(burst=0, per_second=1)
    with pytest.raises(ValueError):
        Window(limit=1, seconds=float("inf"))
    with pytest.raises(TypeError):
        take(None, ({"burst": 1},), 1, T0)  # type: ignore[arg-type]


# --- parsing and defaults ------------------------------------------------------------------


def test_parse_rate_limits_accepts_buckets_windows_and_empty() -> None:
    assert parse_rate_limits([{"burst": 50, "per_second": 10}]) == (
        TokenBucket(burst=50, per_second=10),
    )
    assert parse_rate_limits(
        [{"limit": 100, "seconds": 300}, {"limit": 300.0, "seconds": 3600}]
    ) == (Window(limit=100, seconds=300), Window(limit=300, seconds=3600))
    assert parse_rate_limits([]) == ()
    assert parse_rate_limits([{"burst": 1, "per_second": 0.5}])[0].per_second == 0.5


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ({"burst": 5}, "settings.rate_limits", "list"),
        ("hunter2", "settings.rate_limits", "list"),
        ([5], "settings.rate_limits[0]", "object"),
        ([{}], "settings.rate_limits[0]", "empty"),
        ([{"burst": 5}], "settings.rate_limits[0].per_second", "missing"),
        ([{"seconds": 5}], "settings.rate_limits[0].limit", "missing"),
        (
            [{"limit": 1, "seconds": 1}, {"limit": 300, "seconds": -1}],
            "settings.rate_limits[1].seconds",
            "positive",
        ),
        ([{"burst": 2.5, "per_second": 1}], "settings.rate_limits[0].burst", "whole"),
        ([{"burst": True, "per_second": 1}], "settings.rate_limits[0].burst", "whole"),
        ([{"burst": 5, "per_second": "hunter2"}], "settings.rate_limits[0].per_second", "number"),
        (
            [{"burst": 5, "per_second": float("nan")}],
            "settings.rate_limits[0].per_second",
            "finite",
        ),
        ([{"limit": 0, "seconds": 1}], "settings.rate_limits[0].limit", "positive"),
        ([{"burst": 5, "per_second": 1, "rate": 3}], "settings.rate_limits[0].rate", "unknown"),
        ([{"burst": 5, "seconds": 1}], "settings.rate_limits[0]", "mixes"),
    ],
)
def test_parse_rate_limits_names_the_exact_field(value: Any, field: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rate_limits(value)
    assert caught.value.field == field
    assert words in caught.value.message
    assert "hunter2" not in str(caught.value)


def test_parse_rate_limits_uses_the_given_field_prefix() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rate_limits([{"burst": 1, "per_second": 0}], field="pool.settings.rate_limits")
    assert caught.value.field == "pool.settings.rate_limits[0].per_second"


def test_defaults_and_pool_overrides() -> None:
    assert limits_for("ecs:RunTask", {}) == (TokenBucket(burst=100, per_second=20),)
    assert limits_for("cloud-run:RunJob", {}) == (TokenBucket(burst=3, per_second=3),)
    assert limits_for("aci:CreateContainerGroup", {"region": "westeurope"}) == ACI
    assert limits_for("process:Start", {}) == ()
    assert limits_for("unknown:Op", {}) == ()
    assert limits_for("ecs:RunTask", {"rate_limits": []}) == ()
    assert limits_for("ecs:RunTask", {"rate_limits": None}) == DEFAULT_LIMITS["ecs:RunTask"]
    assert limits_for("ecs:RunTask", {"rate_limits": [{"burst": 50, "per_second": 10}]}) == (
        TokenBucket(burst=50, per_second=10),
    )
    with pytest.raises(InvalidInput) as caught:
        limits_for("ecs:RunTask", {"rate_limits": [{"burst": 0, "per_second": 1}]})
    assert caught.value.field == "settings.rate_limits[0].burst"


def test_scope_and_rate_limited_error() -> None:
    scope = RateScope("ecs:RunTask", "123456789012", "eu-west-1")
    assert scope.key == "ecs:RunTask|123456789012|eu-west-1"
    assert scope.describe() == "ecs:RunTask in account 123456789012, region eu-west-1"
    long_scope = RateScope("aci:CreateContainerGroup", "x" * 400, "westeurope")
    assert len(long_scope.key) == 300
    assert long_scope.key != RateScope("aci:CreateContainerGroup", "x" * 401, "westeurope").key

    error = RateLimited(scope, DEFAULT_LIMITS["ecs:RunTask"], retry_after=0.4)
    assert isinstance(error, ThrottledError)
    assert error.local is True and RateLimited.local is True
    assert error.retry_after == 0.4
    assert error.message == (
        "the rate limit for ecs:RunTask in account 123456789012, region eu-west-1 "
        "(burst 100, 20/s) is used up; next token in 0.40 s"
    )
    aci = RateLimited(
        RateScope("aci:CreateContainerGroup", "sub", "westeurope"), ACI, retry_after=90
    )
    assert "(100 per 5 min and 300 per 1 h)" in aci.message
    assert "next token in 1 min 30 s" in aci.message
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, RateLimited) and copy.message == error.message


# --- in-process limiters -------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_memory_limiter_waits_then_gives_up_past_the_timeout() -> None:
    clock = FakeClock()
    limiter = MemoryRateLimiter(
        clock=clock.time, sleep=clock.sleep, monotonic=clock.time, jitter=lambda wait: 0.0
    )
    assert isinstance(limiter, RateLimiter)
    scope = RateScope("cloud-run:RunJob", "my-project", "europe-west1")
    limits = DEFAULT_LIMITS["cloud-run:RunJob"]
    for _ in range(3):
        limiter.acquire(scope, limits, timeout=0)
    assert clock.sleeps == []
    limiter.acquire(scope, limits, timeout=1)
    assert clock.sleeps == [pytest.approx(1 / 3, abs=1e-5)]
    with pytest.raises(RateLimited) as caught:
        limiter.acquire(scope, limits, timeout=0.1)
    assert caught.value.retry_after == pytest.approx(1 / 3, abs=1e-5)
    assert "cloud-run:RunJob in account my-project, region europe-west1" in caught.value.message
    # Another scope has its own bucket.
    limiter.acquire(RateScope("cloud-run:RunJob", "my-project", "us-east1"), limits, timeout=0)
    UnlimitedRateLimiter().acquire(scope, limits, timeout=0)


def test_memory_limiter_threads_never_exceed_the_bucket() -> None:
    limiter = MemoryRateLimiter()
    recorded: list[float] = []
    original = limiter.take

    def recording_take(key: str, limits: Sequence[RateLimit], count: int = 1) -> Grant:
        grant = original(key, limits, count)
        recorded.extend([grant.at] * grant.granted)
        return grant

    limiter.take = recording_take  # type: ignore[method-assign]
    scope = RateScope("ecs:RunTask", "1", "r")
    end = time.time() + 0.6

    def worker() -> None:
        while time.time() < end:
            with contextlib.suppress(RateLimited):
                limiter.acquire(scope, [TokenBucket(burst=5, per_second=50)], timeout=1)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(recorded) >= 5
    assert_bucket_bound(recorded, 5, 50)


# --- the shared store ----------------------------------------------------------------------


class RecordingRateLimitStore(RateLimitStore):
    """Records the time of every grant, as the algorithm accounted it."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.grants: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def take(
        self,
        key: str,
        limits: Sequence[RateLimit],
        count: int = 1,
        now: float | None = None,
    ) -> Grant:
        grant = super().take(key, limits, count, now)
        with self._lock:
            self.grants.setdefault(key, []).extend([grant.at] * grant.granted)
        return grant


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine_for(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_store_take_get_reset(engine: sa.Engine) -> None:
    store = RateLimitStore(engine)
    bucket = (TokenBucket(burst=3, per_second=1),)
    assert store.get("k") is None
    grant = store.take("k", bucket, 5, now=T0)
    assert grant.granted == 3
    assert grant.wait_seconds == pytest.approx(1.0, abs=1e-5)
    assert store.get("k") == grant.state
    assert store.take("k", bucket, 1, now=T0 + 0.5).granted == 0
    assert store.take("k", bucket, 5, now=T0 + 2).granted == 2
    assert store.get("k")["buckets"] == {"3/1.0": 0.0}  # type: ignore[index]

    windows = (Window(limit=2, seconds=10),)
    assert store.take("w", windows, 5, now=T0).granted == 2
    assert store.take("w", windows, 1, now=T0 + 10).granted == 0
    assert store.take("w", windows, 1, now=T0 + 10.1).granted == 2 - 1
    assert store.get("w")["grants"] == [[T0 + 10.1, 1]]  # type: ignore[index]

    grant = store.take("now", bucket, 1)  # the time is read inside the transaction
    assert abs(grant.at - time.time()) < 60

    assert store.reset("k") == 1
    assert store.get("k") is None
    assert store.get("w") is not None
    assert store.reset() == 2
    assert store.get("w") is None
    with pytest.raises(ValueError):
        store.take("x" * 301, bucket)


def test_shared_limiter_without_limits_never_touches_the_database() -> None:
    class NoDatabase(RateLimitStore):
        def __init__(self) -> None:
            pass

        def take(self, *args: Any, **kwargs: Any) -> Grant:
            raise AssertionError("the database was used")

    limiter = SharedRateLimiter(NoDatabase())
    for _ in range(1000):
        limiter.acquire(RateScope("fake:Submit", "a", "r"), (), timeout=0)


def test_shared_limiter_raises_with_the_next_token_due(engine: sa.Engine) -> None:
    limiter = SharedRateLimiter(RateLimitStore(engine))
    scope = RateScope("ecs:RunTask", "123456789012", "eu-west-1")
    limits = (TokenBucket(burst=2, per_second=0.5),)
    limiter.acquire(scope, limits, timeout=0)
    limiter.acquire(scope, limits, timeout=0)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire(scope, limits, timeout=0.5)
    assert 0 < caught.value.retry_after <= 2
    assert "(burst 2, 0.5/s) is used up; next token in" in caught.value.message


# --- concurrency ---------------------------------------------------------------------------

BUCKET_SCOPE = RateScope("ecs:RunTask", "123456789012", "eu-west-1")
BUCKET = (TokenBucket(burst=5, per_second=50),)
WINDOW_SCOPE = RateScope("aci:CreateContainerGroup", "subscription", "westeurope")
WINDOW = (Window(limit=10, seconds=0.25),)
DURATION = 1.5


def _hammer(limiter: SharedRateLimiter, threads_per_scope: int, duration: float) -> None:
    end = time.time() + duration

    def worker(scope: RateScope, limits: Sequence[RateLimit]) -> None:
        while time.time() < end:
            with contextlib.suppress(RateLimited):
                limiter.acquire(scope, limits, timeout=1)

    threads = [
        threading.Thread(target=worker, args=(scope, limits))
        for scope, limits in ((BUCKET_SCOPE, BUCKET), (WINDOW_SCOPE, WINDOW))
        for _ in range(threads_per_scope)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _hammer_process(url: str, barrier: Any, results: Any) -> None:
    """One replica: its own engine and limiter, several threads on both scopes."""
    engine = create_engine_for(url)
    try:
        store = RecordingRateLimitStore(engine)
        barrier.wait(timeout=60)
        _hammer(SharedRateLimiter(store), threads_per_scope=3, duration=DURATION)
        results.put(store.grants)
    except BaseException as exc:  # report, never hang the parent
        results.put({"error": repr(exc)})
        raise
    finally:
        engine.dispose()


def _check_grants(grants: dict[str, list[float]]) -> None:
    bucket_times = grants.get(BUCKET_SCOPE.key, [])
    window_times = grants.get(WINDOW_SCOPE.key, [])
    assert len(bucket_times) >= BUCKET[0].burst
    assert len(window_times) >= WINDOW[0].limit
    elapsed = max(bucket_times) - min(bucket_times)
    assert len(bucket_times) <= BUCKET[0].burst + BUCKET[0].per_second * elapsed
    assert_bucket_bound(bucket_times, BUCKET[0].burst, BUCKET[0].per_second)
    assert_window_bound(window_times, WINDOW[0].limit, WINDOW[0].seconds)


def test_threads_share_one_limit(engine: sa.Engine) -> None:
    # Two limiters on one engine stand for two replicas' thread pools, plus queueing threads.
    store = RecordingRateLimitStore(engine)
    runners = [
        threading.Thread(target=_hammer, args=(SharedRateLimiter(store), 4, DURATION))
        for _ in range(2)
    ]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    _check_grants(store.grants)


def test_processes_share_one_limit(database_url: str, engine: sa.Engine) -> None:
    context = multiprocessing.get_context("spawn")
    processes = 3
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=_hammer_process, args=(database_url, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    merged: dict[str, list[float]] = {}
    try:
        for _ in range(processes):
            grants = results.get(timeout=90)
            assert "error" not in grants, grants["error"]
            for key, times in grants.items():
                merged.setdefault(key, []).extend(times)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert all(worker.exitcode == 0 for worker in workers)
    _check_grants(merged)
    state = RateLimitStore(engine).get(BUCKET_SCOPE.key)
    assert state is not None and set(state["buckets"]) == {"5/50.0"}
