"""The output folder's layout and the manifest files that make a job resumable.

    data/dataset=NAME/part-….parquet       successful rollouts
    failures/dataset=NAME/part-….parquet   rollouts and rows that failed, with reasons
    _manifest/job.json                     config, fingerprints, versions
    _manifest/plan.parquet                 shards
    _manifest/commits/….parquet            one record per committed piece
    _manifest/progress.json                live progress for orchestrators
    _manifest/lease/GGGGGGGGGGGG.json      which job is writing this output (see lease.py)
    metrics.json                           aggregates when the job ends

A piece's files are written (atomically) before its commit record, so a commit always
points at durable files. Each attempt at a piece writes files of its own (an attempt id
in the name) and its commit record names them: readers use only committed files, a
late attempt can't change a committed one, and files no commit names (attempts that
were lost or lost the race) are swept when a run starts and ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from rollout_ray import storage
from rollout_ray.inputs.sources import Shard
from rollout_ray.output.schema import Commit, commits_from_table, commits_table


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


@dataclass(frozen=True)
class Layout:
    """Where each file of a job lives under its output URI (kept in canonical form:
    `outputs/x`, `./outputs/x/` and `file:///abs/outputs/x` are one output)."""

    output: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", storage.canonical(self.output))

    def name_of(self, uri: str) -> str:
        """How a commit record names a file: relative to the output's root when it lies
        under it, so an output copied or moved elsewhere (another folder, a bucket)
        still reads (as Delta Lake's log names its files)."""
        uri = storage.canonical(uri)
        root = self.output.rstrip("/") + "/"
        return uri[len(root) :] if uri.startswith(root) else uri

    def resolve(self, name: str) -> str:
        """The canonical URI of a file a commit record names (see `name_of`). Records of
        older versions named files by absolute path or URI, or relative to the working
        directory the job ran from; all read back."""
        if name.startswith(("data/", "failures/")):
            return storage.join(self.output, name)
        return storage.canonical(name)

    def path(self, *parts: str) -> str:
        return storage.join(self.output, *parts)

    @property
    def job(self) -> str:
        return self.path("_manifest", "job.json")

    @property
    def plan(self) -> str:
        return self.path("_manifest", "plan.parquet")

    @property
    def commits(self) -> str:
        return self.path("_manifest", "commits")

    @property
    def progress(self) -> str:
        return self.path("_manifest", "progress.json")

    @property
    def lease_dir(self) -> str:
        return self.path("_manifest", "lease")

    @property
    def metrics(self) -> str:
        return self.path("metrics.json")

    def data_dir(self, dataset: str) -> str:
        return self.path("data", f"dataset={dataset}")

    def failures_dir(self, dataset: str) -> str:
        return self.path("failures", f"dataset={dataset}")

    def piece_files(self, shard: Shard, round_: int, attempt: str) -> tuple[str, str]:
        """(data file, failures file) of one attempt at a piece. Every attempt writes
        its own names, so a late attempt can never change what another committed; the
        commit record names the files it covers, and the others are swept."""
        name = f"part-{_safe(shard.file_key)}-{shard.first_row:010d}-r{round_}-{attempt}.parquet"
        return (
            storage.join(self.data_dir(shard.dataset), name),
            storage.join(self.failures_dir(shard.dataset), name),
        )


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------- commits


def sweep_orphans(layout: Layout, committed: set[str], guard: Callable[[], None]) -> int:
    """Remove data and failure files that no commit names; returns how many.

    Call only when no attempt of this job is running (before a run hands out work, or
    after it ended): an attempt's files exist before its commit does. `guard` runs
    before each removal and raises if this process no longer holds the output's lease
    (another job's files in flight are never ours to remove).
    """
    keep = {storage.canonical(uri) for uri in committed}
    removed = 0
    for folder in ("data", "failures"):
        for uri in storage.list_files(layout.path(folder), ".parquet"):
            if uri not in keep:
                guard()
                storage.remove(uri)
                removed += 1
    return removed


def close_run(layout: Layout, progress: dict[str, Any], guard: Callable[[], None]) -> None:
    """A run's last writes, each after `guard` (the lease): its final progress, the
    commits folded into one file, and the files no commit names swept."""
    guard()
    storage.write_json_atomic(layout.progress, progress)
    compact_commits(layout, guard)
    sweep_orphans(layout, committed_files(read_commits(layout)), guard)


def committed_files(records: list[Commit]) -> set[str]:
    return {f for r in records for f in r.files}


def write_commits(layout: Layout, records: list[Commit]) -> str:
    """Write commit records as one new file; returns its URI. Files are named relative
    to the output (see Layout.name_of)."""
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    uri = storage.join(layout.commits, name)
    stored = [_renamed(r, layout.name_of) for r in records]
    storage.write_parquet_atomic(uri, commits_table(stored))
    return uri


def _renamed(record: Commit, name: Callable[[str], str]) -> Commit:
    return replace(
        record,
        data_file=name(record.data_file) if record.data_file else None,
        failures_file=name(record.failures_file) if record.failures_file else None,
    )


def read_commits(layout: Layout) -> list[Commit]:
    """Every commit record, deduplicated by piece (a retried commit repeats its record).

    A file may vanish between listing and reading when another process compacts the
    commits; its records are then in the compacted file, so the listing is redone.
    """
    for attempt in range(5):
        try:
            files = storage.list_files(layout.commits, ".parquet")
            return list(_records(layout, files).values())
        except FileNotFoundError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _records(layout: Layout, files: list[str]) -> dict[str, Commit]:
    """The records of commit files by piece (later files win), naming canonical URIs."""
    records: dict[str, Commit] = {}
    for uri in files:
        for record in commits_from_table(storage.read_parquet(uri)):
            records[record.piece_id] = _renamed(record, layout.resolve)
    return records


def compact_commits(layout: Layout, guard: Callable[[], None]) -> None:
    """Fold many small commit files into one, so resuming stays one read away.

    Only the files listed are folded and removed, so a commit file that appears
    meanwhile is kept. The compacted file is written before the small ones are
    removed; a crash in between leaves duplicates, which `read_commits` folds. `guard`
    runs before each write and raises if this process no longer holds the lease.
    """
    files = storage.list_files(layout.commits, ".parquet")
    if len(files) < 16:
        return
    records = _records(layout, files)
    guard()
    write_commits(layout, list(records.values()))
    for uri in files:
        guard()
        storage.remove(uri)


#: The failure stage of a rollout a stopped run did not finish (not a failure: the
#: next round does it).
INTERRUPTED = "interrupted"


def redo_keys(failures_uri: str, interrupted_only: bool = False) -> list[tuple[int, int]]:
    """(row_index, rollout_index) of what a failures file leaves to redo: its
    non-terminal failures, or only the rollouts a stop cut short."""
    names = ["row_index", "rollout_index", "terminal", "stage"]
    table = storage.read_parquet(failures_uri, names)
    keys = set()
    for row in table.to_pylist():
        if interrupted_only and row["stage"] != INTERRUPTED:
            continue
        if not row["terminal"]:
            keys.add((row["row_index"], row["rollout_index"]))
    # A whole-row failure (-1) covers that row's single-rollout keys.
    whole = {r for r, i in keys if i < 0}
    return sorted(k for k in keys if k[1] < 0 or k[0] not in whole)
