"""Running statistics of rewards and numeric verifier fields, mergeable across pieces.

Each commit record carries its piece's statistics (count, sum, sum of squares, min,
max and a reward histogram), so a job's aggregates come from its commit records alone:
the end-of-job summary never rereads the rollouts.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

#: Reward histogram bins, as Prometheus buckets count (upper bound included):
#: <= 0, then (0, 0.1], (0.1, 0.2], ..., (0.9, 1], then above 1.
HIST_LABELS = ["<=0"] + [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)] + [">1"]
HIST_BINS = len(HIST_LABELS)


def bin_indices(values: np.ndarray) -> np.ndarray:
    """The histogram bin of each value (vectorised)."""
    tenths = np.ceil(np.round(np.clip(values, 0, 1) * 10, 9)).astype(np.int64)
    return np.where(values <= 0, 0, np.where(values > 1, HIST_BINS - 1, tenths))


def _bin(value: float) -> int:
    return int(bin_indices(np.array([value], dtype=np.float64))[0])


def empty() -> dict[str, Any]:
    return {"n": 0, "sum": 0.0, "sumsq": 0.0, "min": None, "max": None}


def add(stats: dict[str, Any], value: float) -> None:
    stats["n"] += 1
    stats["sum"] += value
    stats["sumsq"] += value * value
    stats["min"] = value if stats["min"] is None else min(stats["min"], value)
    stats["max"] = value if stats["max"] is None else max(stats["max"], value)


def merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Fold `other`'s statistics (per field) into `into`."""
    for name, stats in other.items():
        target = into.setdefault(
            name, {**empty(), **({"hist": [0] * HIST_BINS} if "hist" in stats else {})}
        )
        target["n"] += stats["n"]
        target["sum"] += stats["sum"]
        target["sumsq"] += stats["sumsq"]
        for key, pick in (("min", min), ("max", max)):
            if stats[key] is not None:
                target[key] = stats[key] if target[key] is None else pick(target[key], stats[key])
        if "hist" in stats:
            target["hist"] = [a + b for a, b in zip(target["hist"], stats["hist"], strict=True)]


def piece_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics of a piece's successful rollouts: reward, latency and numeric verifier
    fields (as `verifier.<name>`)."""
    stats: dict[str, Any] = {}
    for record in records:
        if record.get("latency_s") is not None:
            add(stats.setdefault("latency_s", empty()), float(record["latency_s"]))
        reward = record.get("reward")
        if reward is not None:
            reward_stats = stats.setdefault("reward", {**empty(), "hist": [0] * HIST_BINS})
            add(reward_stats, float(reward))
            reward_stats["hist"][_bin(float(reward))] += 1
        details = record.get("verifier_details")
        if not details:
            continue
        for name, value in json.loads(details).items():
            if isinstance(value, bool):
                value = float(value)
            if isinstance(value, int | float) and math.isfinite(value):
                add(stats.setdefault(f"verifier.{name}", empty()), float(value))
    return stats


def summarize(stats: dict[str, Any]) -> dict[str, Any]:
    """mean/std/min/max (and the histogram) of each field's statistics."""
    out = {}
    for name, s in stats.items():
        n = s["n"]
        mean = s["sum"] / n if n else None
        var = max(0.0, s["sumsq"] / n - mean * mean) if n else None
        out[name] = {
            "count": n,
            "mean": mean,
            "std": math.sqrt(var * n / (n - 1)) if n and n > 1 else (0.0 if n else None),
            "min": s["min"],
            "max": s["max"],
            **({"histogram": histogram_labels(s["hist"])} if "hist" in s else {}),
        }
    return out


def histogram_labels(counts: list[int]) -> dict[str, int]:
    """Labelled bins; the out-of-range bin above 1 only when it holds something."""
    return {
        label: count
        for label, count in zip(HIST_LABELS, counts, strict=True)
        if count or label != ">1"
    }
