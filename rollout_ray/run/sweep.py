"""Parameter sweeps: the comparison table at the end of a job with a `sweep:` block.

The sweep itself is a config expansion (each dataset x setting becomes a dataset
variant with its own name and output prefix), so the engines are shared by every
setting of one job; this module only compares the settings once they are done
(views/summary.py shows the comparison).
"""

from __future__ import annotations

from typing import Any

from rollout_ray.config import JobConfig


def comparison(config: JobConfig, progress: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (dataset, setting): reward, pass@k, tokens and speed.

    Args:
        config: the job (its datasets are the sweep's variants).
        progress: the finished run's progress (per-dataset counts and statistics).
    """
    from rollout_ray.exports.evaluation import eval_metrics

    variants = [d for d in config.datasets if d.sweep_setting is not None]
    if not variants:
        return []
    scored = [d.name for d in variants if d.verifier is not None]
    metrics = eval_metrics(config.output, datasets=scored)["datasets"] if scored else {}
    rows = []
    for dataset in variants:
        counts = progress["datasets"].get(dataset.name, {})
        reward = (counts.get("stats") or {}).get("reward") or {}
        ok = counts.get("ok", 0)
        evals = metrics.get(dataset.name, {}).get("metrics", {})
        rows.append(
            {
                "dataset": dataset.sweep_base_name,
                "setting": dataset.sweep_setting,
                "rollouts": ok,
                "failed": counts.get("failed", 0),
                "mean_reward": reward.get("mean"),
                "reward_std": reward.get("std"),
                "pass_at": {
                    k.split("@")[1]: v["value"] for k, v in evals.items() if k.startswith("pass@")
                },
                "output_tokens": counts.get("output_tokens", 0),
                "tokens_per_rollout": counts.get("output_tokens", 0) / ok if ok else None,
                "latency_s": ((counts.get("stats") or {}).get("latency_s") or {}).get("mean"),
            }
        )
    return rows
