"""The record schemas: rollouts, failures, plan shards and commits.

This is the one place that defines what a record holds; every other module builds and
reads records through it. Field names follow NeMo Gym's where one exists
(`responses_create_params`, `reward`, `expected_answer` carried from the row).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

SAMPLING = pa.struct(
    [
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("top_k", pa.int64()),
        ("min_p", pa.float64()),
        ("max_tokens", pa.int64()),
        ("min_tokens", pa.int64()),
        ("stop", pa.list_(pa.string())),
        ("seed", pa.int64()),
        ("presence_penalty", pa.float64()),
        ("frequency_penalty", pa.float64()),
        ("repetition_penalty", pa.float64()),
        ("logprobs", pa.bool_()),
        ("return_token_ids", pa.bool_()),
    ]
)

#: Columns every rollout record has, in order. Input-row fields follow them.
ROLLOUT_FIELDS: list[pa.Field] = [
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("task_id", pa.string(), nullable=False),
    pa.field("rollout_index", pa.int32(), nullable=False),
    pa.field("source_file", pa.string()),
    pa.field("row_index", pa.int64()),
    pa.field("prompt_messages", pa.list_(MESSAGE)),
    pa.field("response_text", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("output_tokens", pa.int32()),
    pa.field("prompt_token_ids", pa.list_(pa.int32())),
    pa.field("output_token_ids", pa.list_(pa.int32())),
    pa.field("output_logprobs", pa.list_(pa.float32())),
    pa.field("reward", pa.float64()),
    pa.field("verifier", pa.string()),
    pa.field("verifier_details", pa.string()),
    pa.field("model", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("engine", pa.string()),
    pa.field("sampling", SAMPLING),
    pa.field("attempt", pa.int16()),
    pa.field("latency_s", pa.float32()),
    pa.field("ttft_s", pa.float32()),
    pa.field("created_at", pa.timestamp("ms", tz="UTC")),
    pa.field("responses_create_params", pa.string()),
]
ROLLOUT_CORE = pa.schema(ROLLOUT_FIELDS)
CORE_NAMES = frozenset(ROLLOUT_CORE.names)

#: A failed rollout (rollout_index >= 0) or a whole unusable row (rollout_index = -1).
FAILURE_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("task_id", pa.string()),
        pa.field("rollout_index", pa.int32()),
        pa.field("source_file", pa.string()),
        pa.field("row_index", pa.int64()),
        pa.field("stage", pa.string()),
        pa.field("error_class", pa.string()),
        pa.field("error", pa.string()),
        pa.field("attempt", pa.int16()),
        pa.field("terminal", pa.bool_()),
        pa.field("raw_row", pa.string()),
        pa.field("response_text", pa.string()),
        pa.field("created_at", pa.timestamp("ms", tz="UTC")),
    ]
)

#: One unit of work: a range of rows of one input file.
PLAN_SCHEMA = pa.schema(
    [
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("file_uri", pa.string(), nullable=False),
        pa.field("file_key", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("first_row", pa.int64(), nullable=False),
        pa.field("num_rows", pa.int64(), nullable=False),
        pa.field("byte_start", pa.int64()),
        pa.field("byte_end", pa.int64()),
        pa.field("row_group", pa.int32()),
        pa.field("row_group_offset", pa.int64()),
        pa.field("num_repeats", pa.int32(), nullable=False),
    ]
)

#: Written to _manifest/commits/ only after a piece's files are durable.
COMMIT_SCHEMA = pa.schema(
    [
        pa.field("piece_id", pa.string(), nullable=False),
        pa.field("shard_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("data_file", pa.string()),
        pa.field("failures_file", pa.string()),
        pa.field("n_expected", pa.int64()),
        pa.field("n_ok", pa.int64()),
        pa.field("n_failed", pa.int64()),
        pa.field("n_retryable", pa.int64()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("reward_sum", pa.float64()),
        pa.field("reward_count", pa.int64()),
        pa.field("seconds", pa.float64()),
        pa.field("stats", pa.string()),
        pa.field("actor", pa.string()),
        pa.field("node", pa.string()),
        pa.field("committed_at", pa.timestamp("ms", tz="UTC")),
    ]
)

INPUT_PREFIX = "input."


def rollouts_table(records: list[dict[str, Any]]) -> pa.Table:
    """Build a table of rollout records: core columns typed by the schema, carried
    input fields after them with their types inferred.

    Input fields whose name collides with a core column are stored as `input.<name>`.
    """
    table = pa.Table.from_pylist(records, schema=ROLLOUT_CORE)
    inputs = [record.get("input") or {} for record in records]
    if not any(inputs):
        return table
    try:
        carried = pa.Table.from_pylist(inputs)
        columns = dict(zip(carried.column_names, carried.columns, strict=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        names = list(dict.fromkeys(name for row in inputs for name in row))
        columns = {name: _infer_array([row.get(name) for row in inputs]) for name in names}
    for name, column in columns.items():
        table = table.append_column(INPUT_PREFIX + name if name in CORE_NAMES else name, column)
    return table


def failures_table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=FAILURE_SCHEMA)


def _infer_array(values: list[Any]) -> pa.Array:
    """An array for carried input values; mixed types fall back to JSON strings."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [None if v is None else json.dumps(v, default=str) for v in values], pa.string()
        )


def sampling_record(params: dict[str, Any]) -> dict[str, Any]:
    """The sampling struct's value for resolved sampling parameters."""
    return {name: params.get(name) for name in SAMPLING.names}
