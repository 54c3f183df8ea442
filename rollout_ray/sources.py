"""Input files: find them, cut them into shards without parsing rows, read one shard.

JSONL files are cut at line starts by scanning for newlines in large blocks (memory
stays at one block whatever the file's size); Parquet files by row groups, from the
footer alone. A shard names its rows by their position in the file, so a row's
`task_id` is the same in every run over the same file.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rollout_ray import storage
from rollout_ray.config import DatasetConfig
from rollout_ray.errors import ConfigError, RowError

SCAN_BLOCK = 16 << 20
SAMPLE_SCHEME = "sample:"


@dataclass(frozen=True)
class InputFile:
    uri: str
    key: str  # stable, readable name of the file within its dataset
    format: str
    size: int
    version: str  # mtime or ETag: changes when the file's content does


@dataclass(frozen=True)
class Shard:
    """A range of rows of one input file: the unit of work, retry and commit."""

    shard_id: str
    dataset: str
    file_uri: str
    file_key: str
    format: str
    first_row: int
    num_rows: int
    num_repeats: int
    byte_start: int | None = None
    byte_end: int | None = None
    row_group: int | None = None
    row_group_offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Shard:
        names = {f.name for f in fields(cls)}
        return cls(**{k: _plain(v) for k, v in data.items() if k in names})

    def task_id(self, row_index: int) -> str:
        return task_id(self.file_key, row_index)


def task_id(file_key: str, row_index: int) -> str:
    return f"{file_key}:{row_index}"


@dataclass
class SourceRow:
    """One input row as read: its position, its parsed value or why it can't be used."""

    row_index: int
    value: dict[str, Any] | None
    error: RowError | None = None
    raw: str | None = None


def _plain(value: Any) -> Any:
    """numpy scalars (from Ray Data batches) to Python values; NaN-free None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


# ---------------------------------------------------------------------------- discovery


def resolve_sample(path: str) -> str:
    """`sample:NAME` -> the bundled file's path."""
    name = path[len(SAMPLE_SCHEME) :]
    root = resources.files("rollout_ray") / "samples"
    for ext in (".jsonl", ".parquet"):
        candidate = root / f"{name}{ext}"
        if candidate.is_file():
            return str(candidate)
    available = sorted(p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.is_file())
    raise ConfigError(f"no bundled sample named {name!r}; available: {', '.join(available)}")


def discover(dataset: DatasetConfig) -> list[InputFile]:
    """The dataset's input files, sorted, each with a stable key and a version stamp.

    Raises:
        ConfigError: nothing matches the path, or a file's format is unknown.
    """
    path = resolve_sample(dataset.path) if dataset.path.startswith(SAMPLE_SCHEME) else dataset.path
    fs, inner = storage.split_uri(path)
    if globlib.has_magic(inner):
        matches = sorted(fs.glob(inner))
        base = _glob_base(inner)
    elif storage.retrying(lambda: fs.isdir(inner), f"stat {path}"):
        matches = sorted(p for p in fs.find(inner) if _format_of(p, "auto") is not None)
        base = inner
    else:
        matches = [inner] if storage.retrying(lambda: fs.exists(inner), f"stat {path}") else []
        base = inner.rsplit("/", 1)[0]
    matches = [m for m in matches if not storage.retrying(lambda m=m: fs.isdir(m), "stat")]
    if not matches:
        raise ConfigError(f"dataset {dataset.name!r}: no input files match {dataset.path!r}")
    files, keys = [], set()
    for match in matches:
        fmt = _format_of(match, dataset.format)
        if fmt is None:
            raise ConfigError(
                f"dataset {dataset.name!r}: can't tell the format of {match!r}; "
                "use .jsonl or .parquet or set `format:`"
            )
        info = storage.retrying(lambda m=match: fs.info(m), f"stat {match}")
        key = _file_key(match, base, keys)
        keys.add(key)
        version = str(info.get("ETag") or info.get("etag") or info.get("mtime") or "")
        files.append(InputFile(storage.full_uri(fs, match), key, fmt, int(info["size"]), version))
    return files


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    keep = []
    for part in parts:
        if globlib.has_magic(part):
            break
        keep.append(part)
    return "/".join(keep)


def _format_of(path: str, declared: str) -> str | None:
    if declared != "auto":
        return declared
    name = path.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def _file_key(path: str, base: str, taken: set[str]) -> str:
    rel = path[len(base) :].lstrip("/") if base and path.startswith(base) else path
    rel = rel or path.rsplit("/", 1)[-1]
    stem = re.sub(r"\.(jsonl|ndjson|json|parquet|pq)$", "", rel, flags=re.I)
    key = re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem).strip("-.") or "file"
    if key in taken:
        key = f"{key}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"
    return key


# ---------------------------------------------------------------------------- planning


def plan_file(
    dataset: DatasetConfig,
    file: InputFile,
    shard_size: int,
    limit: int | None,
    start_row: int = 0,
    start_byte: int = 0,
) -> Iterator[Shard]:
    """Cut one file into shards of `shard_size` rows, stopping after `limit` rows.

    Planning may resume where an earlier plan of the same file ended (`start_row`,
    and for JSONL `start_byte`), so that a grown file only adds shards.
    """
    ranges = (
        _jsonl_ranges(file.uri, shard_size, limit, start_row, start_byte)
        if file.format == "jsonl"
        else _parquet_ranges(file.uri, shard_size, limit, start_row)
    )
    for first_row, num_rows, extra in ranges:
        yield Shard(
            shard_id=f"{dataset.name}/{file.key}:{first_row}",
            dataset=dataset.name,
            file_uri=file.uri,
            file_key=file.key,
            format=file.format,
            first_row=first_row,
            num_rows=num_rows,
            num_repeats=dataset.num_repeats,
            **extra,
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


# ---------------------------------------------------------------------------- reading


def read_shard(shard: Shard) -> list[SourceRow]:
    """The shard's rows, parsed; a row that can't be parsed carries its error instead."""
    if shard.format == "jsonl":
        return _read_jsonl(shard)
    return _read_parquet(shard)


def _read_jsonl(shard: Shard) -> list[SourceRow]:
    fs, path = storage.split_uri(shard.file_uri)
    assert shard.byte_start is not None and shard.byte_end is not None

    def read() -> bytes:
        with fs.open(path, "rb") as f:
            f.seek(shard.byte_start)
            return f.read(shard.byte_end - shard.byte_start)

    data = storage.retrying(read, f"read {shard.file_uri}")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows = []
    for i, line in enumerate(lines[: shard.num_rows]):
        row_index = shard.first_row + i
        rows.append(parse_jsonl_line(line, row_index))
    return rows


def parse_jsonl_line(line: bytes, row_index: int) -> SourceRow:
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    where = f"line {row_index + 1}"
    if not text.strip():
        return SourceRow(row_index, None, RowError(f"{where}: empty line"), text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return SourceRow(row_index, None, RowError(f"{where}: malformed JSON: {exc}"), text)
    if not isinstance(value, dict):
        reason = f"{where}: expected a JSON object, got {type(value).__name__}"
        return SourceRow(row_index, None, RowError(reason), text)
    return SourceRow(row_index, value, None, None)


def _read_parquet(shard: Shard) -> list[SourceRow]:
    fs, path = storage.split_uri(shard.file_uri)

    def read():
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).read_row_group(shard.row_group)

    table = storage.retrying(read, f"read {shard.file_uri}")
    table = table.slice(shard.row_group_offset or 0, shard.num_rows)
    return [SourceRow(shard.first_row + i, row) for i, row in enumerate(table.to_pylist())]
