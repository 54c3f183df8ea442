"""What a piece makes of each rollout: its record, or a failure record saying where and why.

A failure's message starts with where the row is (the file, then its line for JSONL
or its row for Parquet, counted from 1) and goes on with the reason, which names the
field at fault. Secrets are redacted before anything is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollout_ray.engines import Generation, GenerationRequest
from rollout_ray.errors import redact
from rollout_ray.inputs.images import text_messages
from rollout_ray.inputs.prompts import Prompt
from rollout_ray.inputs.sources import SourceRow
from rollout_ray.json_text import clean_text
from rollout_ray.output.manifest import now_utc
from rollout_ray.output.schema import FailureRecord
from rollout_ray.output.work import WorkItem

Key = tuple[int, int]  # (row_index, rollout_index)


class VerifierFailed(Exception):
    """The verifier could not judge a rollout (its message says why)."""


class RecordUnwritable(Exception):
    """A generated rollout holds a value its Parquet file can't store."""


class RolloutLost(Exception):
    """A rollout the piece was asked for has neither a record nor a failure."""


class EngineCrashed(Exception):
    """The engine's process died while this row ran alone on it."""


class RunStopped(Exception):
    """The run was stopped (Ctrl-C) before this rollout finished: not a failure; the
    next run does it (stage `interrupted`)."""

    def __init__(self) -> None:
        super().__init__("the run was stopped before this rollout finished; the next run does it")


@dataclass(slots=True)
class Rollout:
    """One rollout to generate: where it comes from and what to ask."""

    row: SourceRow
    prompt: Prompt
    index: int
    request: GenerationRequest
    sampling: dict[str, Any]  # as stored in the record's `sampling` column


def rollout_record(
    item: WorkItem, rollout: Rollout, gen: Generation, engine: Any
) -> dict[str, Any]:
    shard = item.shard
    return {
        "dataset": shard.dataset,
        "task_id": shard.task_id(rollout.row.row_index),
        "rollout_index": rollout.index,
        "source_file": shard.source,
        "row_index": rollout.row.row_index,
        "prompt_messages": text_messages(rollout.prompt.messages),  # images as a mark
        # An endpoint may send text Arrow can't store (a lone surrogate escape).
        "response_text": clean_text(gen.text) if gen.text is not None else None,
        # "" when a reasoning parser found the thinking closed at once; None without one.
        "reasoning_text": (
            clean_text(gen.reasoning_text) if gen.reasoning_text is not None else None
        ),
        "finish_reason": gen.finish_reason,
        "prompt_tokens": gen.prompt_tokens,
        "output_tokens": gen.output_tokens,
        "prompt_token_ids": gen.prompt_token_ids,
        "output_token_ids": gen.output_token_ids,
        "output_logprobs": gen.output_logprobs,
        "model": engine.model_label,
        "model_version": engine.model_version,
        "engine": engine.name,
        "sampling": rollout.sampling,
        "attempt": item.attempt,
        "latency_s": gen.latency_s,
        "ttft_s": gen.ttft_s,
        "created_at": now_utc(),
        "responses_create_params": rollout.prompt.responses_create_params,
        "row_warnings": rollout.prompt.warnings,
        "input": rollout.prompt.carried,
    }


def failure_record(
    item: WorkItem,
    row: SourceRow,
    rollout_index: int,
    stage: str,
    exc: BaseException,
    terminal: bool,
    secrets: tuple[str, ...] = (),
) -> FailureRecord:
    shard = item.shard
    where = "line" if shard.format == "jsonl" else "row"
    reason = str(exc) or type(exc).__name__
    name = shard.source.rsplit("/", 1)[-1]  # the file as the user named it (not its key)
    message = redact(f"{name} {where} {row.row_index + 1}: {reason}", secrets)
    record: FailureRecord = {
        "dataset": shard.dataset,
        "task_id": shard.task_id(row.row_index),
        "rollout_index": rollout_index,
        "source_file": shard.source,
        "row_index": row.row_index,
        "stage": stage,
        "error_class": type(exc).__name__,
        "error": message[:10_000],
        "attempt": item.attempt,
        "terminal": terminal,
        "raw_row": redact(row.raw, secrets)[:2000] if row.raw else None,
        "response_text": None,
        "created_at": now_utc(),
    }
    return record


def row_failures(
    item: WorkItem,
    row: SourceRow,
    wanted: dict[int, set[int]] | None,
    stage: str,
    exc: BaseException,
    terminal: bool,
    secrets: tuple[str, ...] = (),
) -> list[FailureRecord]:
    """A whole row's failure: one record (rollout -1) when all its repeats were asked
    for, else one per rollout asked for, so that a retry redoes only those."""
    indices = None if wanted is None else wanted.get(row.row_index)
    if indices is None or -1 in indices:
        return [failure_record(item, row, -1, stage, exc, terminal, secrets)]
    return [failure_record(item, row, i, stage, exc, terminal, secrets) for i in sorted(indices)]


def generated_failure(
    item: WorkItem,
    record: dict[str, Any],
    stage: str,
    exc: BaseException,
    terminal: bool = True,
    secrets: tuple[str, ...] = (),
) -> FailureRecord:
    """A generated rollout that failed later (verify, write): its response is kept, so
    nothing generated is lost."""
    row = SourceRow(record["row_index"], None)
    failure = failure_record(item, row, record["rollout_index"], stage, exc, terminal, secrets)
    failure["response_text"] = record.get("response_text")
    return failure


def expected_keys(item: WorkItem) -> set[Key]:
    """Every (row, rollout) a piece was asked for."""
    shard = item.shard
    repeats = range(shard.num_repeats)
    if item.keys is None:
        return {(shard.first_row + i, r) for i in range(shard.num_rows) for r in repeats}
    keys: set[Key] = set()
    for row, index in item.keys:
        if index < 0:
            keys.update((row, r) for r in repeats)
        else:
            keys.add((row, index))
    return keys


def without_token_data(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its token lists: verifiers don't need them, transfers shrink."""
    heavy = ("prompt_token_ids", "output_token_ids", "output_logprobs")
    return {k: v for k, v in record.items() if k not in heavy}
