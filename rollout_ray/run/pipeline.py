"""run_job: the orchestration, in the order the data goes.

take the output's lease -> plan (or check the plan of a job being resumed) -> start
the coordinator -> stream pending pieces through the engine actor pool -> finish.
The Ray Data wiring lives here and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollout_ray import secrets, storage
from rollout_ray.config import JobConfig
from rollout_ray.errors import EngineFailed, find_job_fault
from rollout_ray.output.cost import Projection, cost_of, project
from rollout_ray.output.lease import Lease
from rollout_ray.output.lease import owner as lease_owner
from rollout_ray.output.manifest import Layout
from rollout_ray.output.plan import build_plan, fingerprint, prepare_output
from rollout_ray.output.schema import Commit
from rollout_ray.run.placement import (
    NAMESPACE,
    actor_options,
    init_ray,
    passthrough_env,
    resolve_device,
)
from rollout_ray.tracking import open_tracker
from rollout_ray.verifiers.remote import check_verifiers

log = logging.getLogger(__name__)

#: How long the piece feed waits for a restarting coordinator before giving up.
COORDINATOR_GRACE_S = 120.0


@dataclass
class JobResult:
    """What a finished (or stopped) run reports."""

    output: str
    status: str
    wall_s: float
    progress: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def datasets(self) -> dict[str, dict[str, Any]]:
        return self.progress.get("datasets", {})


# ---------------------------------------------------------------------------- Ray


def start_coordinator(
    layout: Layout,
    config: JobConfig,
    owner: dict[str, Any],
    watch_s: float = 0.0,
    secret_env: dict[str, str] | None = None,
):
    import ray

    from rollout_ray.run.coordinator import Coordinator

    name = coordinator_name(layout)
    actor = (
        ray.remote(Coordinator)
        .options(
            name=name,
            namespace=NAMESPACE,
            num_cpus=0,
            max_restarts=-1,
            max_concurrency=1000,
            # On the head node, never on a preemptible worker (as Ray Train places its
            # state actor): the head's lifetime is the cluster's.
            resources={"node:__internal_head__": 0.001},
            runtime_env={"env_vars": passthrough_env()},
        )
        .remote(config.model_dump_json(), owner, name, watch_s, secret_env or {})
    )
    return name, actor


def coordinator_name(layout: Layout) -> str:
    return "coordinator-" + fingerprint(
        os.path.abspath(layout.output) if "://" not in layout.output else layout.output
    )


def shards_in_flight(config: JobConfig, device: str) -> int:
    """Shards per actor so that, while one shard finishes its slowest rollouts, the
    others still queue at least two full engine batches: the engine never idles at a
    shard boundary."""
    engine = config.engine
    if engine.shards_in_flight:
        return engine.shards_in_flight
    batch = engine.batch_size() or (512 if device == "cuda" else 256)
    per_shard = min(config.shard_rows(d) * d.num_repeats for d in config.datasets)
    return max(2, min(64, math.ceil(2 * batch / per_shard) + 1))


def pending_pieces(coordinator_name: str, batch: int):
    """A Ray Data datasource that streams pending pieces from the coordinator.

    Its one read task asks the coordinator for a few pieces at a time and yields each
    as a one-row block, so the object store only ever holds the descriptors of pieces
    about to run, the driver holds none, and in watch mode pieces planned later flow
    into the same running pipeline (the engines stay up).
    """
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read():
        import pyarrow as pa
        import ray

        coordinator = ray.get_actor(coordinator_name, namespace=NAMESPACE)
        lost_since = None
        while True:
            try:
                items = ray.get(coordinator.next_items.remote(batch))
            except ray.exceptions.RayActorError:
                # Restarting (Ray brings it back, with the plan and commits): ask again.
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > COORDINATOR_GRACE_S:
                    raise
                time.sleep(0.5)
                continue
            lost_since = None
            if items is None:
                return
            for item in items:
                yield pa.table({"item": [item]})

    class PendingPieces(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            metadata = BlockMetadata(
                num_rows=None, size_bytes=None, input_files=None, exec_stats=None
            )
            return [ReadTask(read, metadata)]

        def get_name(self) -> str:
            return "PendingPieces"

        @property
        def supports_distributed_reads(self) -> bool:
            return False

    return PendingPieces()


def stream_pieces(
    pending: int, config: JobConfig, name: str, device: str, secret_env: dict[str, str]
):
    """The Ray Data pipeline: pending pieces -> engine actor pool -> commit records."""
    import ray

    from rollout_ray.run.engine_actor import EngineWorker

    engine = config.engine
    in_flight = shards_in_flight(config, device)
    options = actor_options(config, device)
    dataset = ray.data.read_datasource(
        pending_pieces(name, batch=in_flight), num_cpus=0, override_num_blocks=1
    )
    dataset = dataset.map_batches(
        EngineWorker,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(
            size=max(1, min(engine.concurrency, pending)),
            max_tasks_in_flight_per_actor=in_flight,
            max_concurrent_calls_per_actor=in_flight,
        ),
        fn_constructor_kwargs={
            "config_json": config.model_dump_json(),
            "coordinator_name": name,
            "namespace": NAMESPACE,
            "device": device,
            # Constructor arguments, not runtime_env: Ray logs runtime environments.
            "secret_env": secret_env,
        },
        **options,
    )
    for row in dataset.iter_rows():
        landed = json.loads(row["commit"])
        if landed:
            yield Commit.from_row(landed)


# ---------------------------------------------------------------------------- the job


def run_job(
    config: JobConfig,
    *,
    force_new_config: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    on_commit: Callable[[Commit], None] | None = None,
    watch_s: float = 0.0,
) -> JobResult:
    """Run (or resume) a job to the end.

    Args:
        config: the job.
        force_new_config: resume an output planned with another config or other inputs.
        on_progress: called about twice a second with the coordinator's progress.
        on_message: called with one-line notices (model preparation, resume).
        on_commit: called with each piece's commit record as it lands (for --show).
        watch_s: keep running, planning new input files every `watch_s` seconds (0: off).

    Raises:
        ResumeRefused: the output belongs to another config, or another job holds it.
        KeyboardInterrupt: the run was stopped; everything committed stays committed.
    """
    import ray

    notify = on_message or log.info
    secret_env = secrets.prepare(config)
    config.engine.check(config, secret_env)  # before anything starts, not in each actor
    secrets.install_log_filter()
    check_verifiers(config)
    started = time.monotonic()
    # The lease first: a job that is refused changes nothing under the output.
    owner = lease_owner()
    lease = Lease(Layout(config.output).lease_dir, owner)
    lease.acquire(notice=notify)
    progress: dict[str, Any] = {}
    status = "failed"
    try:
        layout, resumed = prepare_output(config, force_new_config, watch=bool(watch_s))
        plan_s = time.monotonic() - started
        local = init_ray()
        device = resolve_device(config)
        config.engine.prepare(config, local, notify)
        name, coordinator = start_coordinator(layout, config, owner, watch_s, secret_env)
        pending = ray.get(coordinator.start_run.remote())
        if resumed:
            notify(f"Resuming {config.output}: {pending} pieces left")
        if watch_s:
            notify(f"Watching the inputs every {watch_s:g} s for new rows; Ctrl-C to stop")
        port = config.metrics_port if config.metrics else 0
        collector = prometheus_collector(port, name, config.metrics_host)
        tracker = open_tracker(config)
        sinks = [s for s in (on_progress, collector and collector.update) if s]
        sinks += [tracker.progress] if tracker else []
        poll = _Poller(lambda: ray.get(coordinator.progress.remote()), sinks)
        try:
            if pending or watch_s:
                pieces = stream_pieces(max(pending, 1), config, name, device, secret_env)
                for commit in pieces:
                    if on_commit:
                        on_commit(commit)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except Exception as exc:
            fault = find_job_fault(exc)
            if isinstance(fault, EngineFailed):
                raise EngineFailed(f"the engine cannot go on: {fault}") from None
            if fault is not None:
                raise fault from None
            raise
        finally:
            poll.stop()
            progress = _finish(coordinator, status)
            for sink in sinks:
                sink(progress)
            if tracker:
                tracker.finish(
                    JobResult(config.output, status, time.monotonic() - started, progress)
                )
        wall = time.monotonic() - started
        metrics = {"status": status, "wall_s": round(wall, 3), "plan_s": round(plan_s, 3)}
        metrics.update(progress)
        if config.cost is not None:
            metrics["cost"] = cost_of(config, progress.get("datasets", {}), wall)
        if config.sweep and status == "finished":
            from rollout_ray.run.sweep import comparison

            metrics["sweep"] = comparison(config, progress)
        storage.write_json_atomic(layout.metrics, metrics)
    finally:
        lease.release()
    return JobResult(config.output, status, wall, progress, metrics)


def _finish(coordinator: Any, status: str) -> dict[str, Any]:
    """The coordinator's final progress, waiting out a restart of it."""
    import ray

    deadline = time.monotonic() + COORDINATOR_GRACE_S
    while True:
        try:
            return ray.get(coordinator.finish.remote(status), timeout=120)
        except ray.exceptions.RayActorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run_pilot(config: JobConfig, rows: int, **callbacks: Any) -> tuple[JobResult, Projection]:
    """Run `rows` rows of each dataset into OUTPUT-pilot and project the full job.

    The pilot's output is started afresh each time, so the projection always comes from
    rollouts generated now, with this config.
    """
    _, shards = build_plan(config)
    full: dict[str, int] = {}
    for shard in shards:
        full[shard.dataset] = full.get(shard.dataset, 0) + shard.num_rows * shard.num_repeats
    output = config.output.rstrip("/") + "-pilot"
    storage.remove_tree(output)
    datasets = [d.model_copy(update={"limit": min(rows, d.limit or rows)}) for d in config.datasets]
    pilot = config.model_copy(update={"output": output, "datasets": datasets})
    launched = time.time()
    result = run_job(pilot, **callbacks)
    return result, project(config, result.metrics, full, launched)


_COLLECTORS: dict[int, Any] = {}


def prometheus_collector(port: int, job: str, host: str = "127.0.0.1"):
    """The driver's Prometheus endpoint (one per process and port); None when off."""
    if not port:
        return None
    from rollout_ray.metrics import ProgressCollector, serve_prometheus

    if port not in _COLLECTORS:
        collector = ProgressCollector(job)
        _COLLECTORS[port] = collector if serve_prometheus(collector, port, host) else None
    collector = _COLLECTORS[port]
    if collector is not None:
        collector.job = job
    return collector


class _Poller:
    """Fetches progress about twice a second, in a thread, and hands it to each sink."""

    def __init__(self, fetch: Callable[[], dict[str, Any]], sinks: list[Callable]):
        self._stop = threading.Event()
        self._thread = None
        if sinks:
            self._thread = threading.Thread(target=self._run, args=(fetch, sinks), daemon=True)
            self._thread.start()

    def _run(self, fetch: Callable[[], dict[str, Any]], sinks: list[Callable]) -> None:
        while not self._stop.wait(0.5):
            try:
                progress = fetch()
                for sink in sinks:
                    sink(progress)
            except Exception as exc:  # the display must never stop the job
                log.debug("progress poll failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
