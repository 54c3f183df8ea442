"""`rollout-ray verify`: new rewards for stored rollouts, without generating again.

The verification-testing loop: change a verifier, re-score a finished job in seconds,
compare. The result is a complete job output of its own (manifest, data, failures,
metrics), so `status`, `export` and `inspect` work on it; like a job it commits piece
by piece and resumes where it stopped. Failure records are carried over as they are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

from rollout_ray import storage
from rollout_ray.config import JobConfig, VerifierConfig
from rollout_ray.errors import RolloutRayError, refuse
from rollout_ray.inputs.sources import Shard
from rollout_ray.output import manifest
from rollout_ray.output.aggregates import piece_stats
from rollout_ray.output.job_state import JobState
from rollout_ray.output.lease import Lease
from rollout_ray.output.lease import owner as lease_owner
from rollout_ray.output.manifest import Layout, now_utc
from rollout_ray.output.results import committed_pieces
from rollout_ray.output.schema import (
    Commit,
    FailureRecord,
    decode_rows,
    failures_table,
    record_from_row,
    rollouts_table,
)
from rollout_ray.run.preflight import unset
from rollout_ray.verifiers.remote import LocalVerification, verifier_record


def reverify(
    output: str,
    dest: str,
    verifiers: dict[str, VerifierConfig],
    on_piece: Any = None,
) -> dict[str, Any]:
    """Score every committed rollout of `output` again into `dest`.

    Args:
        output: the source job's output.
        dest: where the re-scored job goes (a new output; rerun to resume it).
        verifiers: the verifier for each dataset to re-score; other datasets are copied.
        on_piece: called with (done, total) after each piece.

    Returns:
        Per-dataset counts and statistics of the re-scored output.

    Raises:
        ConfigError: a verifier names a key variable that is not set.
    """
    # A key variable that is not set would fail every rollout: refused before anything.
    variables = sorted({getattr(v, "api_key_env", None) or "" for v in verifiers.values()})
    refuse([unset("verifier.api_key_env", v) for v in variables if v and not os.environ.get(v)])
    source, target = Layout(output), Layout(dest)
    # Like a job, one writer per output: a second `verify` into `dest` is refused.
    lease = Lease(target.lease_dir, lease_owner())
    lease.acquire()
    try:
        return _reverify(source, target, verifiers, lease.guard, on_piece)
    finally:
        lease.release()


def _reverify(
    source: Layout,
    target: Layout,
    verifiers: dict[str, VerifierConfig],
    guard: Callable[[], None],
    on_piece: Any,
) -> dict[str, Any]:
    output, dest = source.output, target.output
    if storage.exists(target.job):
        job = storage.read_json(target.job)
        if storage.canonical(job.get("reverified_from") or "") != output:
            raise RolloutRayError(f"{dest} already holds another job; choose a new output")
    else:
        job = storage.read_json(source.job)
        config = JobConfig.model_validate(job["config"])
        datasets = [
            d.model_copy(update={"verifier": verifiers.get(d.name, d.verifier)})
            for d in config.datasets
        ]
        job["config"] = config.model_copy(update={"datasets": datasets, "output": dest}).model_dump(
            mode="json"
        )
        job["reverified_from"] = output
        storage.write_bytes_atomic(target.plan, storage.read_bytes(source.plan))
        storage.write_json_atomic(target.job, job)
    done = {r.piece_id for r in manifest.read_commits(target)}
    pieces = committed_pieces(output)
    local = LocalVerification(verifiers)
    started = time.monotonic()

    async def run() -> None:
        for i, piece in enumerate(pieces):
            if piece.piece_id not in done:
                record = await _reverify_piece(piece, source, target, local, verifiers)
                guard()
                manifest.write_commits(target, [record])
            if on_piece:
                on_piece(i + 1, len(pieces))
        await local.close()

    asyncio.run(run())
    shards = [Shard.from_dict(r) for r in storage.read_parquet(target.plan).to_pylist()]
    state = JobState(target, shards, manifest.read_commits(target))
    manifest.compact_commits(target, guard)
    result = {
        "output": dest,
        "seconds": round(time.monotonic() - started, 3),
        "datasets": state.totals(),
    }
    guard()
    storage.write_json_atomic(target.metrics, {"status": "finished", **result})
    return result


async def _reverify_piece(
    piece: Commit,
    source: Layout,
    target: Layout,
    local: LocalVerification,
    verifiers: dict[str, VerifierConfig],
) -> Commit:
    started = time.monotonic()
    dataset = piece.dataset
    rows = decode_rows(storage.read_parquet(piece.data_file)) if piece.data_file else []
    records = [record_from_row(row) for row in rows]
    failures = storage.read_parquet(piece.failures_file).to_pylist() if piece.failures_file else []
    new_failures: list[FailureRecord] = []
    if dataset in verifiers and records:
        outcomes = await local.verify(dataset, [verifier_record(r) for r in records])
        scored = []
        kind = verifiers[dataset].kind
        for record, (reward, details, error, terminal) in zip(records, outcomes, strict=True):
            if error is None:
                record.update(reward=reward, verifier=kind, verifier_details=details)
                scored.append(record)
            else:
                new_failures.append(_verify_failure(record, error, terminal))
        records = scored
    kept_failures: list[Any] = failures + new_failures
    name = piece.files[0].rsplit("/", 1)[-1]
    data_uri = storage.join(target.data_dir(dataset), name)
    fail_uri = storage.join(target.failures_dir(dataset), name) if kept_failures else None
    if records:
        storage.write_parquet_atomic(data_uri, rollouts_table(records))
    if fail_uri is not None:
        storage.write_parquet_atomic(fail_uri, failures_table(kept_failures))
    rewards = [r["reward"] for r in records if r.get("reward") is not None]
    return dataclasses.replace(
        piece,
        data_file=data_uri if records else None,
        failures_file=fail_uri,
        n_ok=len(records),
        n_failed=piece.n_failed + piece.n_ok - len(records),
        n_retryable=piece.n_retryable + sum(not f["terminal"] for f in new_failures),
        reward_sum=float(sum(rewards)),
        reward_count=len(rewards),
        seconds=time.monotonic() - started,
        stats=json.dumps(piece_stats(records)),
        committed_at=now_utc(),
    )


def _verify_failure(row: dict[str, Any], error: str, terminal: bool) -> FailureRecord:
    record: FailureRecord = {
        "dataset": row["dataset"],
        "task_id": row["task_id"],
        "rollout_index": row["rollout_index"],
        "source_file": row["source_file"],
        "row_index": row["row_index"],
        "stage": "verify",
        "error_class": "VerifierFailed",
        "error": error[:10_000],
        "attempt": row.get("attempt") or 1,
        "terminal": terminal,
        "raw_row": None,
        "response_text": row["response_text"],
        "created_at": now_utc(),
    }
    return record
