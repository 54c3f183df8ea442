"""Experiment tracking: a run's config, progress, final figures, reward histograms and
a sample of its rollouts, sent to W&B or MLflow as RL teams follow their runs.

The driver calls `start` once, `progress` on each progress report (throttled to
`tracking.every_s`), and `finish` at the end. Tracking never stops a job: an error of
the tracker is logged once and tracking ends for the run. The config goes out with
secrets masked, as job.json has it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from rollout_ray.config import JobConfig
from rollout_ray.config.blocks import TrackingConfig
from rollout_ray.errors import ConfigError

log = logging.getLogger(__name__)

#: Text columns of the sample table are cut to this many characters.
SAMPLE_CHARS = 2000


class Tracker:
    """One run in one tracker; `backend` is W&B's run or an MlflowClient."""

    def __init__(self, settings: TrackingConfig, config: JobConfig):
        self.settings = settings
        self.config = config
        self.kind = settings.kind
        self.backend: Any = None
        self.run_id = ""
        self.step = 0
        self._last = 0.0

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        from rollout_ray.secrets import redacted_config

        name = self.settings.run_name or self.config.output.rstrip("/").rsplit("/", 1)[-1]
        params = redacted_config(self.config)
        if self.kind == "wandb":
            import wandb

            # W&B records the command line (sys.argv) as the run's `args`: the same
            # overrides job.json masks, so it sees them masked too.
            with _argv_masked(self.config.cli_overrides, params["cli_overrides"]):
                self.backend = wandb.init(
                    project=self.settings.project,
                    name=name,
                    mode=self.settings.mode,
                    dir=self.settings.uri,
                    config=params,
                    reinit="finish_previous",
                )
        else:
            # The client with an explicit run id, not mlflow's fluent API: that keeps the
            # active run per thread, and progress comes from the driver's poller thread.
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.settings.uri)
            experiment = client.get_experiment_by_name(self.settings.project)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else client.create_experiment(self.settings.project)
            )
            self.run_id = client.create_run(experiment_id, run_name=name).info.run_id
            flat = [Param(k, str(v)[:500]) for k, v in _flat(params).items()]
            for i in range(0, len(flat), 100):  # mlflow takes at most 100 params a batch
                client.log_batch(self.run_id, params=flat[i : i + 100])
            self.backend = client

    def progress(self, report: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.backend is None or now - self._last < self.settings.every_s:
            return
        self._last = now
        self._guarded(self._log, _figures(report))

    def finish(self, result: Any) -> None:
        if self.backend is None:
            return
        self._guarded(self._final, result)
        self._guarded(self._close)

    # ---------------------------------------------------------------- backends

    def _log(self, figures: dict[str, float]) -> None:
        self.step += 1
        if self.kind == "wandb":
            self.backend.log(figures, step=self.step)
        else:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            metrics = [Metric(k, v, stamp, self.step) for k, v in figures.items()]
            self.backend.log_batch(self.run_id, metrics=metrics)

    def _final(self, result: Any) -> None:
        figures = _figures(result.progress)
        figures["wall_s"] = float(result.wall_s)
        self._log(figures)
        columns, rows = _sample(self.config.output, self.settings.sample_rows)
        hists = {
            name: (counts.get("stats") or {}).get("reward", {}).get("histogram")
            for name, counts in result.datasets.items()
        }
        if self.kind == "wandb":
            import wandb

            self.backend.summary.update({**figures, "status": result.status})
            if rows:
                self.backend.log({"samples": wandb.Table(columns=columns, data=rows)})
            for name, hist in hists.items():
                if hist:
                    table = wandb.Table(columns=["reward", "count"], data=list(hist.items()))
                    self.backend.log({f"{name}/reward_histogram": table})
        else:
            self.backend.set_tag(self.run_id, "status", result.status)
            if rows:
                data = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
                self.backend.log_table(self.run_id, data=data, artifact_file="samples.json")
            for name, hist in hists.items():
                if hist:
                    self.backend.log_dict(self.run_id, hist, f"reward_histogram/{name}.json")

    def _close(self) -> None:
        if self.kind == "wandb":
            self.backend.finish()
        else:
            self.backend.set_terminated(self.run_id)
        self.backend = None

    def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # tracking must never stop a job
            log.warning("%s tracking stopped: %s: %s", self.kind, type(exc).__name__, exc)
            self.backend = None


def open_tracker(config: JobConfig) -> Tracker | None:
    """The run's tracker, started; None without `tracking`.

    Raises:
        ConfigError: the tracker's package is not installed.
    """
    settings = config.tracking
    if settings is None:
        return None
    package = "wandb" if settings.kind == "wandb" else "mlflow"
    try:
        __import__(package)
    except ImportError:
        raise ConfigError(
            f"tracking.kind {settings.kind} needs the {package} package: pip install "
            f"{package if package == 'wandb' else 'mlflow-skinny'}"
        ) from None
    tracker = Tracker(settings, config)
    tracker._guarded(tracker.start)
    return tracker


def _figures(report: dict[str, Any]) -> dict[str, float]:
    """Numbers worth a chart: the run's rate and counts, per dataset its counts and the
    mean of the reward and of each numeric verifier field."""
    out: dict[str, float] = {}
    run = report.get("run") or {}
    for key in ("done", "todo", "output_tokens", "output_tokens_per_s", "rollouts_per_s"):
        if isinstance(run.get(key), int | float):
            out[f"run/{key}"] = float(run[key])
    for name, counts in (report.get("datasets") or {}).items():
        for key in ("ok", "failed", "output_tokens"):
            if isinstance(counts.get(key), int | float):
                out[f"{name}/{key}"] = float(counts[key])
        for field, stats in (counts.get("stats") or {}).items():
            if isinstance(stats, dict) and stats.get("mean") is not None:
                out[f"{name}/{field}_mean"] = float(stats["mean"])
    return out


def _sample(output: str, n: int) -> tuple[list[str], list[list[Any]]]:
    """The first `n` committed rollouts: dataset, task, prompt, response, reward."""
    columns = ["dataset", "task_id", "prompt", "response", "reward"]
    if n <= 0:
        return columns, []
    from rollout_ray.output import results

    rows: list[list[Any]] = []
    wanted = ["dataset", "task_id", "prompt_messages", "response_text", "reward"]
    for table in results.iter_shards(output, None, wanted):
        for r in table.slice(0, n - len(rows)).to_pylist():
            prompt = (r["prompt_messages"] or [{}])[-1].get("content") or ""
            response = r["response_text"] or ""
            reward = r["reward"] if r["reward"] == r["reward"] else None
            rows.append(
                [r["dataset"], r["task_id"], prompt[:SAMPLE_CHARS], response[:SAMPLE_CHARS], reward]
            )
        if len(rows) >= n:
            break
    return columns, rows


@contextlib.contextmanager
def _argv_masked(given: list[str], masked: list[str]) -> Iterator[None]:
    """sys.argv with each override given on the command line replaced by its masked
    form (as job.json has it) and any known secret redacted, for as long as it lasts."""
    from rollout_ray.secrets import redact

    shown = dict(zip(given, masked, strict=False))
    original = sys.argv
    sys.argv = [original[0], *(redact(shown.get(arg, arg)) for arg in original[1:])]
    try:
        yield
    finally:
        sys.argv = original


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}
