"""The plan: every dataset's input cut into shards, and what is left to do.

Pending work = plan minus commits. A shard with no commit is done from scratch; a shard
whose latest piece left retryable failures gets a retry piece holding exactly those
rollouts. Nothing here reads an output row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from rollout_ray.config import JobConfig
from rollout_ray.sources import Shard, discover, plan_file

#: Engine fields that change how fast a job runs, not what it writes. A job may be
#: resumed with other values for these.
RESOURCE_FIELDS = {
    "concurrency",
    "shards_in_flight",
    "device",
    "num_gpus",
    "num_cpus",
    "tensor_parallel_size",
    "max_num_seqs",
    "gpu_memory_utilization",
    "cpu_kvcache_gib",
    "cpu_threads",
    "env",
    "max_concurrent_requests",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout_s",
    "max_retries",
    "latency_s",
}
_NON_SEMANTIC_TOP = {"output", "cli_overrides", "max_attempts", "verifier_cpus"}


@dataclass
class WorkItem:
    """A piece of work: a shard's rollouts (round 0) or the retryable ones of a round.

    `keys` lists (row_index, rollout_index) pairs to redo; rollout_index -1 means every
    repeat of that row. None means the whole shard.
    """

    shard: Shard
    round: int = 0
    keys: list[tuple[int, int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def piece_id(self) -> str:
        return f"{self.shard.shard_id}#r{self.round}"

    @property
    def num_rollouts(self) -> int:
        if self.keys is None:
            return self.shard.num_rows * self.shard.num_repeats
        return sum(self.shard.num_repeats if r < 0 else 1 for _, r in self.keys)

    def to_json(self) -> str:
        return json.dumps(
            {
                "shard": self.shard.to_dict(),
                "round": self.round,
                "keys": self.keys,
                "extra": self.extra,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkItem:
        data = json.loads(text)
        keys = [tuple(k) for k in data["keys"]] if data["keys"] is not None else None
        return cls(Shard.from_dict(data["shard"]), data["round"], keys, data.get("extra") or {})


def semantic_config(config: JobConfig) -> dict[str, Any]:
    """The parts of a config that decide what a job writes."""
    data = config.model_dump(mode="json")
    for key in _NON_SEMANTIC_TOP:
        data.pop(key, None)
    data["engine"] = {k: v for k, v in data["engine"].items() if k not in RESOURCE_FIELDS}
    return data


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def describe_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new)):
            changes += describe_changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changes = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            changes += describe_changes(a, b, f"{prefix}{i}.")
        return changes
    if old != new:
        return [f"{prefix.rstrip('.')}: {json.dumps(old)} -> {json.dumps(new)}"]
    return []


def build_plan(
    config: JobConfig, previous: list[Shard] | None = None
) -> tuple[list[dict[str, Any]], list[Shard]]:
    """Discover every dataset's files and cut them into shards, honouring `limit`.

    With `previous` (an earlier plan of this output) the plan only grows: earlier shards
    are kept as they are, and files are planned from where the earlier plan ended, so
    a grown file or a new file adds shards and committed work keeps its meaning.

    Returns:
        The planned files (as job.json records) and every shard, earlier ones first.
    """
    previous = previous or []
    ends: dict[tuple[str, str], tuple[int, int]] = {}
    planned_rows: dict[str, int] = {}
    for shard in previous:
        key = (shard.dataset, shard.file_uri)
        row_end, byte_end = ends.get(key, (0, 0))
        ends[key] = (
            max(row_end, shard.first_row + shard.num_rows),
            max(byte_end, shard.byte_end or 0),
        )
        planned_rows[shard.dataset] = planned_rows.get(shard.dataset, 0) + shard.num_rows
    files: list[dict[str, Any]] = []
    shards: list[Shard] = list(previous)
    for dataset in config.datasets:
        remaining = None
        if dataset.limit is not None:
            remaining = dataset.limit - planned_rows.get(dataset.name, 0)
        for file in discover(dataset):
            files.append(file_record(dataset.name, file))
            if remaining is not None and remaining <= 0:
                continue
            row_end, byte_end = ends.get((dataset.name, file.uri), (0, 0))
            for shard in plan_file(
                dataset, file, config.shard_rows(dataset), remaining, row_end, byte_end
            ):
                shards.append(shard)
                if remaining is not None:
                    remaining -= shard.num_rows
    return files, shards


def file_record(dataset: str, file: Any) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "uri": file.uri,
        "key": file.key,
        "format": file.format,
        "size": file.size,
        "version": file.version,
    }


def shards_table(shards: Iterable[Shard]) -> pa.Table:
    from rollout_ray.schema import PLAN_SCHEMA

    return pa.Table.from_pylist([s.to_dict() for s in shards], schema=PLAN_SCHEMA)


def pending_work(
    shards: Iterable[Shard],
    latest: dict[str, dict[str, Any]],
    max_attempts: int,
    retryable_keys: Callable[[str], list[tuple[int, int]]],
) -> list[WorkItem]:
    """What is left: shards without a commit, and retry pieces for retryable failures.

    Args:
        shards: the plan.
        latest: each shard's latest commit record (by round), keyed by shard id.
        max_attempts: a rollout is tried at most this many times (round r = attempt r+1).
        retryable_keys: reads a failures file and returns its retryable (row, rollout) keys.
    """
    items = []
    for shard in shards:
        last = latest.get(shard.shard_id)
        if last is None:
            items.append(WorkItem(shard))
        elif last["n_retryable"] and last["round"] + 1 < max_attempts:
            keys = retryable_keys(last["failures_file"])
            if keys:
                items.append(WorkItem(shard, last["round"] + 1, sorted(keys)))
    return items
