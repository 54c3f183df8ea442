"""Reading a job's committed rollouts: what exports, re-verification and inspection use.

The committed output is what the manifest's commit records point at; a file written by
a piece that never committed (a crash between write and commit) is not part of it.
Rollouts are read one shard at a time: every rollout of a task (all its repeats, all
retry rounds) lives in its shard's files, so grouping by task needs one shard in memory.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pyarrow as pa

from rollout_ray import storage
from rollout_ray.errors import RolloutRayError
from rollout_ray.output import manifest
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import FAILURE_SCHEMA, ROLLOUT_CORE, Commit


def committed_pieces(output: str) -> list[Commit]:
    """The commit records of a job's output, in a stable order.

    Raises:
        RolloutRayError: there is no job at `output`.
    """
    layout = Layout(output)
    if not storage.exists(layout.job):
        raise RolloutRayError(f"no rollout-ray job at {output} (no _manifest/job.json)")
    return sorted(manifest.read_commits(layout), key=lambda r: (r.shard_id, r.round))


def dataset_names(output: str) -> list[str]:
    """The datasets of a job, from its plan.

    Raises:
        RolloutRayError: there is no job at `output`.
    """
    layout = Layout(output)
    if not storage.exists(layout.job):
        raise RolloutRayError(f"no rollout-ray job at {output} (no _manifest/job.json)")
    plan = storage.read_parquet(layout.plan, columns=["dataset"])
    return sorted(set(plan.column("dataset").to_pylist()))


def iter_shards(
    output: str,
    datasets: list[str] | None = None,
    columns: list[str] | None = None,
    kind: str = "data",
) -> Iterator[pa.Table]:
    """Committed rollouts (kind="data") or failures (kind="failures"), one table per
    shard holding all of that shard's rounds."""
    by_shard: dict[str, list[str]] = defaultdict(list)
    for piece in committed_pieces(output):
        if datasets and piece.dataset not in datasets:
            continue
        uri = piece.file(kind)
        if uri:
            by_shard[piece.shard_id].append(uri)
    for _, uris in sorted(by_shard.items()):
        yield concat([_read(uri, columns) for uri in uris])


def _read(uri: str, columns: list[str] | None) -> pa.Table:
    """A data file's columns; ones added to the record schema since it was written
    (e.g. the agent columns) come back as nulls of their type."""
    if columns is None:
        return storage.read_parquet(uri)
    try:
        return storage.read_parquet(uri, columns=columns)
    except (pa.ArrowInvalid, KeyError):
        table = storage.read_parquet(uri)
    for name in columns:
        if name not in table.column_names and name in ROLLOUT_CORE.names:
            field = ROLLOUT_CORE.field(name)
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select([c for c in columns if c in table.column_names])


def read_rollouts(
    output: str, datasets: list[str] | None = None, columns: list[str] | None = None
) -> pa.Table:
    """Every committed rollout as one table (for outputs that fit in memory). With no
    rollout, the record schema's columns and no row, so code that reads a column (a
    notebook's `table["reward"]`) works on an empty output too."""
    tables = list(iter_shards(output, datasets, columns))
    return concat(tables) if tables else _empty(ROLLOUT_CORE, columns)


def read_failures(output: str, datasets: list[str] | None = None) -> pa.Table:
    """Every committed failure record; none: the failure schema with no row."""
    tables = list(iter_shards(output, datasets, kind="failures"))
    return concat(tables) if tables else FAILURE_SCHEMA.empty_table()


def _empty(schema: pa.Schema, columns: list[str] | None) -> pa.Table:
    if columns:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names])
    return schema.empty_table()


def concat(tables: list[pa.Table]) -> pa.Table:
    """Concatenate tables whose carried input columns may differ or be typed apart."""
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # The same input field inferred as different types in two files: keep text.
        names = list(dict.fromkeys(n for t in tables for n in t.column_names))
        fixed = []
        for table in tables:
            columns = {}
            for name in names:
                if name not in table.column_names:
                    columns[name] = pa.nulls(table.num_rows, pa.string())
                    continue
                column = table.column(name)
                types = {t.schema.field(name).type for t in tables if name in t.column_names}
                columns[name] = column.cast(pa.string()) if len(types) > 1 else column
            fixed.append(pa.table(columns))
        return pa.concat_tables(fixed, promote_options="permissive")
