"""SFT export: rollouts (optionally filtered by reward) as TRL conversational examples."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rollout_ray.exports.conversations import (
    EPISODE_COLUMNS,
    TOOL_MESSAGES,
    completion_lists,
    conversation_lists,
    is_agent_job,
    prompt_lists,
)
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
from rollout_ray.output.schema import MESSAGE

#: TRL's two conversational layouts (its `is_conversational` shapes): `messages`, the
#: whole conversation (language modeling: loss on every token unless the trainer masks
#: the prompt), or `prompt` + `completion` (loss on the completion only). A row holds one
#: of them: TRL's `maybe_apply_chat_template` refuses a row with both ("Invalid keys").
FORMATS = ("messages", "prompt-completion")
#: Where each row came from, beside the conversation.
PROVENANCE = [
    ("task_id", pa.string()),
    ("rollout_index", pa.int32()),
    ("dataset", pa.string()),
    ("reward", pa.float64()),
]


def schema(format: str = "messages", tools: bool = False) -> pa.Schema:
    """The rows' schema in `format`; `tools`: an agent job's multi-turn messages with
    tool calls, and the tools offered."""
    messages = TOOL_MESSAGES if tools else MESSAGES
    names = ["messages"] if format == "messages" else ["prompt", "completion"]
    fields = [(name, messages) for name in names] + PROVENANCE
    return pa.schema(fields + ([("tools", pa.string())] if tools else []))


#: The default layout's schema (the mix export writes it).
SCHEMA = schema()


def export_sft(
    output: Outputs,
    dest: str,
    *,
    threshold: float | None = None,
    best_of_n: bool = False,
    datasets: list[str] | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    shuffle: bool = False,
    keep_reasoning: bool = False,
    format: str = "messages",
) -> ExportReport:
    """Write SFT examples from committed rollouts, in one of TRL's conversational
    layouts (`format`, see FORMATS): `messages` (default) or `prompt-completion`.

    Filters (combinable; a null reward fails both, since it can't be ranked):
      threshold: keep rollouts with reward >= threshold (rejection sampling).
      best_of_n: keep one rollout per task, the highest reward; among equal rewards the
        lowest rollout_index, so reruns pick the same one. With a threshold, the best
        rollout must also pass it.
    Split and order (see exports/splits.py): val_fraction sends that share of tasks
    (by a hash of seed, dataset, task id: no task on both sides) to DEST's `.val`
    sibling; shuffle writes rows in a seeded random order. keep_reasoning puts a
    reasoning parser's thinking back before each answer (default: the answer only).
    """
    output_format(dest)
    check_row_format(format)
    if threshold is not None:
        threshold = check_number("threshold", threshold)
    if not isinstance(best_of_n, bool):
        raise ValueError(f"best_of_n must be true or false, got {best_of_n!r}")
    datasets = check_datasets(output, datasets)
    filtered = threshold is not None or best_of_n
    tasks = rollouts = unscored = below = 0
    highest = -np.inf  # the best reward seen, for "nothing reaches the threshold"
    agents = is_agent_job(output)
    columns = SCORED_COLUMNS + EPISODE_COLUMNS if agents else SCORED_COLUMNS
    layout = schema(format, agents)
    with SplitWriter(dest, layout, val_fraction, seed, shuffle) as writer:
        for shard in shards(output, datasets, columns):
            groups = group_by_task(shard)
            tasks += groups.count
            rollouts += shard.num_rows
            reward = rewards(groups.table)
            if (~np.isnan(reward)).any():
                highest = max(highest, float(np.nanmax(reward)))
            keep = np.ones(len(reward), dtype=bool)
            if filtered:
                keep = ~np.isnan(reward)
                unscored += int((~keep).sum())
            if threshold is not None:
                passing = keep & (reward >= threshold)
                below += int((keep & ~passing).sum())
                keep = passing
            if best_of_n:
                candidate = np.where(keep, reward, -np.inf)
                best = groups.reduce(np.maximum, candidate)
                _, rows = groups.first_where(keep & (candidate == best[groups.gid]))
            else:
                rows = np.flatnonzero(keep)
            selected = groups.table.take(pa.array(rows))
            answers = answer_texts(selected, keep_reasoning)
            rows = _episodes(selected) if agents else examples(selected, answers)
            writer.write(rows.select(layout.names))
    return ExportReport(
        kind="sft",
        dest=dest,
        rows_written=writer.rows,
        tasks_seen=tasks,
        extra={
            "rollouts_seen": rollouts,
            "skipped_unscored": unscored,
            "below_threshold": below,
            "threshold": threshold,
            "best_of_n": best_of_n,
            "format": format,
            "highest_reward": highest if highest > -np.inf else None,
            **writer.report(),
        },
    )


def check_row_format(row_format: str) -> None:
    if row_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {row_format!r}")


def examples(rows: pa.Table, answers: pa.Array | pa.ChunkedArray | None = None) -> pa.Table:
    """SFT rows in both layouts for selected rollouts (`answers`: the assistant texts, by
    default the responses); a writer selects the columns of one."""
    if answers is None:
        answers = rows["response_text"]
    return pa.table(
        {
            "messages": append_assistant(rows["prompt_messages"], answers),
            "prompt": rows["prompt_messages"],
            "completion": assistant_lists(answers),
            "task_id": rows["task_id"],
            "rollout_index": rows["rollout_index"],
            "dataset": rows["dataset"],
            "reward": rows["reward"],
        }
    )


def _episodes(rows: pa.Table) -> pa.Table:
    """SFT rows of an agent job in both layouts: the prompt, then every turn."""
    prompt, completion = prompt_lists(rows), completion_lists(rows)
    return pa.table(
        {
            "messages": conversation_lists(prompt, completion),
            "prompt": prompt,
            "completion": completion,
            "task_id": rows["task_id"],
            "rollout_index": rows["rollout_index"],
            "dataset": rows["dataset"],
            "reward": rows["reward"],
            "tools": rows["episode_tools"],
        }
    )


def assistant_lists(contents: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """One single-message list [{"role": "assistant", "content": c}] per row."""
    contents = _array(contents).cast(pa.string())
    n = len(contents)
    roles = pa.array(np.full(n, "assistant", dtype=object), pa.string())
    values = pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE))
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), values)


def append_assistant(
    prompts: pa.Array | pa.ChunkedArray, contents: pa.Array | pa.ChunkedArray
) -> pa.ListArray:
    """Each row's prompt messages followed by its assistant reply, built with one `take`
    rather than per-row Python lists (this runs over millions of rows)."""
    prompts = _array(prompts).cast(MESSAGES)
    n = len(prompts)
    offsets = prompts.offsets.to_numpy().astype(np.int64)
    # The values the offsets point at (flatten() would skip null slots and shift them).
    flat = prompts.values.slice(offsets[0], offsets[-1] - offsets[0])
    offsets -= offsets[0]
    new_offsets = offsets + np.arange(n + 1)
    take = np.empty(len(flat) + n, dtype=np.int64)
    reply_at = new_offsets[1:] - 1
    is_prompt = np.ones(len(take), dtype=bool)
    is_prompt[reply_at] = False
    take[is_prompt] = np.arange(len(flat))
    take[reply_at] = len(flat) + np.arange(n)
    replies = assistant_lists(contents).flatten()
    values = pa.concat_arrays([flat, replies]).take(pa.array(take))
    return pa.ListArray.from_arrays(pa.array(new_offsets.astype(np.int32)), values)


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
