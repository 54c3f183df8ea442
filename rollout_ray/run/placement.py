"""Where the engine actors run and with what: connecting to (or starting) Ray, the
device, and each actor's resources, environment and placement."""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import Any

from rollout_ray.config import JobConfig
from rollout_ray.output.manifest import Layout
from rollout_ray.secrets import SECRET_NAME

log = logging.getLogger(__name__)

NAMESPACE = "rollout-ray"

#: What every engine process gets: vLLM's warnings about CPU settings and tqdm bars
#: would flood the driver's console.
ENGINE_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TQDM_DISABLE": "1",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONWARNINGS": "ignore",
}


def init_ray(num_cpus: int | None = None) -> bool:
    """Connect to the cluster this process belongs to, or start a local one.

    A process may already be connected (a notebook's plain `ray.init()`, a Ray Data
    read that started Ray): that connection is used as it is. What the job needs of
    Ray Data is not set here but on the job's own dataset (`pieces_context`), so it
    holds however Ray was started and never changes the user's own datasets.

    Args:
        num_cpus: logical CPUs of a local cluster (default: the machine's cores).

    Returns:
        True if a local cluster was started here.
    """
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    local = False
    if not ray.is_initialized():
        local = not (os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"))
        if local:
            dashboard = os.environ.get("ROLLOUT_RAY_DASHBOARD", "1") != "0"
            if not dashboard:
                # Ray still starts its API server without the dashboard, and when that
                # is slow to come up prints "Failed to start the dashboard" and the
                # last 20 lines of its log: about a dashboard the user turned off.
                logging.getLogger("ray._private.services").addFilter(_NO_DASHBOARD_NOTICE)
            ray.init(
                namespace=NAMESPACE,
                num_cpus=num_cpus,
                # `run --no-dashboard` on a small machine: see docs/platform.md.
                include_dashboard=dashboard,
                logging_level=logging.WARNING,
                configure_logging=False,
                # Ray starts its workers at nice 15, below the driver and Ray's own
                # daemons. On a Ray of its own the engine actors are the job, and on a
                # loaded machine nice 15 hands their cores to anything else: normal
                # priority. (A cluster keeps its own setting: RAY_worker_niceness.)
                _system_config={"worker_niceness": 0},
            )
        else:
            ray.init(address="auto", namespace=NAMESPACE, logging_level=logging.WARNING)
    _quiet_ray_data_logs()
    return local


def leave_ray() -> bool:
    """Disconnect from Ray now (a process about to exit), stopping a local Ray this
    process started; whether it was connected. The autoscaler monitor goes first, at
    once: ray.shutdown() stops it after the GCS, and it then spends its whole 1 s grace
    reporting its end to the GCS that is gone. A cluster's own processes are left."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        if node is not None:
            node.kill_monitor(check_alive=False)  # a no-op unless this process started it
    except Exception as exc:  # Ray's own shutdown still stops it
        log.debug("stopping Ray's monitor: %s", exc)
    ray.shutdown()
    return True


def pieces_context() -> Any:
    """A copy of this process's Ray Data context with what the piece stream needs.

    Every piece descriptor must be its own block, handed on as soon as the coordinator
    gives it out: the default buffers a read task's rows into 128 MiB blocks, and the
    coordinator gives out the next pieces only as earlier ones commit, so a buffered
    descriptor waits for commits that wait for it (a job stuck at "ReadPendingPieces:
    0/1" in a process that had called `ray.init()` itself).
    """
    from ray.data import DataContext

    context = DataContext.get_current().copy()
    context.target_max_block_size = 1
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return context


def _quiet_ray_data_logs() -> None:
    """Ray Data's full log stays in the session's ray-data.log; the console gets
    warnings. Idempotent: applied on every connection, however it was made. Ray Data
    sets its console handler up when it is first imported, so it is imported here
    first (else that handler, at INFO, came later and printed "Dataset ... execution
    finished" at the end of every run)."""
    import ray.data  # noqa: F401

    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler":
            handler.setLevel(logging.WARNING)
    # A job fault raised in an actor stops the run with our own message; Ray Data's
    # line about it advises `max_errored_blocks`, which would drop rows silently.
    logging.getLogger("ray.data._internal.execution.streaming_executor_state").addFilter(
        _DROP_ABORT_NOTICE
    )
    # Ray Data's stats actor (its dashboard bookkeeping) answered a late metrics update
    # of a finished dataset with KeyError: 'dataset_...', which Ray printed as a
    # traceback at the end of a run; the job's own work is not concerned.
    worker_log = logging.getLogger("ray._private.worker")
    if _DROP_STATS_ACTOR_ERRORS not in worker_log.filters:
        worker_log.addFilter(_DROP_STATS_ACTOR_ERRORS)


class _DropStatsActorErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("Unhandled error" in text and "_StatsActor" in text)


_DROP_STATS_ACTOR_ERRORS = _DropStatsActorErrors()


class _DropDashboardNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "dashboard" not in str(record.msg).lower()


_NO_DASHBOARD_NOTICE = _DropDashboardNotice()


class _DropAbortNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Dataset execution will now abort" not in record.getMessage()


_DROP_ABORT_NOTICE = _DropAbortNotice()


def resolve_device(config: JobConfig) -> str:
    import ray

    return config.engine.resolve_device(ray.cluster_resources().get("GPU", 0))


def actor_options(config: JobConfig, device: str) -> dict[str, Any]:
    """Resources, environment and placement for the engine actors."""
    import ray

    engine = config.engine
    options: dict[str, Any] = {"num_cpus": engine.num_cpus}
    if engine.resources:
        options["resources"] = dict(engine.resources)
    cores = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    own_options, env = engine_env(config, device, min(cores, os.cpu_count() or cores))
    options.update(own_options)
    options["runtime_env"] = {"env_vars": {**passthrough_env(), **env}}
    return options


def engine_env(config: JobConfig, device: str, cores: int) -> tuple[dict[str, Any], dict[str, str]]:
    """An engine's own Ray options and the environment its process needs (an actor's
    runtime_env, or this process's for the local executor); never a secret."""
    engine = config.engine
    from rollout_ray.engines import kind_of

    own_options, own_env = kind_of(engine).placement(engine, device, cores)
    env = {**ENGINE_ENV, **own_env}
    env.update({k: v for k, v in engine.env.items() if not SECRET_NAME.search(k)})
    return own_options, env


def passthrough_env() -> dict[str, str]:
    """Settings of this process that the actors need too (storage endpoints, caches).
    Never a secret: Ray logs runtime environments; secrets go as constructor arguments
    (see rollout_ray.secrets)."""
    names = (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "ROLLOUT_RAY_CACHE",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "VLLM_CACHE_ROOT",
    )
    from rollout_ray.engines.vllm_stepper import STEP_TRACE_ENV

    env = {n: os.environ[n] for n in names if n in os.environ}
    trace = os.environ.get(STEP_TRACE_ENV)
    if trace:  # a folder of this machine's, as the driver names it (a worker's cwd differs)
        env[STEP_TRACE_ENV] = os.path.abspath(trace)
    return env


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


def job_label(config: JobConfig) -> str:
    """The job's name where people look for it (metrics' `rollout_job`, progress.json's
    `job`): the name a `ray job submit` gave it (`rollout-ray submit` sets `job_name`
    in the job's metadata; else its submission id), else the output's last folder."""
    import json

    metadata = {}
    try:  # Ray hands a submitted job's driver its config, metadata included
        metadata = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        metadata = metadata.get("metadata") or {}
    except ValueError:
        pass
    named = metadata.get("job_name") or metadata.get("job_submission_id")
    return str(named or config.output.rstrip("/").rsplit("/", 1)[-1] or config.output)


def coordinator_name(layout: Layout) -> str:
    """The job's coordinator actor, named by its output (canonical: one name per output)."""
    from rollout_ray.output.plan import fingerprint

    return "coordinator-" + fingerprint(layout.output)


def wait_for_actor(name: str, grace_s: float = 120.0) -> Any:
    """The named actor (the job's coordinator) once it exists: a pipeline started early
    asks for it before the driver has made it."""
    import time

    import ray

    deadline = time.monotonic() + grace_s
    while True:
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
