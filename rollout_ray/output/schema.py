"""The record schemas: rollouts, failures, plan shards and commits.

This is the one place that defines what a record holds; every other module builds and
reads records through it. Field names follow NeMo Gym's where one exists
(`responses_create_params`, `reward`, `expected_answer` carried from the row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypedDict

import pyarrow as pa

from rollout_ray import json_text
from rollout_ray.json_text import clean_text

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
    # The thinking a reasoning parser split from the answer (engine.reasoning_parser).
    pa.field("reasoning_text", pa.string()),
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
    # Repairs made to the input row before use (e.g. invalid UTF-8 bytes replaced).
    pa.field("row_warnings", pa.list_(pa.string())),
    # The carried fields whose value in this row is JSON text (see carried_columns).
    pa.field("carried_json", pa.list_(pa.string())),
    # Agent episodes (null for single-turn rollouts). output_token_ids then hold every
    # token after the first prompt; output_mask is 1 on the model's own (0 on tool
    # outputs and template text), output_logprobs 0.0 where the mask is 0.
    pa.field("output_mask", pa.list_(pa.int8())),
    # Responses-API output items as JSON: message, function_call, function_call_output.
    pa.field("episode", pa.string()),
    # The Responses-API `response` the environment's /verify got, without its `output`
    # (that is `episode`): status, usage summed over turns, the tool_choice sent.
    pa.field("episode_response", pa.string()),
    # The function tools offered (chat-completions shape), as JSON.
    pa.field("episode_tools", pa.string()),
    pa.field("steps", pa.int16()),
    pa.field("tool_calls", pa.int16()),
    pa.field("tool_errors", pa.int16()),
    pa.field("turn_latency_s", pa.list_(pa.float32())),
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
        # The input's size and version when planned, checked before a shard is read.
        pa.field("file_size", pa.int64()),
        pa.field("file_version", pa.string()),
        # The user's file, when file_uri is its staged plain-JSONL copy.
        pa.field("source_uri", pa.string()),
        # Kept for its committed work only: its file changed or its dataset left the
        # config (--force-new-config); never retried.
        pa.field("retired", pa.bool_()),
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
        # Rollouts a stopped run (Ctrl-C) did not finish: redone next run, not failed.
        pa.field("n_interrupted", pa.int64()),
        # Which try of its rollouts this piece was (1 = first); a round cut short by a
        # stop is not a try (files of older versions: round + 1).
        pa.field("attempt", pa.int32()),
    ]
)


@dataclass(slots=True)
class Commit:
    """One piece's commit record: the files it wrote and what they hold. A row of
    COMMIT_SCHEMA; every module that writes or reads commits uses this type.

    Counts cover the piece's expected rollouts: n_ok + n_failed + n_interrupted ==
    n_expected; n_retryable of the failures may pass on another try, and n_interrupted
    rollouts were never finished because the run was stopped; the next round redoes both.
    """

    piece_id: str
    shard_id: str
    dataset: str
    round: int
    data_file: str | None = None
    failures_file: str | None = None
    n_expected: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_retryable: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    reward_sum: float = 0.0
    reward_count: int = 0
    seconds: float = 0.0
    stats: str | None = None
    actor: str = ""
    node: str = ""
    committed_at: datetime | str | None = None
    n_interrupted: int = 0
    attempt: int = 0

    @property
    def settled(self) -> int:
        """The rollouts this piece gave an outcome (done or failed): not interrupted."""
        return self.n_expected - self.n_interrupted

    @property
    def files(self) -> tuple[str, ...]:
        """The files this commit covers."""
        return tuple(f for f in (self.data_file, self.failures_file) if f)

    def file(self, kind: str) -> str | None:
        """The piece's rollouts file (kind "data") or failures file ("failures")."""
        return self.data_file if kind == "data" else self.failures_file

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COMMIT_NAMES}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Commit:
        """From a stored row or its JSON; counts missing in older files read as 0."""
        values: dict[str, Any] = {name: row.get(name) for name in _COMMIT_NAMES}
        for name in _COMMIT_COUNTS:
            values[name] = values[name] or 0
        values["actor"] = values["actor"] or ""
        values["node"] = values["node"] or ""
        values["attempt"] = values["attempt"] or values["round"] + 1
        return cls(**values)


_COMMIT_NAMES = tuple(f.name for f in fields(Commit))
_COMMIT_COUNTS = tuple(
    n
    for n in _COMMIT_NAMES
    if n.startswith("n_") or n.startswith(("prompt_", "output_", "reward_", "seconds"))
)
if tuple(COMMIT_SCHEMA.names) != _COMMIT_NAMES:
    raise RuntimeError("Commit and COMMIT_SCHEMA disagree")


def commits_table(commits: list[Commit]) -> pa.Table:
    return pa.Table.from_pylist([c.to_row() for c in commits], schema=COMMIT_SCHEMA)


def commits_from_table(table: pa.Table) -> list[Commit]:
    return [Commit.from_row(row) for row in table.to_pylist()]


class FailureRecord(TypedDict):
    """A row of FAILURE_SCHEMA: a failed rollout (rollout_index >= 0) or a whole
    unusable row (-1), with the stage it failed at and why. Builders write it as a
    dict literal annotated with this type (mypy checks every key; no cost at run time)."""

    dataset: str
    task_id: str | None
    rollout_index: int
    source_file: str | None
    row_index: int | None
    stage: str
    error_class: str
    error: str
    attempt: int
    terminal: bool
    raw_row: str | None
    response_text: str | None
    created_at: datetime


if tuple(FailureRecord.__annotations__) != tuple(FAILURE_SCHEMA.names):
    raise RuntimeError("FailureRecord and FAILURE_SCHEMA disagree")


INPUT_PREFIX = "input."
CARRIED_JSON = "carried_json"


def rollouts_table(records: list[dict[str, Any]]) -> pa.Table:
    """Build a table of rollout records: core columns typed by the schema, the input
    row's carried fields after them (see `carried_columns`).

    Input fields whose name collides with a core column, or starts `input.`, are stored
    as `input.<name>`.

    Raises:
        pa.ArrowException, TypeError, ValueError, OverflowError: a core value can't be
            stored (the caller isolates the record at fault).
    """
    columns, encoded, notes = carried_columns([record.get("input") or {} for record in records])
    if any(notes):  # what storing changed (a NaN, binary data) joins the row's warnings
        records = [
            {**r, "row_warnings": [*(r.get("row_warnings") or []), *n]} if n else r
            for r, n in zip(records, notes, strict=True)
        ]
    table = pa.Table.from_pylist(records, schema=ROLLOUT_CORE)
    if not columns:
        return table
    index = table.schema.get_field_index(CARRIED_JSON)
    table = table.set_column(index, CARRIED_JSON, pa.array(encoded, pa.list_(pa.string())))
    for name, column in columns.items():
        table = table.append_column(name, column)
    return table


def carried_columns(
    inputs: list[dict[str, Any]],
) -> tuple[dict[str, pa.Array], list[list[str] | None], list[list[str]]]:
    """The carried fields as string columns, by one rule that any JSON value passes.

    A string is stored as itself; any other value (a number, a boolean, an object, an
    array, an empty object, an integer past 64 bits, an infinity, a date or binary
    data from a Parquet input) as its JSON text, valid for any reader (json_text: NaN
    is null, said in `notes`), and the row's `carried_json` names the fields so
    stored, so `decode_rows` gives the row's own values back. Every carried column is a string
    column in every file, so a job's output always reads as one table (pandas, DuckDB,
    `datasets`), whatever kinds a field mixes across rows. Arrow's own inference is
    not used: it fails on empty objects and mixed types, types a field differently
    from file to file, and pads a list of objects with different keys into structs
    full of nulls, which changes the data.

    Returns:
        Columns by stored name (`input.<name>` for a name a core column has or one
        starting `input.`), per row
        the stored names holding JSON text (None when none), and per row what storing
        changed (a NaN stored as null, binary data as base64: see json_text).
    """
    names = list(dict.fromkeys(name for row in inputs for name in row))
    encoded: list[list[str] | None] = [None] * len(inputs)
    notes: list[list[str]] = [[] for _ in inputs]
    columns = {}
    for name in names:
        # The prefix also on a name that has it: a row's own `input.x` beside a core
        # `x` (or as json_normalize names nested fields) keeps its name and value.
        taken = name in CORE_NAMES or name.startswith(INPUT_PREFIX)
        stored = INPUT_PREFIX + name if taken else name
        values = [row.get(name) for row in inputs]
        for i, value in enumerate(values):
            if value is None or type(value) is str:
                continue
            # Rows come from our parsers, whose text is valid UTF-8: no clean_text.
            values[i] = json_text.dumps(value, notes[i], field=name)
            names_here = encoded[i]
            if names_here is None:
                encoded[i] = [stored]
            else:
                names_here.append(stored)
        columns[stored] = pa.array(values, pa.string())
    return columns, encoded, notes


def decode_rows(table: pa.Table) -> list[dict[str, Any]]:
    """A written table's rows as dicts, carried JSON-text fields decoded to the row's
    own values (files of any run may be concatenated first)."""
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for name in row.get(CARRIED_JSON) or ():
            if row.get(name) is not None:
                row[name] = json.loads(row[name])
    return rows


def record_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A decoded output row back in the shape `rollouts_table` takes (core fields, and
    the carried ones under `input`)."""
    record = {name: row.get(name) for name in CORE_NAMES if name != CARRIED_JSON}
    record["input"] = {
        (name[len(INPUT_PREFIX) :] if name.startswith(INPUT_PREFIX) else name): value
        for name, value in row.items()
        if name not in CORE_NAMES
    }
    return record


def failures_table(records: list[dict[str, Any]]) -> pa.Table:
    """Failure records as a table; text fields are made valid UTF-8 first (an error
    message may quote a row's broken text)."""
    for record in records:
        for name in _FAILURE_TEXT:
            value = record.get(name)
            if isinstance(value, str):
                record[name] = clean_text(value)
    return pa.Table.from_pylist(records, schema=FAILURE_SCHEMA)


_FAILURE_TEXT = ("task_id", "source_file", "error", "raw_row", "response_text", "error_class")


def sampling_record(params: dict[str, Any]) -> dict[str, Any]:
    """The sampling struct's value for resolved sampling parameters."""
    return {name: params.get(name) for name in SAMPLING.names}
