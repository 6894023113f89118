"""The pull worker: runs a pool's runs with its own credentials, where push cannot reach.

`skylane worker start --pool NAME` for pull pools (`process`, `ecs`, `cloud-run`, `aci`) and for
push pools with `fallback: worker` (then it takes only the runs the control plane hands over).
Inside, it is the control plane's own dispatcher and reconciler running on the worker API
(`skylane.worker_api.WorkerApiStore`) instead of a database:

- claims come with a lease and an idempotency key, are submitted through the pool type's adapter
  (built here, with the credentials of the machine the worker runs on) and the provider's ref is
  recorded; a claim whose lease ran out (a worker killed mid-submit) is recovered by any worker
  of the pool with `find(key)` first, so the provider never gets the run twice;
- every claim carries the pool as it is now, so a template change reaches every worker's next
  run without a restart;
- the reconciler watches what this worker submitted (and adopts the runs of the pool's offline
  workers): crashes, start timeouts, cancels, clean-up;
- it heartbeats every `worker_heartbeat_seconds`; `pool inspect` shows it online until
  `worker_offline_seconds` pass without a beat, or at once when it stops cleanly;
- on SIGTERM it stops claiming, hands back the claims it has not started submitting (their runs
  are SCHEDULED again, for another worker), lets the submissions in flight finish and leaves.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

from skylane import __version__
from skylane.client import SkylaneClient
from skylane.models import Pool
from skylane.pool_types import parse_pool_type
from skylane.rate_limits import MemoryRateLimiter
from skylane.services.adapters import PoolAdapters
from skylane.services.dispatcher import Dispatcher
from skylane.services.reconciler import Reconciler
from skylane.settings import Settings
from skylane.worker_api import WorkerApiStore

log = logging.getLogger("skylane.worker")

# Claim runs scheduled this far ahead by default, so the infrastructure is starting when the
# scheduled time comes.
DEFAULT_PREFETCH_SECONDS = 10.0


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    pool: str
    name: str
    # Most runs of this worker active at once (PENDING, RUNNING or CANCELLING); None: no cap.
    limit: int | None = None
    prefetch_seconds: float = DEFAULT_PREFETCH_SECONDS


class Worker:
    def __init__(self, client: SkylaneClient, options: WorkerOptions, settings: Settings) -> None:
        self.client = client
        self.options = options
        self.settings = settings
        self.api = WorkerApiStore(client, options.pool, options.name, limit=options.limit)
        # The runs' way back to the API: the public URL if one is set, else the worker's own.
        self.api_url_for_runs = (settings.public_api_url or client.api_url).rstrip("/")
        # The worker's own limiter: its provider calls never exceed the pool's rate limits.
        self.adapters = PoolAdapters(self.api, settings, limiter=MemoryRateLimiter())
        scope = self.api.scope
        self.dispatcher = Dispatcher(
            self.api,
            settings,
            name=options.name,
            adapters=self.adapters,
            scope=scope,
            api_url=self.api_url_for_runs,
            hand_back_on_stop=True,
            prefetch_seconds=options.prefetch_seconds,
        )
        self.reconciler = Reconciler(
            self.api, settings, name=options.name, adapters=self.adapters, scope=scope
        )
        self.pool: Pool | None = None
        self._stopping = threading.Event()
        self._heartbeats: threading.Thread | None = None

    def register(self) -> Pool:
        """The first heartbeat: the server refuses a push pool without fallback (saying why)
        and an unknown pool, before anything starts."""
        answer = self.api.heartbeat(
            hostname=socket.gethostname(), version=__version__, limit=self.options.limit
        )
        self.pool = answer.pool
        return answer.pool

    def describe(self) -> str:
        assert self.pool is not None
        pool_type = parse_pool_type(self.pool.type)
        what = (
            "runs the control plane hands over when it cannot push them"
            if pool_type.push
            else "its runs"
        )
        limit = f", at most {self.options.limit} at once" if self.options.limit else ""
        return (
            f"worker {self.options.name} of pool {self.pool.name} ({self.pool.type}) takes "
            f"{what}{limit}; runs reach the API at {self.api_url_for_runs}"
        )

    # --- running ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.pool is None:
            self.register()
        self.reconciler.start()
        self.dispatcher.start()
        self._heartbeats = threading.Thread(
            target=self._heartbeat_loop, name="skylane-worker-heartbeat", daemon=True
        )
        self._heartbeats.start()
        log.info("%s", self.describe())

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, hand back what is not started, finish what is in flight."""
        self._stopping.set()
        self.dispatcher.stop(timeout)
        self.reconciler.stop(timeout)
        if self._heartbeats is not None:
            self._heartbeats.join(timeout)
        try:
            self.api.stopped()
        except Exception as exc:  # the server may be gone too; its beats simply stop
            log.warning("could not tell the server this worker stopped: %s", exc)

    def run_once(self) -> None:
        """One pass: recover expired claims, claim and submit what is due (waiting for the
        submissions), check what this worker watches once, then leave."""
        if self.pool is None:
            self.register()
        while self.dispatcher.run_pass():  # its first pass recovers expired claims
            pass
        self.reconciler.run_pass()
        self.api.stopped()

    def _heartbeat_loop(self) -> None:
        interval = self.settings.worker_heartbeat_seconds
        failing = False
        while not self._stopping.wait(interval):
            try:
                self.pool = self.register()
                if failing:
                    log.info("the control plane answers again")
                failing = False
            except Exception as exc:
                # Keep going: submitted runs run on, and claims resume when it is back.
                if not failing:
                    log.warning("heartbeat failed (%s); trying again", exc)
                failing = True
