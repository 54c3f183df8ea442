"""Input files: find them, and what a shard of one and a row read from it are.

A shard names its rows by their position in the file, so a row's `task_id` is the
same in every run over the same file (cutting files into shards: see `shards`).

Files that can't be cut by byte ranges (compressed JSONL, `.json` arrays) are staged
once at plan time as plain JSONL under the job's output (see `staging`); before a
shard is read, the file's size and version are checked against the plan, so an input
changed under a job stops it instead of silently giving other rows.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import re
from dataclasses import asdict, dataclass, fields
from importlib import resources
from typing import Any

import numpy as np

from rollout_ray import storage
from rollout_ray.config import DatasetConfig
from rollout_ray.errors import ConfigError, RowError

SCAN_BLOCK = 16 << 20
SAMPLE_SCHEME = "sample:"


@dataclass(frozen=True)
class InputFile:
    uri: str
    key: str  # stable, readable name of the file within its dataset
    format: str  # jsonl, json (a top-level array), parquet or arrow (staged as parquet)
    size: int
    version: str  # mtime or ETag: changes when the file's content does
    compression: str | None = None  # fsspec's name (gzip, zstd, ...), from the extension

    @property
    def needs_staging(self) -> bool:
        """Whether byte ranges of this file are not rows (see `staging`)."""
        return self.compression is not None or self.format in ("json", "arrow")


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


def discover(dataset: DatasetConfig, known: dict[str, str] | None = None) -> list[InputFile]:
    """The dataset's input files, sorted, each with a stable key and a version stamp.

    `known` maps the URIs of files an earlier plan holds to their keys: they keep them,
    and a file that appeared since never takes one (keys name task ids: `sub/a.jsonl`
    planned as "sub-a", then `sub-a.jsonl` added, would take "sub-a" by sort order).

    Raises:
        ConfigError: nothing matches the path, or a file's format is unknown.
    """
    path = resolve_sample(dataset.path) if dataset.path.startswith(SAMPLE_SCHEME) else dataset.path
    fs, inner = storage.split_uri(path)
    if globlib.has_magic(inner):
        matches = sorted(fs.glob(inner))
        base = _glob_base(inner)
    elif storage.retrying(lambda: fs.isdir(inner), f"stat {path}"):
        matches = sorted(
            p
            for p in fs.find(inner)
            if _format_of(p, "auto") is not None and p.rsplit("/", 1)[-1] not in HF_METADATA
        )
        base = inner
    else:
        matches = [inner] if storage.retrying(lambda: fs.exists(inner), f"stat {path}") else []
        base = inner.rsplit("/", 1)[0]
    matches = [m for m in matches if not storage.retrying(lambda m=m: fs.isdir(m), "stat")]
    if not matches:
        raise ConfigError(f"dataset {dataset.name!r}: no input files match {dataset.path!r}")
    known = known or {}
    files, keys = [], set(known.values())
    for match in matches:
        fmt = _format_of(match, dataset.format)
        if fmt is None:
            raise ConfigError(
                f"dataset {dataset.name!r}: can't tell the format of {match!r}; use .jsonl, "
                ".json, .parquet or .arrow (JSON optionally compressed, e.g. .jsonl.gz) or "
                "set `format:`"
            )
        compression = _compression_of(match)
        if compression and fmt in ("parquet", "arrow"):
            raise ConfigError(
                f"dataset {dataset.name!r}: {match!r} is a compressed Parquet file; Parquet "
                "compresses its own pages: decompress it (e.g. `gunzip`) and point at the "
                ".parquet file"
            )
        info = storage.retrying(lambda m=match: fs.info(m), f"stat {match}")
        uri = storage.full_uri(fs, match)
        key = known.get(uri) or _file_key(match, base, keys)
        keys.add(key)
        files.append(
            InputFile(
                uri,
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


#: A Hugging Face `save_to_disk` folder's own metadata, not rows: its rows are the
#: folder's .arrow files.
HF_METADATA = {"state.json", "dataset_info.json", "dataset_dict.json"}


def _format_of(path: str, declared: str) -> str | None:
    """jsonl, json (sniffed when planned: a top-level array, or JSON Lines), parquet,
    arrow (Arrow IPC stream or file, as Hugging Face `datasets` saves them)."""
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
    if name.endswith((".arrow", ".feather", ".ipc")):
        return "arrow"
    return None


def _file_key(path: str, base: str, taken: set[str]) -> str:
    rel = path[len(base) :].lstrip("/") if base and path.startswith(base) else path
    rel = rel or path.rsplit("/", 1)[-1]
    for ext in COMPRESSIONS:
        if rel.lower().endswith(ext):
            rel = rel[: -len(ext)]
            break
    stem = re.sub(r"\.(jsonl|ndjson|json|parquet|pq|arrow|feather|ipc)$", "", rel, flags=re.I)
    key = re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem).strip("-.") or "file"
    if key in taken:
        key = f"{key}-{hashlib.sha1(path.encode()).hexdigest()[:6]}"
    return key
