"""The Ray executor: the job's pieces streamed by Ray Data through a pool of engine
actors, the coordinator a named actor on the head node. The Ray Data wiring lives here
and nowhere else; run_job (pipeline.py) drives it, or the local executor (local.py)
for a small job on one machine.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from rollout_ray.config import JobConfig
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import Commit
from rollout_ray.run import priorities
from rollout_ray.run.placement import (
    NAMESPACE,
    actor_options,
    coordinator_name,
    init_ray,
    job_label,
    passthrough_env,
    pieces_context,
    resolve_device,
    shards_in_flight,
    wait_for_actor,
)

log = logging.getLogger(__name__)

#: How long the piece feed waits for a restarting coordinator before giving up.
COORDINATOR_GRACE_S = 120.0


class RayCluster:
    """run_job's executor on Ray: connect (or start a local Ray), then the coordinator
    actor and the Ray Data pipeline."""

    def __init__(self, config: JobConfig, secret_env: dict[str, str], notify: Any):
        self.config = config
        self.secret_env = secret_env
        self.notify = notify
        self.kind = "ray"
        self.name = ""
        self.device = "cpu"
        self.timings: dict[str, float] = {}
        self._pump: Pump | None = None
        self._coordinator: Any = None
        self._lowering: priorities.Lowering | None = None

    def start(self) -> None:
        started = time.monotonic()
        local = init_ray()
        self.timings["ray_start_s"] = round(time.monotonic() - started, 3)
        if local and priorities.enabled():
            self._lowering = priorities.Lowering()
        self.device = resolve_device(self.config)
        from rollout_ray.engines import kind_of

        kind_of(self.config.engine).prepare(self.config, self.config.engine, local, self.notify)

    def start_coordinator(self, layout: Layout, owner: dict[str, Any], watch_s: float) -> Any:
        self.name, actor = start_coordinator(layout, self.config, owner, watch_s, self.secret_env)
        self._coordinator = actor
        return actor

    def call(self, method: Any, *args: Any, timeout: float | None = None) -> Any:
        """An actor method's result (`method` is `actor.name`)."""
        import ray

        return ray.get(method.remote(*args), timeout=timeout)

    def prestart(self, layout: Layout, pieces: int) -> None:
        """A new job's plan is known: start the pipeline now, so the engine actors load
        while the coordinator starts (they wait for it only when they need it)."""
        self.name = coordinator_name(layout)
        self._pump = Pump(self.config, self.name, self.device, self.secret_env, pieces)

    def stream(self, coordinator: Any, pending: int) -> Iterator[Commit]:
        if self._pump is None:
            self._pump = Pump(self.config, self.name, self.device, self.secret_env, pending)
        return iter(self._pump)

    def expect(self, pending: int, watch_s: float) -> None:
        """Nothing to do: the engine actors start with the pipeline (prestart, stream)."""

    def stop(self) -> None:
        """Nothing to do: Ray Data stops its pipeline when the driver stops iterating."""

    def close(self) -> None:
        """The job's coordinator ends with the job, not with the driver: a process that
        stays connected to Ray (a notebook, a training loop) runs the same output again
        under the same actor name. Only the actor this job made is stopped."""
        import ray

        if self._lowering is not None:
            self._lowering.stop()
            self._lowering = None
        if self._coordinator is None:
            return
        ray.kill(self._coordinator, no_restart=True)
        self._coordinator = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the name is free once Ray has the actor dead
            try:
                ray.get_actor(self.name, namespace=NAMESPACE)
            except ValueError:
                return
            time.sleep(0.1)

    def finish(self, coordinator: Any, status: str) -> dict[str, Any]:
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
        .remote(config.model_dump_json(), owner, job_label(config), watch_s, secret_env or {})
    )
    return name, actor


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

        coordinator = wait_for_actor(coordinator_name)
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


class Pump:
    """The Ray Data pipeline (pending pieces -> engine actor pool -> commit records),
    iterated by a thread of its own from the moment it is started: the engine actors
    load while the driver makes the coordinator, rather than after. The driver takes
    the commits from a queue (a wait that Ctrl-C can always interrupt)."""

    _DONE = object()

    def __init__(
        self, config: JobConfig, name: str, device: str, secret_env: dict[str, str], pieces: int
    ):
        import ray

        in_flight = shards_in_flight(config, device)
        # The dataset keeps the context it was built under, for all its execution.
        with ray.data.DataContext.current(pieces_context()):
            dataset = _pieces_dataset(config, name, device, secret_env, pieces, in_flight)
        self._landed: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(dataset,), daemon=True)
        self._thread.name = "rollout-ray-pieces"
        self._thread.start()

    def _run(self, dataset: Any) -> None:
        try:
            for row in dataset.iter_rows():
                landed = json.loads(row["commit"])
                if landed:
                    self._landed.put(Commit.from_row(landed))
        except BaseException as exc:  # the job's fault, raised in the driver's thread
            self._landed.put(exc)
        self._landed.put(self._DONE)

    def __iter__(self) -> Iterator[Commit]:
        while True:
            try:
                landed = self._landed.get(timeout=0.5)
            except queue.Empty:
                continue
            if landed is self._DONE:
                return
            if isinstance(landed, BaseException):
                raise landed
            yield landed


def _pieces_dataset(
    config: JobConfig,
    name: str,
    device: str,
    secret_env: dict[str, str],
    pending: int,
    in_flight: int,
):
    import ray

    from rollout_ray.run.engine_actor import EngineWorker

    engine = config.engine
    options = actor_options(config, device)
    dataset = ray.data.read_datasource(
        pending_pieces(name, batch=in_flight),
        num_cpus=0,
        override_num_blocks=1,
        # Its worker ends with it: one at a lowered priority (priorities.py) never
        # goes back to Ray's idle pool to host an engine later.
        max_calls=1,
    )
    return dataset.map_batches(
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
            "device": device,
            # Constructor arguments, not runtime_env: Ray logs runtime environments.
            "secret_env": secret_env,
        },
        **options,
    )
