"""`inspect --write`: the rollouts an inspect selection matches, as a JSONL file (to
look at in another tool, re-label, or train on a slice)."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.compute as pc

from rollout_ray import storage
from rollout_ray.output import results
from rollout_ray.output.schema import decode_rows


def write_selection(
    output: str,
    dest: str,
    datasets: list[str] | None = None,
    task: str | None = None,
    min_reward: float | None = None,
    max_reward: float | None = None,
) -> int:
    """Write every committed rollout matching the filters to `dest` (.jsonl), one JSON
    object per line with the row's own fields decoded; returns how many.

    A reward filter keeps only scored rollouts (an unscored one is neither above nor
    below a bound). The file appears whole or not at all.
    """
    if not dest.endswith(".jsonl"):
        raise ValueError(f"--write takes a .jsonl file, got {dest!r}")
    lines: list[str] = []
    for table in results.iter_shards(output, datasets):
        table = _filter(table, task, min_reward, max_reward)
        for row in decode_rows(table):
            lines.append(json.dumps(_plain(row), ensure_ascii=False, default=str))
    storage.write_bytes_atomic(dest, ("\n".join(lines) + "\n" if lines else "").encode())
    return len(lines)


def _filter(table: pa.Table, task: str | None, low: float | None, high: float | None) -> pa.Table:
    keep = pa.array([True] * table.num_rows)
    if task:
        keep = pc.and_(keep, pc.starts_with(table["task_id"], task))
    reward = table["reward"]
    if low is not None:
        keep = pc.and_(keep, pc.fill_null(pc.greater_equal(reward, low), False))
    if high is not None:
        keep = pc.and_(keep, pc.fill_null(pc.less_equal(reward, high), False))
    return table.filter(keep)


def _plain(row: dict) -> dict:
    """NaN rewards (unscored) as null: JSON has no NaN."""
    reward = row.get("reward")
    if isinstance(reward, float) and math.isnan(reward):
        row["reward"] = None
    return row
