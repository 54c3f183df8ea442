"""The Python API: run a job, read what it committed, export it, from a notebook or a
training loop (collect, train, collect again), with the same config as the CLI.

    import rollout_ray
    result = rollout_ray.run("configs/rl.yaml", output="outputs/round-1", limit=100)
    table = rollout_ray.read_rollouts(result.output)          # a pyarrow.Table
    rollout_ray.export("rl", result.output, "round-1.parquet")
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from rollout_ray.config import JobConfig, load_config
from rollout_ray.output import results
from rollout_ray.output.manifest import Layout, read_commits
from rollout_ray.run.pipeline import JobResult, run_job


def run(
    config: JobConfig | str | Path | dict[str, Any] | None = None,
    *overrides: str,
    limit: int | None = None,
    force_new_config: bool = False,
    stop: threading.Event | None = None,
    **fields: Any,
) -> JobResult:
    """Run (or resume) a job to its end and return what it reports.

    Args:
        config: a JobConfig, a YAML path, a dict, or None for the embedded quickstart.
        overrides: dotted overrides as on the command line, e.g. "sampling.temperature=0.2".
        limit: use only the first `limit` rows of every dataset.
        force_new_config: go on in an output planned with another config.
        stop: set it (from another thread) to stop the run as Ctrl-C does: the pieces
            running commit what they finished, then RunInterrupted is raised.
        fields: more overrides as keywords, `__` for a dot: `sampling__temperature=0.2`,
            `output="outputs/x"`; values are Python values (lists, dicts welcome).

    Raises:
        ConfigError: a key or value is not allowed (the message names it).
        ResumeRefused: the output belongs to another job.
        JobFault: the job stopped on a fault of its own; committed work is kept.
        RunInterrupted: stopped by Ctrl-C or `stop` (a KeyboardInterrupt); `.result`
            says what the output holds.
    """
    from rollout_ray.logs import quiet_libraries

    quiet_libraries()  # as the CLI does: ROLLOUT_RAY_VERBOSE=1 shows everything
    dotted = list(overrides)
    dotted += [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in fields.items()]
    if isinstance(config, JobConfig):
        if dotted or limit is not None:
            config = load_config(config.model_dump(exclude_none=True), dotted, limit)
    else:
        config = load_config(config, dotted, limit)
    return run_job(config, force_new_config=force_new_config, stop=stop)


def read_rollouts(
    output: str | Path,
    datasets: list[str] | None = None,
    columns: list[str] | None = None,
    ray_dataset: bool = False,
) -> Any:
    """Every committed rollout of the job at `output`.

    Returns:
        A pyarrow.Table (the output must fit in memory), or with `ray_dataset=True` a
        ray.data.Dataset over the committed files only (for outputs of any size).
    """
    output = str(output)
    if not ray_dataset:
        return results.read_rollouts(output, datasets, columns)
    import ray.data

    files = sorted(
        c.file("data")
        for c in read_commits(Layout(output))
        if c.file("data") and (not datasets or c.dataset in datasets)
    )
    if not files:
        return ray.data.from_arrow(results.read_rollouts(output, datasets, columns))
    return ray.data.read_parquet(files, columns=columns)


def read_failures(output: str | Path, datasets: list[str] | None = None) -> pa.Table:
    """Every committed failure record (rows and rollouts that failed, with reasons)."""
    return results.read_failures(str(output), datasets)
