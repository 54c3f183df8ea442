"""What a job costs, and what a full job will cost judging by a pilot of a few rows.

Token prices cover hosted APIs; a GPU-hour price covers own or rented hardware (the
GPUs the engine actors hold, for the job's wall time). `--pilot N` runs N rows of
each dataset into a side output and projects tokens, time and cost of the full plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollout_ray.config import JobConfig


def job_gpus(config: JobConfig) -> float:
    """GPUs the job holds while it runs."""
    if config.cost and config.cost.gpus is not None:
        return config.cost.gpus
    return config.engine.gpus_per_actor() * config.engine.concurrency


def cost_of(config: JobConfig, datasets: dict[str, dict[str, Any]], wall_s: float) -> dict:
    """Cost figures for token counts per dataset and a wall time."""
    prices = config.cost
    if prices is None:
        return {}
    per_dataset = {}
    for name, counts in datasets.items():
        per_dataset[name] = round(
            counts["prompt_tokens"] / 1e6 * prices.input_per_million
            + counts["output_tokens"] / 1e6 * prices.output_per_million,
            6,
        )
    gpu_hours = job_gpus(config) * wall_s / 3600
    hardware = gpu_hours * prices.gpu_hour
    return {
        "currency": prices.currency,
        "tokens": round(sum(per_dataset.values()), 6),
        "tokens_by_dataset": per_dataset,
        "gpu_hours": round(gpu_hours, 6),
        "hardware": round(hardware, 6),
        "total": round(sum(per_dataset.values()) + hardware, 6),
    }


@dataclass
class Projection:
    """A pilot's figures scaled to the full plan."""

    pilot_rollouts: int
    full_rollouts: int
    prompt_tokens: int
    output_tokens: int
    seconds: float
    startup_s: float
    cost: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def project(
    config: JobConfig,
    pilot: dict[str, Any],
    full_rollouts: dict[str, int],
    launched_at: float,
) -> Projection:
    """Scale a pilot run's per-rollout tokens and its steady rate to the full plan.

    Args:
        config: the full job.
        pilot: the pilot run's metrics (as run_job writes them).
        full_rollouts: rollouts per dataset in the full plan.
        launched_at: when the pilot run started (epoch seconds).
    """
    datasets = pilot["datasets"]
    prompt = output = 0.0
    projected: dict[str, dict[str, Any]] = {}
    for name, total in full_rollouts.items():
        counts = datasets.get(name) or {}
        done = counts.get("ok", 0)
        per_prompt = counts.get("prompt_tokens", 0) / done if done else 0.0
        per_output = counts.get("output_tokens", 0) / done if done else 0.0
        projected[name] = {"prompt_tokens": per_prompt * total, "output_tokens": per_output * total}
        prompt += per_prompt * total
        output += per_output * total
    run = pilot["run"]
    first = run.get("first_piece_at") or launched_at
    startup = max(0.0, first - launched_at)
    steady = max(pilot["wall_s"] - startup, 1e-6)
    rate = run["done"] / steady if run.get("done") else 0.0
    total = sum(full_rollouts.values())
    seconds = startup + (total / rate if rate else float("inf"))
    return Projection(
        pilot_rollouts=run.get("done", 0),
        full_rollouts=total,
        prompt_tokens=int(prompt),
        output_tokens=int(output),
        seconds=seconds,
        startup_s=startup,
        cost=cost_of(config, projected, seconds),
    )
