"""RL export: token ids, logprobs, rewards and GRPO group advantages for offline RL."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rollout_ray.exports.splits import SplitWriter
from rollout_ray.exports.writer import (
    ExportReport,
    Groups,
    Outputs,
    check_datasets,
    group_by_task,
    output_format,
    rewards,
    shards,
)
from rollout_ray.output.schema import SAMPLING

#: Added to the std before dividing, as TRL's GRPOTrainer does.
EPS = 1e-4
SCALES = ("group", "none")
TOKEN_COLUMNS = ["prompt_token_ids", "output_token_ids", "output_logprobs"]
COLUMNS = [
    "dataset",
    "task_id",
    "rollout_index",
    *TOKEN_COLUMNS,
    "output_mask",
    "reward",
    "model",
    "sampling",
    "finish_reason",
]

SCHEMA = pa.schema(
    [
        ("task_id", pa.string()),
        ("rollout_index", pa.int32()),
        ("dataset", pa.string()),
        ("prompt_token_ids", pa.list_(pa.int32())),
        ("response_token_ids", pa.list_(pa.int32())),
        ("response_logprobs", pa.list_(pa.float32())),
        # 1 on the model's own tokens, 0 on tool outputs and template text between the
        # turns of an agent episode (all 1 for a single turn): the loss mask.
        ("response_mask", pa.list_(pa.int8())),
        ("reward", pa.float64()),
        ("advantage", pa.float64()),
        ("group_size", pa.int32()),
        ("model", pa.string()),
        ("sampling", SAMPLING),
        ("finish_reason", pa.string()),
    ]
)


def export_rl(
    output: Outputs,
    dest: str,
    *,
    scale: str = "group",
    datasets: list[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    shuffle: bool = False,
) -> ExportReport:
    """Write one row per scored rollout with its group-relative advantage.

    A task's scored rollouts form its group (null rewards are skipped, as TRL's nanmean
    skips them). scale="group": (r - mean) / (std + 1e-4) with the sample std (ddof=1),
    TRL's default; scale="none": r - mean (Dr. GRPO). A group of one, or one whose
    rewards are all equal, gets advantage 0: it carries no signal about which is better.

    Raises:
        ValueError: the job didn't keep token ids and logprobs.
    """
    output_format(dest)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    datasets = check_datasets(output, datasets)
    tasks = unscored = 0
    with SplitWriter(dest, SCHEMA, val_fraction, seed, shuffle) as writer:
        for shard in shards(output, datasets, COLUMNS):
            _require_tokens(shard, output)
            groups = group_by_task(shard)
            tasks += groups.count
            reward = rewards(groups.table)
            scored = ~np.isnan(reward)
            unscored += int((~scored).sum())
            advantage, size = advantages(groups, reward, scale)
            rows = pa.array(np.flatnonzero(scored))
            writer.write(_rows(groups.table.take(rows), advantage[scored], size[scored]))
    return ExportReport(
        kind="rl",
        dest=dest,
        rows_written=writer.rows,
        tasks_seen=tasks,
        extra={"skipped_unscored": unscored, "scale": scale, "eps": EPS, **writer.report()},
    )


def advantages(groups: Groups, reward: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """(advantage, group size) per row, over each task's scored (non-NaN) rewards."""
    scored = ~np.isnan(reward)
    values = np.where(scored, reward, 0.0)
    size = groups.reduce(np.add, scored.astype(np.int64))
    mean = groups.reduce(np.add, values) / np.maximum(size, 1)
    centred = np.where(scored, values - mean[groups.gid], 0.0)
    high = groups.reduce(np.maximum, np.where(scored, reward, -np.inf))
    low = groups.reduce(np.minimum, np.where(scored, reward, np.inf))
    flat = (size < 2) | (high <= low)
    advantage = centred
    if scale == "group":
        squares = groups.reduce(np.add, centred * centred)
        std = np.sqrt(squares / np.maximum(size - 1, 1))
        advantage = centred / (std[groups.gid] + EPS)
    advantage = np.where(flat[groups.gid], 0.0, advantage)
    return advantage, size[groups.gid]


def _require_tokens(shard: pa.Table, output: str) -> None:
    """One clear error for the whole export, not one per row."""
    missing = [name for name in TOKEN_COLUMNS if pc.sum(pc.is_null(shard[name])).as_py()]
    if missing:
        raise ValueError(
            f"the rl export needs token ids and logprobs, but rollouts in {output} have no "
            f"{', '.join(missing)}. Rerun the job with "
            "sampling.return_token_ids=true sampling.logprobs=true (into a new output)."
        )


def _loss_mask(rows: pa.Table) -> pa.Array:
    """The episode's mask, or all ones for a single-turn rollout (no mask stored)."""
    masks = rows["output_mask"].to_pylist()
    lengths = pc.list_value_length(rows["output_token_ids"]).to_pylist()
    filled = [m if m is not None else [1] * (n or 0) for m, n in zip(masks, lengths, strict=True)]
    return pa.array(filled, pa.list_(pa.int8()))


def _rows(rows: pa.Table, advantage: np.ndarray, size: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "task_id": rows["task_id"],
            "rollout_index": rows["rollout_index"],
            "dataset": rows["dataset"],
            "prompt_token_ids": rows["prompt_token_ids"],
            "response_token_ids": rows["output_token_ids"],
            "response_logprobs": rows["output_logprobs"],
            "response_mask": _loss_mask(rows),
            "reward": rows["reward"],
            "advantage": pa.array(advantage, pa.float64()),
            "group_size": pa.array(size.astype(np.int32), pa.int32()),
            "model": rows["model"],
            "sampling": rows["sampling"],
            "finish_reason": rows["finish_reason"],
        }
    )
