"""Input files: find them, cut them into shards without parsing rows, read one shard.

JSONL files are cut at line starts by scanning for newlines in large blocks (memory
stays at one block whatever the file's size); Parquet files by row groups, from the
footer alone. A shard names its rows by their position in the file, so a row's
`task_id` is the same in every run over the same file.

Files that can't be cut by byte ranges (compressed JSONL, `.json` arrays) are staged
once at plan time as plain JSONL under the job's output (see `staging`); before a
shard is read, the file's size and version are checked against the plan, so an input
changed under a job stops it instead of silently giving other rows.
"""

from __future__ import annotations

import glob as globlib
import hashlib
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
    format: str  # jsonl, json (a top-level array) or parquet
    size: int
    version: str  # mtime or ETag: changes when the file's content does
    compression: str | None = None  # fsspec's name (gzip, zstd, ...), from the extension

    @property
    def needs_staging(self) -> bool:
        """Whether byte ranges of this file are not rows (see `staging`)."""
        return self.compression is not None or self.format == "json"


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
    #: The file's size and version when planned: checked before the shard is read.
    file_size: int | None = None
    file_version: str | None = None
    #: The user's file when `file_uri` is its staged copy; None otherwise.
    source_uri: str | None = None
    #: Kept only for its committed work (its file changed, or its dataset left the
    #: config, under --force-new-config): never retried.
    retired: bool | None = None

    @property
    def source(self) -> str:
        """The input file as the user named it (stored as each record's source_file)."""
        return self.source_uri or self.file_uri

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
    #: Repairs made to the row before use (stored as the record's row_warnings).
    warnings: list[str] | None = None


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
                f"dataset {dataset.name!r}: can't tell the format of {match!r}; use .jsonl, "
                ".json or .parquet (optionally compressed, e.g. .jsonl.gz) or set `format:`"
            )
        compression = _compression_of(match)
        if compression and fmt == "parquet":
            raise ConfigError(
                f"dataset {dataset.name!r}: {match!r} is a compressed Parquet file; Parquet "
                "compresses its own pages: decompress it (e.g. `gunzip`) and point at the "
                ".parquet file"
            )
        info = storage.retrying(lambda m=match: fs.info(m), f"stat {match}")
        key = _file_key(match, base, keys)
        keys.add(key)
        files.append(
            InputFile(
                storage.full_uri(fs, match),
                key,
                fmt,
                int(info["size"]),
                storage.version_stamp(info),
                compression,
            )
        )
    return files


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    keep = []
    for part in parts:
        if globlib.has_magic(part):
            break
        keep.append(part)
    return "/".join(keep)


#: Extensions of compressed files, as fsspec names their codecs.
COMPRESSIONS = {
    ".gz": "gzip",
    ".gzip": "gzip",
    ".bz2": "bz2",
    ".xz": "xz",
    ".lzma": "lzma",
    ".zst": "zstd",
    ".zstd": "zstd",
}


def _compression_of(path: str) -> str | None:
    name = path.lower()
    return next((codec for ext, codec in COMPRESSIONS.items() if name.endswith(ext)), None)


def _format_of(path: str, declared: str) -> str | None:
    """jsonl, json (sniffed when planned: a top-level array, or JSON Lines), parquet."""
    if declared != "auto":
        return declared
    name = path.lower()
    for ext in COMPRESSIONS:
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def _file_key(path: str, base: str, taken: set[str]) -> str:
    rel = path[len(base) :].lstrip("/") if base and path.startswith(base) else path
    rel = rel or path.rsplit("/", 1)[-1]
    for ext in COMPRESSIONS:
        if rel.lower().endswith(ext):
            rel = rel[: -len(ext)]
            break
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
            shard_id=f"{dataset.name}/{file.key}:{first_row}",
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
                shard_id=f"{dataset.name}/{file.key}:{first}",
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
