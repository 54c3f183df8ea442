"""Pieces of work, and what is left of a job: plan minus commits.

A shard with no commit is done whole (round 0). A shard whose latest round left
retryable failures gets the next round, holding exactly those rollouts while tries are
left, and always the rollouts a stopped run cut short. Nothing here reads an output
row: a round's keys come from its failures file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rollout_ray.inputs.sources import Shard
from rollout_ray.output.schema import Commit


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
    #: Which try of its rollouts this is (1 = first): a round after one cut short by
    #: a stop keeps its number (see next_round).
    attempt: int = 1

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
                "attempt": self.attempt,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> WorkItem:
        data = json.loads(text)
        keys = [tuple(k) for k in data["keys"]] if data["keys"] is not None else None
        return cls(
            Shard.from_dict(data["shard"]),
            data["round"],
            keys,
            data.get("extra") or {},
            data.get("attempt") or data["round"] + 1,
        )


KeysOf = Callable[[str, bool], list[tuple[int, int]]]


def pending_work(
    shards: Iterable[Shard], latest: dict[str, Commit], max_attempts: int, keys_of: KeysOf
) -> list[WorkItem]:
    """What is left: shards without a commit, and the next round of the others.

    Args:
        shards: the plan.
        latest: each shard's latest commit record (by round), keyed by shard id.
        max_attempts: a rollout is tried at most this many times.
        keys_of: reads a failures file and returns the (row, rollout) keys to redo
            (see manifest.redo_keys).
    """
    items = []
    for shard in shards:
        last = latest.get(shard.shard_id)
        item = WorkItem(shard) if last is None else next_round(shard, last, max_attempts, keys_of)
        if item is not None and not shard.retired:
            items.append(item)
    return items


def retries_left(last: Commit, max_attempts: int) -> bool:
    """Whether the retryable failures of a shard's latest round are tried again."""
    return last.attempt < max_attempts


def next_round(shard: Shard, last: Commit, max_attempts: int, keys_of: KeysOf) -> WorkItem | None:
    """The piece that redoes what a shard's latest round left, if anything: its
    retryable failures while tries are left, and always the rollouts a stop cut short.

    A round cut short by a stop (Ctrl-C) is not a try: the next one keeps its attempt
    number, so a rollout is never refused a try because a run was interrupted (its
    retryable failures ride along with that number too, one extra try at most).
    """
    if shard.retired or not last.failures_file:
        return None
    retry = last.n_retryable > 0 and retries_left(last, max_attempts)
    if not retry and not last.n_interrupted:
        return None
    keys = keys_of(last.failures_file, not retry)
    if not keys:
        return None
    attempt = last.attempt if last.n_interrupted else last.attempt + 1
    return WorkItem(shard, last.round + 1, sorted(keys), attempt=attempt)
