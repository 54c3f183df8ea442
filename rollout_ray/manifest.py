"""The output folder's layout and the manifest files that make a job resumable.

    data/dataset=NAME/part-….parquet       successful rollouts
    failures/dataset=NAME/part-….parquet   rollouts and rows that failed, with reasons
    _manifest/job.json                     config, fingerprints, versions
    _manifest/plan.parquet                 shards
    _manifest/commits/….parquet            one record per committed piece
    _manifest/progress.json                live progress for orchestrators
    _manifest/lease.json                   which process is writing this output now
    metrics.json                           aggregates when the job ends

A piece's files are written (atomically) before its commit record, so a commit always
points at durable files; a piece's file names derive from its id, so a retry
overwrites rather than duplicates.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from rollout_ray import storage
from rollout_ray.errors import ResumeRefused
from rollout_ray.schema import COMMIT_SCHEMA, FAILURE_SCHEMA
from rollout_ray.sources import Shard

LEASE_TTL_S = 60.0


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
    def lease(self) -> str:
        return self.path("_manifest", "lease.json")

    @property
    def metrics(self) -> str:
        return self.path("metrics.json")

    def data_dir(self, dataset: str) -> str:
        return self.path("data", f"dataset={dataset}")

    def failures_dir(self, dataset: str) -> str:
        return self.path("failures", f"dataset={dataset}")

    def piece_files(self, shard: Shard, round_: int) -> tuple[str, str]:
        """(data file, failures file) of a piece: the same names on every retry."""
        name = f"part-{_safe(shard.file_key)}-{shard.first_row:010d}-r{round_}.parquet"
        return (
            storage.join(self.data_dir(shard.dataset), name),
            storage.join(self.failures_dir(shard.dataset), name),
        )


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------------- commits


def write_commits(layout: Layout, records: list[dict[str, Any]]) -> str:
    """Write commit records as one new file; returns its URI."""
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    uri = storage.join(layout.commits, name)
    storage.write_parquet_atomic(uri, pa.Table.from_pylist(records, schema=COMMIT_SCHEMA))
    return uri


def read_commits(layout: Layout) -> list[dict[str, Any]]:
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
    records: dict[str, dict[str, Any]] = {}
    for table in tables:
        for record in table.to_pylist():
            records[record["piece_id"]] = record
    return list(records.values())


def compact_commits(layout: Layout, records: list[dict[str, Any]]) -> None:
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


# ---------------------------------------------------------------------------- lease


def lease_owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}


def _alive_here(lease: dict[str, Any]) -> bool | None:
    """Whether the lease's process is alive, if it ran on this host; None if unknown."""
    if lease.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(lease["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def acquire_lease(layout: Layout, owner: dict[str, Any]) -> None:
    """Take the output for this job, or refuse if another live job holds it.

    A lease names its owner (host, pid) and expires LEASE_TTL_S after its last renewal,
    so a crashed job's output is free again; on the same host a dead owner frees it
    at once.

    Raises:
        ResumeRefused: another job is writing this output now.
    """
    if storage.exists(layout.lease):
        try:
            held = storage.read_json(layout.lease)
        except (ValueError, OSError):
            held = {}
        alive = _alive_here(held)
        fresh = time.time() < float(held.get("expires_at", 0))
        if held.get("token") != owner["token"] and fresh and alive is not False:
            until = datetime.fromtimestamp(float(held["expires_at"]))
            raise ResumeRefused(
                f"another job is writing {layout.output} now (host {held.get('host')}, "
                f"pid {held.get('pid')}, lease renewed until "
                f"{until.isoformat(timespec='seconds')}). "
                "Wait for it to finish, stop it, or use another output."
            )
    renew_lease(layout, owner)
    # Read back: if two jobs raced, only one token survives and the other refuses.
    time.sleep(0.05)
    held = storage.read_json(layout.lease)
    if held.get("token") != owner["token"]:
        raise ResumeRefused(
            f"another job (host {held.get('host')}, pid {held.get('pid')}) took "
            f"{layout.output} at the same moment; use another output."
        )


def renew_lease(layout: Layout, owner: dict[str, Any]) -> None:
    storage.write_json_atomic(layout.lease, {**owner, "expires_at": time.time() + LEASE_TTL_S})


def release_lease(layout: Layout, owner: dict[str, Any]) -> None:
    try:
        held = storage.read_json(layout.lease)
    except (FileNotFoundError, ValueError):
        return
    if held.get("token") == owner["token"]:
        storage.remove(layout.lease)
