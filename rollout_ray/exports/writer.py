"""Shared plumbing of the exporters: option checks, task grouping, atomic JSONL/Parquet writes."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from rollout_ray import storage
from rollout_ray.output import results
from rollout_ray.output.schema import MESSAGE

#: A chat conversation as an Arrow column type.
MESSAGES = pa.list_(MESSAGE)
#: What the SFT and DPO exports read of each scored rollout.
SCORED_COLUMNS = [
    "dataset",
    "task_id",
    "rollout_index",
    "prompt_messages",
    "response_text",
    "reasoning_text",
    "reward",
]


def answer_texts(rows: pa.Table, keep_reasoning: bool) -> pa.Array | pa.ChunkedArray:
    """The assistant's text per row: the answer, or with `keep_reasoning` the thinking
    a reasoning parser split off put back before it as `<think>...</think>` (the form
    most reasoning models' chat templates take it back in)."""
    if not isinstance(keep_reasoning, bool):
        raise ValueError(f"keep_reasoning must be true or false, got {keep_reasoning!r}")
    if not keep_reasoning:
        return rows["response_text"]
    return pa.array(
        [
            f"<think>\n{r}\n</think>\n\n{t or ''}" if r else t
            for r, t in zip(
                rows["reasoning_text"].to_pylist(), rows["response_text"].to_pylist(), strict=True
            )
        ],
        pa.string(),
    )


#: Rows (or Arrow bytes) buffered before a write: small shards still make decent row
#: groups, and long conversations don't pile up in memory.
BUFFER_ROWS = 65_536
BUFFER_BYTES = 128 << 20
#: Rows (or Arrow bytes) encoded to JSON at once: their text is built in memory, and
#: must stay well below Arrow's 2 GiB limit for one string array.
JSON_BATCH_ROWS = 16_384
JSON_BATCH_BYTES = 32 << 20
#: Characters JSON strings must escape, in an order that never escapes twice.
ESCAPES = [("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")]


@dataclass
class ExportReport:
    """What an export did; `extra` holds the figures particular to its kind."""

    kind: str
    dest: str
    rows_written: int
    tasks_seen: int
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- options


def output_format(dest: str) -> str:
    """The output format from dest's suffix (.jsonl or .parquet), checked before reading."""
    lowered = dest.lower()
    if lowered.endswith(".jsonl"):
        return "jsonl"
    if lowered.endswith(".parquet"):
        return "parquet"
    raise ValueError(f"export destination {dest!r} must end in .jsonl or .parquet")


def check_datasets(output: Outputs, datasets: list[str] | None) -> list[str] | None:
    """Reject unknown dataset names up front: a typo would otherwise export nothing."""
    outputs = outputs_of(output)
    if datasets is None:
        for one in outputs:
            results.committed_pieces(one)  # no job there: say so now
        return None
    if isinstance(datasets, str) or not datasets or not all(isinstance(d, str) for d in datasets):
        raise ValueError(
            f"datasets must be a non-empty list of dataset names (or None for all), "
            f"got {datasets!r}"
        )
    known = {piece.dataset for one in outputs for piece in results.committed_pieces(one)}
    unknown = sorted(set(datasets) - known)
    if unknown:
        raise ValueError(
            f"no committed rollouts for dataset(s) {', '.join(unknown)} in {', '.join(outputs)}; "
            f"it has: {', '.join(sorted(known)) or 'none'}"
        )
    return list(datasets)


def check_number(name: str, value: Any, minimum: float | None = None) -> float:
    """A real number option (bools are rejected: `threshold=True` is a mistake)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or np.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------- reading


#: One job's output, or several exported as one (tasks are grouped within each output).
Outputs = str | list[str]


def outputs_of(output: Outputs) -> list[str]:
    """The outputs an export reads, in order.

    Raises:
        ValueError: an empty list, or something that is not an output's URI.
    """
    found = [output] if isinstance(output, str) else output
    if (
        not isinstance(found, list | tuple)
        or not found
        or not all(isinstance(o, str) for o in found)
    ):
        raise ValueError(
            f"output must be a job's output or a non-empty list of them, got {output!r}"
        )
    return list(found)


def shards(
    output: Outputs, datasets: list[str] | None, columns: list[str] | None
) -> Iterator[pa.Table]:
    """Each non-empty shard's committed rollouts (all rounds), with only `columns`, of
    every output in turn."""
    for one in outputs_of(output):
        for table in results.iter_shards(one, datasets, columns):
            if table.num_rows:
                yield table


@dataclass
class Groups:
    """A shard's rows sorted by (dataset, task_id, rollout_index), with task boundaries.

    Rows of group g are `table[bounds[g]:bounds[g + 1]]`; `gid` is each row's group.
    """

    table: pa.Table
    bounds: np.ndarray

    @property
    def count(self) -> int:
        return len(self.bounds) - 1

    @property
    def starts(self) -> np.ndarray:
        return self.bounds[:-1]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    @cached_property
    def gid(self) -> np.ndarray:
        return np.repeat(np.arange(self.count), self.sizes)

    def first_where(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(groups, row) of the first masked row of each group that has one; rows are in
        rollout_index order, so "first" means the lowest rollout_index."""
        rows = np.flatnonzero(mask)
        groups, first = np.unique(self.gid[rows], return_index=True)
        return groups, rows[first]

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """`ufunc` folded over each group's values (every group has at least one row)."""
        return ufunc.reduceat(values, self.starts) if self.count else values[:0]


def group_by_task(table: pa.Table) -> Groups:
    """Sort a shard by task, vectorized: dictionary codes + numpy lexsort, no Python loop.

    Rows of one task may come from several pieces (retry rounds) in any order; sorting
    brings them together. Tasks keep the order of their first appearance.
    """
    n = table.num_rows
    datasets = pc.dictionary_encode(table["dataset"].combine_chunks())
    tasks = pc.dictionary_encode(table["task_id"].combine_chunks())
    codes = datasets.indices.to_numpy().astype(np.int64) * len(tasks.dictionary)
    codes += tasks.indices.to_numpy()
    index = table["rollout_index"].to_numpy()
    order = np.lexsort((index, codes))
    ordered = codes[order]
    change = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    bounds = np.concatenate([[0], change, [n]]).astype(np.int64)
    return Groups(table.take(pa.array(order)), bounds)


def rewards(table: pa.Table) -> np.ndarray:
    """The reward column as float64 with NaN for null (null means "not scored")."""
    return pc.fill_null(table["reward"], np.nan).to_numpy().astype(np.float64, copy=False)


# ---------------------------------------------------------------------------- writing


class TableWriter:
    """Writes tables to a .jsonl or .parquet destination under a temporary name, and
    moves it into place only when the `with` block succeeds, so a failed export never
    leaves a partial file at the destination (an older file there stays intact).

    Nor an empty one: with no row written the destination is left as it was (`written`
    stays False) unless `keep_empty`, and the export says why it had nothing to write
    (see exports.empty)."""

    def __init__(self, dest: str, schema: pa.Schema):
        self.dest = dest
        self.schema = schema
        self.format = output_format(dest)
        self.rows = 0
        self.keep_empty = False
        self.written = False
        self._fs, self._path = storage.split_uri(dest)
        self._tmp = f"{self._path}.tmp-{uuid.uuid4().hex[:8]}"
        self._buffer: list[pa.Table] = []
        self._buffered = self._bytes = 0
        self._file: Any = None
        self._parquet: pq.ParquetWriter | None = None

    def __enter__(self) -> TableWriter:
        if isinstance(self._fs, LocalFileSystem):
            os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        self._file = self._fs.open(self._tmp, "wb")
        if self.format == "parquet":
            self._parquet = pq.ParquetWriter(self._file, self.schema, compression="zstd")
        return self

    @property
    def pending(self) -> int:
        """Rows written or buffered so far (`rows` counts only those written)."""
        return self.rows + self._buffered

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        table = table.select(self.schema.names).cast(self.schema)
        self._buffer.append(table)
        self._buffered += table.num_rows
        self._bytes += table.nbytes
        if self._buffered >= BUFFER_ROWS or self._bytes >= BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = pa.concat_tables(self._buffer)
        self._buffer, self._buffered, self._bytes = [], 0, 0
        self.rows += table.num_rows
        if self._parquet is not None:
            self._parquet.write_table(table)
            return
        row_bytes = max(table.nbytes / table.num_rows, 1.0)
        rows = max(1, min(JSON_BATCH_ROWS, int(JSON_BATCH_BYTES / row_bytes)))
        for batch in table.to_batches(max_chunksize=rows):
            self._file.write(json_lines(batch))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._flush()
            if self._parquet is not None:
                self._parquet.close()  # writes the footer; leaves our file open
            if exc_type is None and isinstance(self._fs, LocalFileSystem):
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
        except BaseException:
            self._discard()
            raise
        if exc_type is not None or (not self.rows and not self.keep_empty):
            self._discard()
            return
        self.written = True
        if isinstance(self._fs, LocalFileSystem):
            os.replace(self._tmp, self._path)
        else:
            storage.retrying(lambda: self._fs.mv(self._tmp, self._path), f"move to {self.dest}")

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._fs.rm_file(self._tmp)


# ---------------------------------------------------------------------------- JSON Lines


def json_lines(batch: pa.RecordBatch) -> memoryview:
    """The rows of `batch` as JSON Lines, encoded column by column with Arrow kernels.

    Row-wise `to_pylist` + `json.dumps` took over two minutes for a million RL rows
    (hundreds of numbers each); this takes seconds. Floats are written in their
    shortest round-trip form ("1.0", "-0.3785497" for a float32); NaN and infinities,
    which JSON can't express, become null.
    """
    parts: list[Any] = []
    for i, (name, column) in enumerate(zip(batch.schema.names, batch.columns, strict=True)):
        parts += [("{" if i == 0 else ",") + json.dumps(name) + ":", _json(column)]
    lines = pc.binary_join_element_wise(*parts, "}\n", "")
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, np.int32, count=len(lines) + 1, offset=4 * lines.offset)
    return memoryview(data.slice(int(bounds[0]), int(bounds[-1] - bounds[0])))


def _json(values: pa.Array) -> pa.Array:
    """Each value of `values` as JSON text (a string array without nulls)."""
    kind = values.type
    if pa.types.is_integer(kind):
        text = pc.cast(values, pa.string())
    elif pa.types.is_floating(kind):
        text = pc.cast(values, pa.string())
        whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
        finite = pc.is_finite(values)
        text = pc.if_else(finite, text, pa.scalar(None, pa.string()))
    elif pa.types.is_boolean(kind):
        text = pc.if_else(values, "true", "false")
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = _json_strings(values.cast(pa.string()))
    elif pa.types.is_list(kind):
        # Only the child values in this slice (a batch is often a slice of a bigger array).
        offsets = values.offsets.to_numpy()
        child = values.values.slice(offsets[0], offsets[-1] - offsets[0])
        starts = pa.array(offsets - offsets[0], pa.int32())
        items = pa.ListArray.from_arrays(starts, _json(child), mask=values.is_null())
        text = pc.binary_join_element_wise("[", pc.binary_join(items, ","), "]", "")
    elif pa.types.is_struct(kind):
        parts: list[Any] = []
        for i, field_ in enumerate(kind):
            key = ("{" if i == 0 else ",") + json.dumps(field_.name) + ":"
            parts += [key, _json(values.field(i))]
        text = pc.binary_join_element_wise(*parts, "}", "")
        text = pc.if_else(values.is_valid(), text, pa.scalar(None, pa.string()))
    else:  # Anything rarer: one value at a time.
        text = pa.array([json.dumps(v, default=str) for v in values.to_pylist()], pa.string())
    return pc.fill_null(text, "null")


def _json_strings(values: pa.StringArray) -> pa.Array:
    """Quoted, escaped JSON strings; the rare value with other control characters is
    left to `json.dumps`."""
    text = values
    for raw, escaped in ESCAPES:
        text = pc.replace_substring(text, raw, escaped)
    text = pc.binary_join_element_wise('"', text, '"', "")
    odd = pc.fill_null(pc.match_substring_regex(values, r"[\x00-\x08\x0b\x0c\x0e-\x1f]"), False)
    if pc.any(odd).as_py():
        originals = values.filter(odd).to_pylist()
        fixed = pa.array([json.dumps(v, ensure_ascii=False) for v in originals], pa.string())
        text = pc.replace_with_mask(text, odd, fixed)
    return text
