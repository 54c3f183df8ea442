"""The local executor: the same coordinator, piece runner and engine as on Ray, in this
process, for small jobs on one machine.

A debug run (`run --limit 5`) on Ray pays Ray's start, Ray Data's executor, an actor
process and its imports, one after another, before the first token: about twice what
a plain vLLM script takes. Here the engine starts in a thread the moment the job is
known (while the driver plans the output), pieces run as coroutines on one event
loop, and nothing is left to shut down but the engine. Pieces, commits, failures and
resume are the coordinator's and the piece runner's, exactly as on Ray, so the output
is the same either way.

What Ray adds and this does not: several engines, other machines, and process
isolation (an engine that dies is started again here, in this process; a verifier
runs in this process too, which is why `executor: auto` keeps jobs with a `python`
verifier on Ray).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from rollout_ray import secrets
from rollout_ray.config import JobConfig
from rollout_ray.engines import EngineDead
from rollout_ray.errors import EngineFailed
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import Commit
from rollout_ray.output.work import WorkItem

log = logging.getLogger(__name__)

#: Engines in a row that die before any piece began on them before the job stops: an
#: engine that can't run at all. (One that dies during pieces counts against them.)
MAX_ENGINE_STARTS = 3

_DONE = object()


def choose_executor(config: JobConfig, watch_s: float = 0.0, layout: Any = None) -> str:
    """`local` or `ray` for this job; "" when that depends on the size of its plan (ask
    again with the output's `layout` once it is planned).

    `executor: auto` runs a job in process when its rollouts (bounded by the config's
    limits, else counted in its plan) are at most `local_max_rollouts` and it runs one
    engine on this machine: no cluster, no Ray already connected in this process (a
    notebook that called ray.init), no tensor parallelism or custom resources, no
    --watch, no `python` verifier (verifiers run in the driver here). A job keeps its
    executor across resumes: the plan, not what is left of it, decides.
    """
    if config.executor != "auto":
        return config.executor
    from rollout_ray.run.ray_facts import in_ray

    engine = config.engine
    if (
        os.environ.get("RAY_ADDRESS")
        or os.environ.get("RAY_JOB_ID")
        or in_ray()
        or watch_s
        or engine.concurrency != 1
        or getattr(engine, "resources", None)
        or getattr(engine, "tensor_parallel_size", 1) != 1
        or any(d.verifier is not None and d.verifier.kind == "python" for d in config.datasets)
    ):
        return "ray"
    bound = config_bound(config)
    if bound is None and layout is not None:
        bound = planned_rollouts(layout)
    if bound is None:
        return ""
    return "local" if bound <= config.local_max_rollouts else "ray"


def config_bound(config: JobConfig) -> int | None:
    """The most rollouts the config allows (every dataset limited), or None."""
    bound = 0
    for dataset in config.datasets:
        if dataset.limit is not None:
            bound += dataset.limit * dataset.num_repeats
        elif dataset.target_rollouts is not None:
            bound += dataset.target_rollouts
        else:
            return None
    return bound


def planned_rollouts(layout: Any) -> int:
    """Rollouts in an output's plan (the shard table: a row per shard)."""
    from rollout_ray import storage

    plan = storage.read_parquet(layout.plan, ["num_rows", "num_repeats"])
    rows = plan.column("num_rows").to_pylist()
    repeats = plan.column("num_repeats").to_pylist()
    return sum(r * k for r, k in zip(rows, repeats, strict=True))


def local_device(config: JobConfig) -> str:
    """The engine's device here, without importing torch: a GPU is one /dev/nvidiaN
    this process may use."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = 0 if visible == "" else len(glob.glob("/dev/nvidia[0-9]*"))
    return config.engine.resolve_device(gpus)


def engine_env(config: JobConfig, device: str) -> dict[str, str]:
    """The environment an engine actor gets, for this process."""
    from rollout_ray.run.placement import engine_env as actor_engine_env

    return actor_engine_env(config, device, os.cpu_count() or 1)[1]


class LocalExecutor:
    """An event loop in a thread holding the coordinator and the pieces; the engine
    loads in another thread from when there is work for it (`start_engine`)."""

    def __init__(
        self,
        config: JobConfig,
        device: str,
        secret_env: dict[str, str],
        notify: Callable[[str], None] = log.info,
        start_engine: bool = False,
        process_exits: bool = False,
    ):
        self.config = config
        # The process exits after the run (the CLI): an engine it frees is left to the
        # exit, off the critical path (vLLM's orderly shutdown is ~1 s of gc).
        self.process_exits = process_exits
        self.device = device
        self.secret_env = secret_env
        self.notify = notify
        self.kind = "local"
        self.name = ""
        self.engine_starts = 0
        self.timings: dict[str, float] = {}
        os.environ.update(engine_env(config, device))
        self._starter = concurrent.futures.ThreadPoolExecutor(1, "rollout-engine-start")
        self._engine: concurrent.futures.Future | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rollout-local")
        self._thread.daemon = True
        self._thread.start()
        self._feed: concurrent.futures.Future | None = None
        if start_engine:
            self.start_engine()

    def start_engine(self) -> None:
        """Start the engine in a thread (once): as soon as there is work for it."""
        if self._engine is None:
            self._engine = self._start_engine()

    def prestart(self, layout: Layout, pieces: int) -> None:
        """A new job: its engine is loading already (started before the plan)."""

    def expect(self, pending: int, watch_s: float) -> None:
        """The coordinator knows the work: start the engine now if there is any (a
        resumed job's; a new job's engine started while it was planned)."""
        if pending or watch_s:
            self.start_engine()

    def _start_engine(self) -> concurrent.futures.Future:
        self.engine_starts += 1

        def start():
            from rollout_ray.engines import kind_of
            from rollout_ray.run.engine_host import start_engine

            block = self.config.engine
            kind_of(block).prepare(self.config, block, True, self.notify)  # embedded model
            engine, seconds = start_engine(self.config, self.device, self.secret_env)
            self.timings["engine_start_s"] = seconds
            return engine

        return self._starter.submit(start)

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> Any:
        """Run `fn(*args)` (a coroutine function or a plain one) on the loop; its result."""

        async def run() -> Any:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def start(self) -> None:
        """Nothing to start: the engine starts when there is work (start_engine)."""

    def start_coordinator(self, layout: Layout, owner: dict[str, Any], watch_s: float) -> Any:
        from rollout_ray.run.coordinator import Coordinator
        from rollout_ray.run.placement import coordinator_name, job_label

        self.name = coordinator_name(layout)
        config, label = self.config.model_dump_json(), job_label(self.config)
        return self.call(Coordinator, config, owner, label, watch_s, self.secret_env)

    def finish(self, coordinator: Any, status: str) -> dict[str, Any]:
        return self.call(coordinator.finish, status, timeout=300)

    def stream(self, coordinator: Any, pending: int) -> Iterator[Commit]:
        """Run every pending piece, as many at once as an engine actor would; yields
        commits as they land."""
        from rollout_ray.run.placement import shards_in_flight

        in_flight = shards_in_flight(self.config, self.device)
        landed: queue.Queue = queue.Queue()
        self._feed = asyncio.run_coroutine_threadsafe(
            self._run_all(coordinator, in_flight, landed), self.loop
        )
        self._feed.add_done_callback(lambda _: landed.put(_DONE))
        while True:
            try:
                commit = landed.get(timeout=0.5)  # a timeout keeps Ctrl-C deliverable
            except queue.Empty:
                continue
            if commit is _DONE:
                break
            yield commit
        self._feed.result()  # the job's fault, if it stopped on one

    async def _run_all(self, coordinator: Any, in_flight: int, landed: queue.Queue) -> None:
        from rollout_ray.run.coordinator_client import LocalCoordinatorClient
        from rollout_ray.run.engine_host import attach_runner
        from rollout_ray.run.worker import PieceRunner
        from rollout_ray.verifiers.remote import LocalVerification, dataset_verifiers

        client = LocalCoordinatorClient(coordinator)
        failed_starts = 0
        verification = LocalVerification(dataset_verifiers(self.config), secrets.known())
        warming = asyncio.ensure_future(verification.warm())  # while the engine loads

        self.start_engine()

        async def make_runner() -> PieceRunner:
            assert self._engine is not None
            try:
                engine = await asyncio.wrap_future(self._engine)
            except Exception as exc:
                raise EngineFailed(f"the engine did not start: {exc}") from None
            await warming
            actor_id = f"local-{os.getpid()}-{self.engine_starts}"
            start_s = self.timings.get("engine_start_s")
            return attach_runner(self.config, engine, client, verification, actor_id, "", start_s)

        current: asyncio.Task = asyncio.ensure_future(make_runner())
        restart = asyncio.Lock()

        async def replace(dead: asyncio.Task) -> None:
            nonlocal current, failed_starts
            async with restart:
                if current is not dead:
                    return  # another piece saw the same death and replaced the engine
                old = dead.result()
                # A death while pieces ran is counted against those pieces (their
                # tries), which ends in running them row by row: not the engine's
                # fault alone. Only an engine that dies before any piece begins on it
                # is one that can't run at all.
                failed_starts = 0 if old.begun else failed_starts + 1
                if failed_starts >= MAX_ENGINE_STARTS:
                    raise EngineFailed("the engine died again after each of its restarts")
                await old.close()
                await asyncio.to_thread(_close_engine, old.engine)
                self._engine = self._start_engine()  # a fresh engine, counted as a start
                current = asyncio.ensure_future(make_runner())

        async def worker() -> None:
            nonlocal failed_starts
            while (items := await coordinator.next_items(1)) is not None:
                for text in items:
                    item = WorkItem.from_json(text)
                    while True:
                        holder = current
                        try:
                            runner = await _unless_stopped(holder, coordinator)
                            if runner is None:  # stopped while the engine loaded
                                coordinator.abandon(item.piece_id)
                                commit = None
                                break
                            commit = await runner.run(item)
                            break
                        except EngineDead as exc:
                            # As on Ray (the actor exits and the piece is begun again):
                            # the next try counts, and a row that keeps killing engines
                            # is found by running its piece row by row.
                            log.error("engine died (%s); starting it again", exc)
                            await replace(holder)
                    if commit is not None:
                        landed.put(commit)

        workers = [asyncio.ensure_future(worker()) for _ in range(max(1, in_flight))]
        try:
            await asyncio.gather(*workers)
        finally:  # a fault (or Ctrl-C) in one piece stops the others
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            warming.cancel()
            closing = [verification.close()]
            if current.done() and not current.cancelled() and current.exception() is None:
                closing.append(current.result().close())  # its tool clients, its threads
            await asyncio.gather(warming, *closing, return_exceptions=True)

    def stop(self) -> None:
        """Cancel the pieces still running (an interrupted run); their work is redone."""
        if self._feed is not None and not self._feed.done():
            self._feed.cancel()  # cancels the task on the loop, and its pieces with it

    def close(self) -> None:
        """Stop the engine and the loop. An engine still loading (a run stopped early,
        by Ctrl-C or a refusal) is closed when its load ends; nobody waits for it."""
        if self._engine is not None:  # now, if it has started
            self._engine.add_done_callback(partial(_close_started, exits=self.process_exits))
        self._starter.shutdown(wait=False)
        try:  # the coordinator's ticker, the runner's reporter: ended, not abandoned
            self.call(_cancel_other_tasks, timeout=10)
            # The threads asyncio.to_thread started (storage, lease) end with the loop.
            self.call(self.loop.shutdown_default_executor, timeout=10)
        except Exception as exc:
            log.debug("stopping the loop's tasks: %s", exc)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


async def _unless_stopped(starting: asyncio.Task, coordinator: Any) -> Any:
    """The runner `starting` gives once the engine is up; None if the run stops first
    (a Ctrl-C during the engine's load needn't wait for it)."""
    while not coordinator.stopping:
        done, _ = await asyncio.wait({starting}, timeout=0.5)
        if done:
            return starting.result()
    return None


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _close_started(start: concurrent.futures.Future, exits: bool = False) -> None:
    if start.cancelled() or start.exception() is not None:
        return  # an engine that never started needs no close
    if not (exits and start.result().freed_by_exit):
        _close_engine(start.result())


def _close_engine(engine: Any) -> None:
    try:
        engine.close()
    except Exception as exc:  # a dead engine may not close cleanly
        log.debug("closing an engine: %s", exc)
