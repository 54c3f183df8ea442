"""Cutting an input file into shards without parsing its rows.

JSONL files are cut at line starts by scanning for newlines in large blocks (memory
stays at one block whatever the file's size); Parquet files by row groups, from the
footer alone. Planning can resume where an earlier plan of a file ended, so a grown
file only adds shards, and `plan_uncovered` plans the rows of a changed file that no
commit covers (--force-new-config).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq

from rollout_ray import storage
from rollout_ray.config import DatasetConfig
from rollout_ray.inputs.sources import SCAN_BLOCK, InputFile, Shard


def shard_id(dataset: str, file_key: str, first_row: int) -> str:
    """A shard's identity: stable across runs (resume matches commits to shards by it),
    so its form never changes."""
    return f"{dataset}/{file_key}:{first_row}"


def plan_file(
    dataset: DatasetConfig,
    file: InputFile,
    shard_size: int,
    limit: int | None,
    start_row: int = 0,
    start_byte: int = 0,
    source_uri: str | None = None,
) -> Iterator[Shard]:
    """Cut one file into shards of `shard_size` rows, stopping after `limit` rows.

    Planning may resume where an earlier plan of the same file ended (`start_row`,
    and for JSONL `start_byte`), so that a grown file only adds shards. A staged file
    (plain JSONL) is planned with the user's file as `source_uri`.
    """
    if file.needs_staging:
        raise ValueError(f"{file.uri} must be staged before it is planned")
    ranges = (
        _jsonl_ranges(file.uri, shard_size, limit, start_row, start_byte)
        if file.format == "jsonl"
        else _parquet_ranges(file.uri, shard_size, limit, start_row)
    )
    stamp = {"file_size": file.size, "file_version": file.version, "source_uri": source_uri}
    for first_row, num_rows, extra in ranges:
        yield Shard(
            shard_id=shard_id(dataset.name, file.key, first_row),
            dataset=dataset.name,
            file_uri=file.uri,
            file_key=file.key,
            format=file.format,
            first_row=first_row,
            num_rows=num_rows,
            num_repeats=dataset.num_repeats,
            **extra,
            **stamp,
        )


def _jsonl_ranges(
    uri: str, shard_size: int, limit: int | None, start_row: int = 0, start_byte: int = 0
) -> Iterator[tuple[int, int, dict[str, int]]]:
    """(first_row, num_rows, byte range) per shard, from one pass over the file's bytes."""
    fs, path = storage.split_uri(uri)
    rows = 0  # complete lines seen
    with fs.open(path, "rb", block_size=SCAN_BLOCK) as f:
        if start_byte:
            # If an earlier plan ended at a last line without a newline, the file has
            # grown by a newline and more lines: skip that newline.
            f.seek(start_byte - 1)
            before, at = f.read(1), f.read(1)
            if before != b"\n" and at == b"\n":
                start_byte += 1
            f.seek(start_byte)
        shard_start_byte, shard_first_row = start_byte, 0
        offset = start_byte  # bytes read so far
        last_end = start_byte  # byte just after the last newline counted
        while limit is None or rows < limit:
            block = f.read(SCAN_BLOCK)
            if not block:
                break
            ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset + 1
            if limit is not None:
                ends = ends[: limit - rows]
            # Line ends that close a shard: every shard_size-th line of the file.
            first_boundary = shard_size - (rows - shard_first_row)
            for end in ends[first_boundary - 1 :: shard_size]:
                yield (
                    start_row + shard_first_row,
                    shard_size,
                    {"byte_start": shard_start_byte, "byte_end": int(end)},
                )
                shard_first_row += shard_size
                shard_start_byte = int(end)
            if len(ends):
                last_end = int(ends[-1])
            rows += len(ends)
            offset += len(block)
    tail_rows, tail_end = rows - shard_first_row, last_end
    if offset > last_end and (limit is None or rows < limit):
        tail_rows, tail_end = tail_rows + 1, offset  # a last line without a newline
    if tail_rows:
        yield (
            start_row + shard_first_row,
            tail_rows,
            {"byte_start": shard_start_byte, "byte_end": tail_end},
        )


def _parquet_ranges(
    uri: str, shard_size: int, limit: int | None, start_row: int = 0
) -> Iterator[tuple[int, int, dict[str, int]]]:
    fs, path = storage.split_uri(uri)
    with fs.open(path, "rb") as f:
        metadata = pq.ParquetFile(f).metadata
    group_start, planned = 0, 0
    for group in range(metadata.num_row_groups):
        group_rows = metadata.row_group(group).num_rows
        first = max(0, start_row - group_start)  # rows of this group planned before
        for offset in range(first, group_rows, shard_size):
            n = min(shard_size, group_rows - offset)
            if limit is not None:
                n = min(n, limit - planned)
            if n <= 0:
                return
            yield group_start + offset, n, {"row_group": group, "row_group_offset": offset}
            planned += n
        group_start += group_rows


def plan_uncovered(
    dataset: DatasetConfig,
    file: InputFile,
    shard_size: int,
    covered: list[tuple[int, int]],
    limit: int | None,
    source_uri: str | None = None,
) -> Iterator[Shard]:
    """Shards for the rows of a changed file that no kept shard covers.

    `covered` holds [first, end) row ranges of shards committed before the file changed
    (their work is kept as it is); every other row of the file as it is now is planned,
    at most `limit` rows. Used by --force-new-config, so it may read the whole file.
    """
    if file.format == "jsonl":
        ends = _line_ends(file.uri)
        total = len(ends)
    else:
        fs, path = storage.split_uri(file.uri)
        with fs.open(path, "rb") as f:
            metadata = pq.ParquetFile(f).metadata
        sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
        group_starts = np.cumsum([0, *sizes])
        total = int(group_starts[-1])
    stamp = {"file_size": file.size, "file_version": file.version, "source_uri": source_uri}
    planned = 0
    for start, end in _gaps(sorted(covered), total):
        first = start
        while first < end:
            n = min(shard_size, end - first)
            if file.format == "jsonl":
                extra = {
                    "byte_start": int(ends[first - 1]) if first else 0,
                    "byte_end": int(ends[first + n - 1]),
                }
            else:
                group = int(np.searchsorted(group_starts, first, side="right") - 1)
                n = min(n, int(group_starts[group + 1]) - first)
                extra = {"row_group": group, "row_group_offset": first - int(group_starts[group])}
            if limit is not None:
                n = min(n, limit - planned)
                if n <= 0:
                    return
                if file.format == "jsonl":
                    extra["byte_end"] = int(ends[first + n - 1])
            yield Shard(
                shard_id=shard_id(dataset.name, file.key, first),
                dataset=dataset.name,
                file_uri=file.uri,
                file_key=file.key,
                format=file.format,
                first_row=first,
                num_rows=n,
                num_repeats=dataset.num_repeats,
                **extra,
                **stamp,
            )
            planned += n
            first += n


def _gaps(covered: list[tuple[int, int]], total: int) -> Iterator[tuple[int, int]]:
    """The [start, end) ranges of 0..total that no range in sorted `covered` holds."""
    at = 0
    for start, end in covered:
        if start > at:
            yield at, min(start, total)
        at = max(at, end)
        if at >= total:
            return
    if at < total:
        yield at, total


def _line_ends(uri: str) -> np.ndarray:
    """The byte just after each line of a JSONL file (the last line may lack a newline)."""
    fs, path = storage.split_uri(uri)
    parts, offset = [], 0
    with fs.open(path, "rb", block_size=SCAN_BLOCK) as f:
        while block := f.read(SCAN_BLOCK):
            parts.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + offset + 1)
            offset += len(block)
    ends = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if offset and (not len(ends) or ends[-1] < offset):
        ends = np.append(ends, offset)
    return ends
