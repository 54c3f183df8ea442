"""run_job: the orchestration, in the order the data goes.

take the output's lease -> plan (or check the plan of a job being resumed) -> start
the coordinator -> stream pending pieces through the engines -> finish. Where the
pieces run is the executor's business: Ray (ray_executor.py) or, for a small job on
one machine, this process (local.py); the steps and the output are the same.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from rollout_ray import secrets, storage
from rollout_ray.config import JobConfig
from rollout_ray.engines import kind_of
from rollout_ray.errors import EngineFailed, find_job_fault
from rollout_ray.output.cost import Projection, cost_of, project
from rollout_ray.output.lease import Lease, LeaseLost
from rollout_ray.output.lease import owner as lease_owner
from rollout_ray.output.manifest import Layout
from rollout_ray.output.plan import build_plan, planned_pieces, prepare_output
from rollout_ray.output.schema import Commit
from rollout_ray.run import interrupts, warm
from rollout_ray.run.local import LocalExecutor, choose_executor, local_device
from rollout_ray.run.placement import job_label
from rollout_ray.run.preflight import check_job
from rollout_ray.run.ray_executor import RayCluster
from rollout_ray.run.verdict import RunTally, judge_run
from rollout_ray.tracking import open_tracker
from rollout_ray.verifiers.remote import check_verifiers

log = logging.getLogger(__name__)


class Executor(Protocol):
    """Where a job's pieces run (RayCluster, LocalExecutor): run_job drives either the
    same way, step by step."""

    kind: str  # "ray" or "local", as metrics.json records it
    name: str
    timings: dict[str, float]

    def start(self) -> None: ...
    def start_coordinator(self, layout: Layout, owner: dict[str, Any], watch_s: float) -> Any: ...
    def call(self, method: Any, *args: Any, timeout: float | None = None) -> Any: ...
    def prestart(self, layout: Layout, pieces: int) -> None: ...
    def expect(self, pending: int, watch_s: float) -> None: ...
    def stream(self, coordinator: Any, pending: int) -> Iterator[Commit]: ...
    def stop(self) -> None: ...
    def finish(self, coordinator: Any, status: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


class Phases:
    """Seconds from the start of run_job to the end of each phase (metrics.json's
    `phases`, printed with --verbose): where a job's wall time goes."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.ends: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.ends[name] = round(time.monotonic() - self.started, 3)

    def first(self, name: str) -> None:
        if name not in self.ends:
            self.mark(name)

    def table(self, extra: dict[str, float]) -> dict[str, float]:
        return {**self.ends, **extra}


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


# ---------------------------------------------------------------------------- the job


def run_job(
    config: JobConfig,
    *,
    force_new_config: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    on_commit: Callable[[Commit], None] | None = None,
    watch_s: float = 0.0,
    stop: threading.Event | None = None,
    process_exits: bool = False,
) -> JobResult:
    """Run (or resume) a job to the end.

    Args:
        config: the job.
        force_new_config: resume an output planned with another config or other inputs.
        on_progress: called about twice a second with the coordinator's progress.
        on_message: called with one-line notices (model preparation, resume).
        on_commit: called with each piece's commit record as it lands (for --show).
        watch_s: keep running, planning new input files every `watch_s` seconds (0: off).
        stop: set it (from another thread) to stop the run as Ctrl-C does: running
            pieces commit what they finished, the rest is left for the next run.
        process_exits: the process exits right after (the CLI): an engine run in it
            is not shut down, its memory is the exit's to free.

    Raises:
        ConfigError: the config names a model path or key variable that isn't there.
        ResumeRefused: the output belongs to another config, or another job holds it.
        EveryRolloutFailed: every rollout of the run failed for one cause outside the
            rows (a JobFault; its `result` is this run's JobResult).
        RunInterrupted: Ctrl-C (or `stop` set): the run committed what its pieces had
            finished, then stopped; `.result` says what the output holds.
        KeyboardInterrupt: stopped at once (a second Ctrl-C); committed work is kept.
        LeaseLost: another job took the output; this run wrote nothing after noticing.
    """
    notify = on_message or log.info
    on_commit = tally = RunTally(on_commit)  # this run's commits, for judge_run
    phases = Phases()
    check_job(config)  # the model folder, key variables: all at once, before anything
    secret_env = secrets.prepare(config)
    # Before anything starts, not in each actor.
    kind_of(config.engine).check(config, config.engine, secret_env)
    secrets.install_log_filter()
    check_verifiers(config)
    started = time.monotonic()
    # The lease first: a job that is refused changes nothing under the output.
    owner = lease_owner()
    lease = Lease(Layout(config.output).lease_dir, owner)
    lease.acquire(notice=notify)
    stop = stop or threading.Event()
    executor: Executor | None = None
    try:
        with interrupts.graceful(stop):
            executor = warm.executor_for(config, secret_env, watch_s, notify)
            # "" until the plan says how big
            choice = executor.kind if executor else choose_executor(config, watch_s)
            if choice == "local":
                # The engine loads in a thread while this thread plans (a new output).
                fresh = not storage.exists(Layout(config.output).plan)
                executor = LocalExecutor(
                    config, local_device(config), secret_env, notify, fresh, process_exits
                )
            phases.mark("checks")
            layout, resumed = prepare_output(config, force_new_config, watch=bool(watch_s))
            plan_s = time.monotonic() - started
            phases.mark("plan")
            if executor is None:
                local = not choice and choose_executor(config, watch_s, layout) == "local"
                executor = (
                    LocalExecutor(
                        config, local_device(config), secret_env, notify, not resumed, process_exits
                    )
                    if local
                    else RayCluster(config, secret_env, notify)
                )
            _stop_early(stop)
            executor.start()
            _stop_early(stop)
            phases.mark("start")
            if not resumed:  # every piece of a new job is pending: engines can load now
                executor.prestart(layout, planned_pieces(layout))
            coordinator = executor.start_coordinator(layout, owner, watch_s)
            pending = executor.call(coordinator.start_run)
            phases.mark("coordinator")
            executor.expect(pending, watch_s)
            if resumed:
                notify(f"Resuming {storage.shown(config.output)}: {pending} pieces left")
            if watch_s:
                notify(f"Watching the inputs every {watch_s:g} s for new rows; Ctrl-C to stop")
            progress = _generate(
                config,
                executor,
                coordinator,
                pending,
                watch_s,
                stop,
                phases,
                on_progress,
                on_commit,
            )
        status = progress["status"]
        wall = time.monotonic() - started
        metrics = {"status": status, "wall_s": round(wall, 3), "plan_s": round(plan_s, 3)}
        metrics["executor"] = executor.kind
        engine_start = progress.get("run", {}).get("engine_start_s")
        timings = {**executor.timings, **({"engine_start_s": engine_start} if engine_start else {})}
        metrics["phases"] = phases.table(timings)
        metrics.update(progress)
        if config.cost is not None:
            metrics["cost"] = cost_of(config, progress.get("datasets", {}), wall)
        if config.sweep and status == "finished":
            from rollout_ray.run.sweep import comparison

            metrics["sweep"] = comparison(config, progress)
        # Written by the coordinator, under the lease like every file of the output.
        executor.call(coordinator.write_metrics, metrics)
    finally:
        if executor is not None:
            executor.close()
        # A job refused before it planned anything leaves nothing behind, lease included.
        lease.release(forget=not storage.exists(Layout(config.output).job))
    result = JobResult(config.output, status, wall, progress, metrics)
    if status == "interrupted":
        raise RunInterrupted(result)
    judge_run(tally, result, config.max_attempts)  # every rollout failed alike: a fault
    return result


def _stop_early(stop: threading.Event) -> None:
    """A stop asked for before any piece runs (while planning, or Ray starting): there is
    nothing to commit, so stop now rather than start what would only be stopped."""
    if stop.is_set():
        raise KeyboardInterrupt


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C) after committing what its pieces had finished;
    `result` says what the output holds now."""

    def __init__(self, result: JobResult):
        super().__init__("interrupted")
        self.result = result


def _generate(
    config: JobConfig,
    executor: Executor,
    coordinator: Any,
    pending: int,
    watch_s: float,
    stop: threading.Event,
    phases: Phases,
    on_progress: Callable[[dict[str, Any]], None] | None,
    on_commit: Callable[[Commit], None] | None,
) -> dict[str, Any]:
    """Stream the pending pieces through the executor until they are done or the run is
    stopped; returns the coordinator's final progress (its `status` says which).

    Raises:
        LeaseLost: another job took the output (this run wrote nothing after noticing).
        JobFault: the job stopped on a fault of its own.
        KeyboardInterrupt: stopped at once (a second Ctrl-C); committed work is kept.
    """
    port = config.metrics_port if config.metrics else 0
    collector = prometheus_collector(port, job_label(config), config.metrics_host)
    tracker = open_tracker(config)
    sinks = [s for s in (on_progress, collector and collector.update) if s]
    sinks += [tracker.progress] if tracker else []
    poll = _Poller(lambda: executor.call(coordinator.progress), sinks)
    stopper = _Stopper(stop, lambda: executor.call(coordinator.stop))
    status = "failed"
    try:
        if pending or watch_s:
            for commit in executor.stream(coordinator, max(pending, 1)):
                phases.first("first_commit")
                if on_commit:
                    on_commit(commit)
        status = "interrupted" if stop.is_set() else "finished"
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
        stopper.close()
        phases.mark("generate")
        poll.stop()
        executor.stop()
        progress = executor.finish(coordinator, status)
        phases.mark("finish")
        for sink in sinks:
            sink(progress)
        if tracker:
            wall = time.monotonic() - phases.started
            tracker.finish(JobResult(config.output, status, wall, progress))
    if progress.get("lease_lost"):
        raise LeaseLost(progress["lease_lost"])
    return progress


class _Stopper:
    """Turns a set `stop` into the coordinator's stop (pieces commit what they
    finished, then the stream ends), and stops at once if that outlives its grace."""

    def __init__(self, stop: threading.Event, stop_run: Callable[[], Any]):
        self._stop, self._stop_run = stop, stop_run
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollout-stop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            if self._done.is_set():
                return
        try:
            self._stop_run()
        except Exception as exc:  # the coordinator is gone: nothing can be kept
            log.warning("stopping the run: %s", exc)
            interrupts.stop_at_once()
            return
        if not self._done.wait(interrupts.STOP_GRACE_S):
            log.warning("the run did not stop in %.0f s; stopping at once", interrupts.STOP_GRACE_S)
            interrupts.stop_at_once()

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=1)


def run_pilot(
    config: JobConfig, rows: int, process_exits: bool = False, **callbacks: Any
) -> tuple[JobResult, Projection]:
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
    # Where the full job would run, not where a job this small would: the projection
    # is of the full job.
    executor = choose_executor(config) or (
        "local" if sum(full.values()) <= config.local_max_rollouts else "ray"
    )
    pilot = config.model_copy(update={"output": output, "datasets": datasets, "executor": executor})
    launched = time.time()
    result = run_job(pilot, process_exits=process_exits, **callbacks)
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
