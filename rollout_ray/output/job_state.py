"""A job's counts, rebuilt from its plan and commit records: what is done, failed, left.

Plain Python, shared by the coordinator (live), `status` and `verify` (from the
manifest alone). A rollout that failed on an error that may pass counts as
`retryable` while the job would still retry it (attempts left, its shard active), and
as `exhausted` once it can't; a job is settled when a run would have nothing to do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rollout_ray.inputs.sources import Shard
from rollout_ray.output import aggregates, manifest
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import Commit
from rollout_ray.output.work import WorkItem, pending_work, retries_left


@dataclass
class DatasetCounts:
    """Rollout counts of one dataset over the whole job (all runs)."""

    expected: int = 0
    ok: int = 0
    failed: int = 0
    #: Failed rollouts a run of the job will try again (attempts left, shard active).
    retryable: int = 0
    #: Failed rollouts whose error may pass but that used up max_attempts (or whose
    #: shard was retired): failed for this job unless max_attempts is raised.
    exhausted: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    reward_sum: float = 0.0
    reward_count: int = 0
    shards_total: int = 0
    shards_done: int = 0
    #: Mergeable statistics of reward and numeric verifier fields (see aggregates).
    stats: dict[str, Any] = field(default_factory=dict)


class JobState:
    """Counts and commits of a job, rebuilt from its manifest. Plain Python."""

    def __init__(
        self,
        layout: Layout,
        shards: list[Shard],
        commits: list[Commit],
        max_attempts: int = 3,
        datasets: list[str] | tuple[str, ...] = (),
    ):
        """`datasets`: the config's dataset names, so that one whose input held no row
        (it has no shard) is still counted, as 0 of 0, and shown."""
        self.layout = layout
        self.max_attempts = max_attempts
        self.shards: list[Shard] = []
        self.retired: set[str] = set()
        self.datasets: dict[str, DatasetCounts] = {name: DatasetCounts() for name in datasets}
        for shard in shards:
            self.add_shard(shard)
        self.latest: dict[str, Commit] = {}
        self.committed: set[str] = set()
        for record in sorted(commits, key=lambda r: r.round):
            self.apply(record)

    def add_shard(self, shard: Shard) -> None:
        """Count a shard planned while the job runs (watch mode)."""
        self.shards.append(shard)
        if shard.retired:
            self.retired.add(shard.shard_id)
        counts = self.datasets.setdefault(shard.dataset, DatasetCounts())
        counts.expected += shard.num_rows * shard.num_repeats
        counts.shards_total += 1

    def apply(self, record: Commit) -> bool:
        """Count a commit record; False if that piece was already counted."""
        if record.piece_id in self.committed:
            return False
        self.committed.add(record.piece_id)
        counts = self.datasets.setdefault(record.dataset, DatasetCounts())
        previous = self.latest.get(record.shard_id)
        if (
            previous is not None
            and record.round > previous.round
            and retries_left(previous, self.max_attempts)
        ):
            # A later round redoes exactly the previous round's retryable rollouts
            # (and the ones a stop cut short, which were never counted as failed).
            counts.failed -= previous.n_retryable
        if previous is None:
            counts.shards_done += 1
        if previous is None or record.round >= previous.round:
            if previous is not None:
                self._count_retryable(counts, previous, -1)
            self.latest[record.shard_id] = record
            self._count_retryable(counts, record, +1)
        counts.ok += record.n_ok
        counts.failed += record.n_failed
        counts.prompt_tokens += record.prompt_tokens
        counts.output_tokens += record.output_tokens
        counts.reward_sum += record.reward_sum
        counts.reward_count += record.reward_count
        if record.stats:
            aggregates.merge(counts.stats, json.loads(record.stats))
        return True

    def _count_retryable(self, counts: DatasetCounts, latest: Commit, sign: int) -> None:
        """A shard's latest round's retryable failures: waiting for a retry, or not."""
        n = latest.n_retryable
        waiting = retries_left(latest, self.max_attempts) and latest.shard_id not in self.retired
        if waiting:
            counts.retryable += sign * n
        else:
            counts.exhausted += sign * n

    def pending(self, max_attempts: int) -> list[WorkItem]:
        return pending_work(self.shards, self.latest, max_attempts, manifest.redo_keys)

    def settled(self) -> bool:
        """Whether every planned rollout has its final outcome for this config: a run of
        the job now would have nothing to do."""
        return all(c.ok + c.failed - c.retryable >= c.expected for c in self.datasets.values())

    def totals(self) -> dict[str, dict[str, Any]]:
        """Per-dataset counts, with the statistics summarised (mean, std, histogram)."""
        totals = {}
        for name, counts in sorted(self.datasets.items()):
            row = asdict(counts)
            row["stats"] = aggregates.summarize(counts.stats)
            totals[name] = row
        return totals
