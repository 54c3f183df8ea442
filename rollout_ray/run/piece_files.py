"""A piece's two files (rollouts, failures) as Parquet bytes, and its accounting.

Building the rollout table can fail for one record: a value Arrow can't hold, such as
a token count beyond int32 in an endpoint's reply. Then each record is built alone,
the ones at fault are handed back with the field that broke them (they become
failure records of the write stage) and the rest are stored. One bad record never
holds back its piece, and a piece is never generated again for a fault that would
only repeat.

The accounting makes a commit add up by construction: every rollout the piece was
asked for is either stored or has a failure record; one missing from both (a bug)
gets a retryable failure, so it is retried instead of lost.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rollout_ray import storage
from rollout_ray.errors import StorageFailed
from rollout_ray.inputs.sources import SourceRow
from rollout_ray.output.aggregates import piece_stats
from rollout_ray.output.manifest import INTERRUPTED, Layout, now_utc
from rollout_ray.output.schema import ROLLOUT_FIELDS, Commit, failures_table, rollouts_table
from rollout_ray.output.work import WorkItem
from rollout_ray.run.outcomes import (
    Key,
    RecordUnwritable,
    RolloutLost,
    expected_keys,
    failure_record,
    generated_failure,
)


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def rollout_file(
    records: list[dict[str, Any]],
) -> tuple[bytes | None, list[dict[str, Any]], list[tuple[dict[str, Any], str]]]:
    """(Parquet bytes, the records stored, [(record, why) for those that can't be])."""
    if not records:
        return None, [], []
    try:
        return parquet_bytes(rollouts_table(records)), records, []
    except Exception:  # find the records at fault; see the module docstring
        pass
    good, bad = [], []
    for record in records:
        try:
            parquet_bytes(rollouts_table([record]))
            good.append(record)
        except Exception as exc:
            bad.append((record, _why(record, exc)))
    if not good:
        return None, [], bad
    try:
        return parquet_bytes(rollouts_table(good)), good, bad
    except Exception as exc:  # fine alone, not together: keep them all as failures
        reason = f"{type(exc).__name__}: {exc}"
        return None, [], bad + [(r, reason) for r in good]


def _why(record: dict[str, Any], exc: BaseException) -> str:
    """Which field of a record Arrow refuses, and why."""
    for field in ROLLOUT_FIELDS:
        try:
            pa.array([record.get(field.name)], field.type)
        except Exception as e:
            return f"field {field.name!r} can't be stored: {type(e).__name__}: {e}"
    return f"{type(exc).__name__}: {exc}"


def failure_file(records: list[dict[str, Any]]) -> bytes | None:
    """Parquet bytes of failure records. A record whose text still can't be stored is
    cut down to what locates and explains it; failures are never dropped."""
    if not records:
        return None
    try:
        return parquet_bytes(failures_table(records))
    except Exception:
        keep = ("dataset", "task_id", "rollout_index", "source_file", "row_index", "stage")
        slim = [
            {
                **{k: r.get(k) for k in keep},
                "error_class": str(r.get("error_class"))[:200],
                "error": repr(r.get("error"))[:2000],
                "attempt": r.get("attempt"),
                "terminal": bool(r.get("terminal")),
                "created_at": r.get("created_at"),
            }
            for r in records
        ]
        return parquet_bytes(failures_table(slim))


@dataclass
class Accounting:
    """What a piece owes and what it has: the commit's counts, and the missing keys."""

    expected: set[Key]
    ok: int
    failed: int
    retryable: int
    missing: list[Key]
    #: Not finished because the run stopped: neither ok nor failed (redone next run).
    interrupted: int = 0


def account(
    expected: set[Key],
    num_repeats: int,
    ok: Iterable[dict[str, Any]],
    failures: Iterable[dict[str, Any]],
) -> Accounting:
    """Count a piece: each expected rollout is ok, failed (retryable unless a terminal
    failure covers it), interrupted (its only record says the run stopped first), or
    missing. A whole-row failure (rollout -1) covers the row's expected rollouts."""
    ok_keys = {(r["row_index"], r["rollout_index"]) for r in ok} & expected
    terminal: set[Key] = set()
    covered: set[Key] = set()
    stopped: set[Key] = set()
    for f in failures:
        row, index = f["row_index"], f["rollout_index"]
        keys = [(row, i) for i in range(num_repeats)] if index < 0 else [(row, index)]
        for key in keys:
            if key in expected:
                (stopped if f["stage"] == INTERRUPTED else covered).add(key)
                if f["terminal"]:
                    terminal.add(key)
    interrupted = stopped - covered - ok_keys
    failed = expected - ok_keys - interrupted
    missing = sorted(failed - covered)
    retryable = len(failed - terminal)
    return Accounting(expected, len(ok_keys), len(failed), retryable, missing, len(interrupted))


def write_piece(
    layout: Layout,
    item: WorkItem,
    ok: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    seconds: float,
    actor: str = "",
    node: str = "",
    secrets: tuple[str, ...] = (),
) -> Commit:
    """Write a piece's files durably and return its commit record.

    Raises:
        StorageFailed: the output can't be written, after retries.
    """
    ok = list({(r["row_index"], r["rollout_index"]): r for r in ok}.values())
    data, ok, unwritable = rollout_file(ok)
    failures = failures + [
        generated_failure(item, r, "write", RecordUnwritable(why), True, secrets)
        for r, why in unwritable
    ]
    expected = expected_keys(item)
    counts = account(expected, item.shard.num_repeats, ok, failures)
    lost = RolloutLost("the rollout went missing inside its piece (a bug); it is retried")
    for row_index, rollout_index in counts.missing:
        row = SourceRow(row_index, None)
        failures.append(failure_record(item, row, rollout_index, "generate", lost, False, secrets))
    data_uri, failures_uri = layout.piece_files(item.shard, item.round, uuid.uuid4().hex[:10])
    failed = failure_file(failures)
    try:
        if data is not None:
            storage.write_bytes_atomic(data_uri, data)
        if failed is not None:
            storage.write_bytes_atomic(failures_uri, failed)
    except OSError as exc:
        raise StorageFailed(
            f"can't write the output at {layout.output}: {type(exc).__name__}: {exc}"
        ) from None
    rewards = [r["reward"] for r in ok if r.get("reward") is not None]
    return Commit(
        piece_id=item.piece_id,
        shard_id=item.shard.shard_id,
        dataset=item.shard.dataset,
        round=item.round,
        data_file=data_uri if data is not None else None,
        failures_file=failures_uri if failed is not None else None,
        n_expected=len(expected),
        n_ok=counts.ok,
        n_failed=counts.failed,
        n_retryable=counts.retryable,
        n_interrupted=counts.interrupted,
        attempt=item.attempt,
        prompt_tokens=sum(r["prompt_tokens"] or 0 for r in ok),
        output_tokens=sum(r["output_tokens"] or 0 for r in ok),
        reward_sum=float(sum(rewards)),
        reward_count=len(rewards),
        seconds=seconds,
        stats=json.dumps(piece_stats(ok)),
        actor=actor,
        node=node,
        committed_at=now_utc(),
    )
