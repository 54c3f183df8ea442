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
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa

from rollout_ray import storage
from rollout_ray.inputs.sources import Shard
from rollout_ray.output.schema import FAILURE_SCHEMA, Commit, commits_from_table, commits_table


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


@dataclass(frozen=True)
class Layout:
    """Where each file of a job lives under its output URI."""

    output: str

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


def sweep_orphans(layout: Layout, committed: set[str]) -> int:
    """Remove data and failure files that no commit names; returns how many.

    Call only when no attempt of this job is running (before a run hands out work, or
    after it ended): an attempt's files exist before its commit does.
    """
    removed = 0
    for folder in ("data", "failures"):
        for uri in storage.list_files(layout.path(folder), ".parquet"):
            if uri not in committed:
                storage.remove(uri)
                removed += 1
    return removed


def committed_files(records: list[Commit]) -> set[str]:
    return {f for r in records for f in r.files}


def write_commits(layout: Layout, records: list[Commit]) -> str:
    """Write commit records as one new file; returns its URI."""
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    uri = storage.join(layout.commits, name)
    storage.write_parquet_atomic(uri, commits_table(records))
    return uri


def read_commits(layout: Layout) -> list[Commit]:
    """Every commit record, deduplicated by piece (a retried commit repeats its record).

    A file may vanish between listing and reading when another process compacts the
    commits; its records are then in the compacted file, so the listing is redone.
    """
    for attempt in range(5):
        try:
            tables = [
                storage.read_parquet(u) for u in storage.list_files(layout.commits, ".parquet")
            ]
            break
        except FileNotFoundError:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))
    records: dict[str, Commit] = {}
    for table in tables:
        for record in commits_from_table(table):
            records[record.piece_id] = record
    return list(records.values())


def compact_commits(layout: Layout, records: list[Commit]) -> None:
    """Fold many small commit files into one, so resuming stays one read away.

    The compacted file is written before the small ones are removed; a crash in
    between leaves duplicates, which `read_commits` folds.
    """
    files = storage.list_files(layout.commits, ".parquet")
    if len(files) < 16:
        return
    write_commits(layout, records)
    for uri in files:
        storage.remove(uri)


def retryable_keys(failures_uri: str) -> list[tuple[int, int]]:
    """(row_index, rollout_index) of the non-terminal failures in a failures file."""
    table = storage.read_parquet(failures_uri, ["row_index", "rollout_index", "terminal"])
    keys = set()
    for row in table.to_pylist():
        if not row["terminal"]:
            keys.add((row["row_index"], row["rollout_index"]))
    # A whole-row failure (-1) covers that row's single-rollout keys.
    whole = {r for r, i in keys if i < 0}
    return sorted(k for k in keys if k[1] < 0 or k[0] not in whole)


def empty_failures() -> pa.Table:
    return FAILURE_SCHEMA.empty_table()
