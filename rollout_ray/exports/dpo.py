"""DPO export: per task, the best and worst scored rollouts as one TRL preference pair."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rollout_ray.exports.conversations import (
    EPISODE_COLUMNS,
    TOOL_MESSAGES,
    completion_lists,
    is_agent_job,
    prompt_lists,
)
from rollout_ray.exports.sft import assistant_lists
from rollout_ray.exports.splits import SplitWriter
from rollout_ray.exports.writer import (
    MESSAGES,
    SCORED_COLUMNS,
    ExportReport,
    Outputs,
    answer_texts,
    check_datasets,
    check_number,
    group_by_task,
    output_format,
    rewards,
    shards,
)

#: TRL's conversational preference format (explicit prompt) plus provenance.
SCHEMA = pa.schema(
    [
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("reward_chosen", pa.float64()),
        ("reward_rejected", pa.float64()),
        ("reward_gap", pa.float64()),
        ("task_id", pa.string()),
        ("dataset", pa.string()),
        ("chosen_rollout_index", pa.int32()),
        ("rejected_rollout_index", pa.int32()),
    ]
)
#: The same for agent jobs: whole episodes (TRL's tool-calling format) and the tools.
TOOL_SCHEMA = pa.schema(
    [
        (f.name, TOOL_MESSAGES if f.name in ("prompt", "chosen", "rejected") else f.type)
        for f in SCHEMA
    ]
    + [("tools", pa.string())]
)


def export_dpo(
    output: Outputs,
    dest: str,
    *,
    min_gap: float = 0.0,
    datasets: list[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    shuffle: bool = False,
    keep_reasoning: bool = False,
) -> ExportReport:
    """Write one preference pair per task whose scored rollouts differ enough.

    chosen = the highest reward, rejected = the lowest; among equal rewards the lowest
    rollout_index is taken for each, so a rerun builds the same pairs. Unscored (null)
    rollouts are ignored. A task makes a pair only when it has >= 2 scored rollouts and
    reward_chosen - reward_rejected > 0 and >= min_gap: equal rewards carry no preference.
    Each pair has its reward_gap; the report gives the pairs' mean chosen, rejected and
    gap rewards.
    Split and order (see exports/splits.py): val_fraction sends that share of tasks
    (by a hash of seed, dataset, task id: no task on both sides) to DEST's `.val`
    sibling; shuffle writes rows in a seeded random order. keep_reasoning puts a
    reasoning parser's thinking back before each answer (default: the answer only).
    """
    output_format(dest)
    min_gap = check_number("min_gap", min_gap, minimum=0.0)
    datasets = check_datasets(output, datasets)
    tasks = fewer = equal = small = 0
    agents = is_agent_job(output)
    schema, columns = (
        (TOOL_SCHEMA, SCORED_COLUMNS + EPISODE_COLUMNS) if agents else (SCHEMA, SCORED_COLUMNS)
    )
    sums = np.zeros(3)  # chosen, rejected, gap
    with SplitWriter(dest, schema, val_fraction, seed, shuffle) as writer:
        for shard in shards(output, datasets, columns):
            groups = group_by_task(shard)
            tasks += groups.count
            reward = rewards(groups.table)
            scored = ~np.isnan(reward)
            counts = groups.reduce(np.add, scored.astype(np.int64))
            high = groups.reduce(np.maximum, np.where(scored, reward, -np.inf))
            low = groups.reduce(np.minimum, np.where(scored, reward, np.inf))
            enough = counts >= 2
            gap = np.where(enough, high - low, 0.0)
            is_equal = enough & (gap <= 0)
            is_small = enough & (gap > 0) & (gap < min_gap)
            paired = enough & (gap > 0) & (gap >= min_gap)
            fewer += int((~enough).sum())
            equal += int(is_equal.sum())
            small += int(is_small.sum())
            gid = groups.gid
            chosen_groups, chosen = groups.first_where(scored & (reward == high[gid]))
            rejected_groups, rejected = groups.first_where(scored & (reward == low[gid]))
            # Both cover every group with a scored rollout, in group order: align by mask.
            chosen = chosen[paired[chosen_groups]]
            rejected = rejected[paired[rejected_groups]]
            made = _pairs(groups.table, chosen, rejected, agents, keep_reasoning)
            for i, name in enumerate(("reward_chosen", "reward_rejected", "reward_gap")):
                sums[i] += float(np.nansum(made[name].to_numpy(zero_copy_only=False)))
            writer.write(made)
    pairs = writer.rows + writer.val_rows
    means = sums / pairs if pairs else [None] * 3
    return ExportReport(
        kind="dpo",
        dest=dest,
        rows_written=writer.rows,  # in DEST; the validation file's are val_rows
        tasks_seen=tasks,
        extra={
            "tasks_seen": tasks,
            "pairs": pairs,
            "pair_share": pairs / tasks if tasks else None,
            "skipped_all_equal": equal,
            "skipped_gap_below_min": small,
            "skipped_fewer_than_2_scored": fewer,
            "min_gap": min_gap,
            "mean_reward_chosen": means[0],
            "mean_reward_rejected": means[1],
            "mean_reward_gap": means[2],
            **writer.report(),
        },
    )


def _pairs(
    table: pa.Table,
    chosen: np.ndarray,
    rejected: np.ndarray,
    agents: bool = False,
    keep_reasoning: bool = False,
) -> pa.Table:
    """Preference rows in SCHEMA (TOOL_SCHEMA for agent jobs: whole episodes) from the
    row positions of chosen and rejected rollouts."""
    best = table.take(pa.array(chosen))
    worst = table.take(pa.array(rejected))
    extra = {}
    if agents:
        prompt = prompt_lists(best)
        good, bad = completion_lists(best), completion_lists(worst)
        extra["tools"] = best["episode_tools"]
    else:
        prompt = best["prompt_messages"]
        good = assistant_lists(answer_texts(best, keep_reasoning))
        bad = assistant_lists(answer_texts(worst, keep_reasoning))
    return pa.table(
        {
            "prompt": prompt,
            "chosen": good,
            "rejected": bad,
            "reward_chosen": best["reward"],
            "reward_rejected": worst["reward"],
            "reward_gap": pc.subtract(best["reward"], worst["reward"]),
            "task_id": best["task_id"],
            "dataset": best["dataset"],
            "chosen_rollout_index": best["rollout_index"],
            "rejected_rollout_index": worst["rollout_index"],
            **extra,
        }
    )
