"""Mix export: one shuffled training file drawn from several datasets by weight.

Each dataset contributes its share of `total` rollouts, sampled uniformly from its
committed rollouts (a seeded reservoir per dataset, so memory holds the output only),
then the mix is shuffled and written in the SFT layout.
"""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pyarrow as pa

from rollout_ray import storage
from rollout_ray.exports.sft import check_row_format, examples, schema
from rollout_ray.exports.writer import (
    ExportReport,
    TableWriter,
    check_datasets,
    check_number,
    output_format,
    rewards,
    shards,
)
from rollout_ray.output import manifest
from rollout_ray.output.manifest import Layout

COLUMNS = ["dataset", "task_id", "rollout_index", "prompt_messages", "response_text", "reward"]


def export_mix(
    output: str,
    dest: str,
    *,
    weights: dict[str, float] | None = None,
    total: int | None = None,
    threshold: float | None = None,
    seed: int = 0,
    datasets: list[str] | None = None,
    format: str = "messages",
) -> ExportReport:
    """Write a shuffled mix of the datasets' rollouts in an SFT layout (`format`:
    messages or prompt-completion, as the sft export).

    Args:
        weights: share of each dataset (normalised); default: the datasets' `weight` in
            the job's config, else equal shares.
        total: rows in the mix; default: as many as the scarcest dataset allows at its
            share.
        threshold: use only rollouts with reward >= threshold.
        seed: the sampling and the shuffle are reproducible for a seed.
    """
    output_format(dest)
    check_row_format(format)
    if threshold is not None:
        threshold = check_number("threshold", threshold)
    if not isinstance(output, str):
        raise ValueError("the mix export takes one output (its weights come from its config)")
    weights = _weights(output, check_datasets(output, datasets) or None, weights)
    rng = random.Random(seed)
    pools = {name: _Reservoir(rng) for name in weights}
    scored = dict.fromkeys(weights, 0)  # rollouts with a reward, per dataset
    highest: dict[str, float | None] = dict.fromkeys(weights)
    for shard in shards(output, list(weights), COLUMNS):
        reward = rewards(shard)
        keep = np.ones(shard.num_rows, dtype=bool)
        if threshold is not None:
            keep = ~np.isnan(reward) & (reward >= threshold)
        names = np.asarray(shard["dataset"].to_pylist(), dtype=object)
        for name, pool in pools.items():
            mine = names == name
            rows = [int(i) for i in np.flatnonzero(keep & mine)]
            if rows:
                pool.offer_all(shard, rows)
            values = reward[mine & ~np.isnan(reward)]
            scored[name] += len(values)
            if len(values):
                highest[name] = max(float(values.max()), highest[name] or -np.inf)
    available = {name: pool.seen for name, pool in pools.items()}
    if not all(available.values()):
        # A dataset with nothing to offer makes the mix empty: say which (exports.empty).
        quotas = dict.fromkeys(weights, 0)
    else:
        quotas = _quotas(weights, available, total)
    rows: list[tuple[pa.Table, int]] = []
    for name, pool in pools.items():
        rows += pool.sample(quotas[name])
    rng.shuffle(rows)
    layout = schema(format)
    with TableWriter(dest, layout) as writer:
        for start in range(0, len(rows), 10_000):
            chunk = rows[start : start + 10_000]
            table = pa.concat_tables([t.slice(i, 1) for t, i in chunk]) if chunk else None
            if table is not None:
                writer.write(examples(table).select(layout.names))
    return ExportReport(
        kind="mix",
        dest=dest,
        rows_written=writer.rows,
        tasks_seen=len({(t["dataset"][i].as_py(), t["task_id"][i].as_py()) for t, i in rows}),
        extra={
            "weights": weights,
            "available": available,
            "taken": quotas,
            "seed": seed,
            "threshold": threshold,
            "scored": scored,
            "highest_reward": highest,
        },
    )


class _Reservoir:
    """A uniform sample of offered rows, of any size asked for later (Algorithm R with a
    cap): keeps at most `cap` rows, enough for any quota up to it."""

    cap = 1_000_000

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.kept: list[tuple[pa.Table, int]] = []
        self.seen = 0

    def offer_all(self, table: pa.Table, rows: list[int]) -> None:
        """Offer rows of one shard; the kept ones are copied out, so the shard's memory
        is not held by the sample."""
        chosen: list[tuple[int | None, int]] = []  # (slot to replace or None, row)
        for row in rows:
            self.seen += 1
            if len(self.kept) + sum(s is None for s, _ in chosen) < self.cap:
                chosen.append((None, row))
            else:
                slot = self.rng.randrange(self.seen)
                if slot < self.cap:
                    chosen.append((slot, row))
        if not chosen:
            return
        copied = table.take(pa.array([row for _, row in chosen]))
        for j, (slot, _) in enumerate(chosen):
            if slot is None:
                self.kept.append((copied, j))
            else:
                self.kept[slot] = (copied, j)

    def sample(self, k: int) -> list[tuple[pa.Table, int]]:
        return self.rng.sample(self.kept, min(k, len(self.kept)))


def _weights(
    output: str, datasets: list[str] | None, weights: dict[str, float] | None
) -> dict[str, float]:
    if weights is None:
        job = storage.read_json(Layout(output).job)
        weights = {d["name"]: d.get("weight") or 1.0 for d in job["config"]["datasets"]}
        if datasets:
            weights = {k: v for k, v in weights.items() if k in datasets}
    known = {piece.dataset for piece in manifest.read_commits(Layout(output))}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(f"no committed rollouts for dataset(s) {', '.join(unknown)}")
    bad = {k: v for k, v in weights.items() if not isinstance(v, int | float) or v <= 0}
    if bad or not weights:
        raise ValueError(f"weights must be positive numbers per dataset, got {weights!r}")
    return {k: float(v) for k, v in weights.items()}


def _quotas(weights: dict[str, float], available: dict[str, int], total: int | None) -> dict:
    """Rows per dataset: shares of `total` (largest-remainder rounding), never more than a
    dataset has; without a total, the largest mix every dataset can fill at its share."""
    share = {k: v / sum(weights.values()) for k, v in weights.items()}
    if total is None:
        total = int(min(available[k] / share[k] for k in share))
    elif isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ValueError(f"total must be a non-negative integer, got {total!r}")
    exact = {k: total * s for k, s in share.items()}
    quotas = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - quotas[k], reverse=True):
        if sum(quotas.values()) >= total:
            break
        quotas[k] += 1
    short = {k: (q, available[k]) for k, q in quotas.items() if q > available[k]}
    if short:
        raise ValueError(
            "not enough rollouts for the mix: "
            + ", ".join(f"{k} needs {q}, has {a}" for k, (q, a) in short.items())
            + f" ({json.dumps(weights)} of {total}); lower the total or add rollouts"
        )
    return quotas
