"""One piece of work inside an engine actor: read rows, generate, write, commit.

`PieceRunner` is plain asyncio and is tested without Ray; `EngineWorker` is the thin
Ray Data callable class around it (one per actor, one engine each). Every rollout of a
piece is submitted at once and several pieces run per actor, so the engine always has
work queued across a piece's long tail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from rollout_ray import storage
from rollout_ray.aggregates import piece_stats
from rollout_ray.config import JOB_SAMPLING_DEFAULTS, DatasetConfig, JobConfig
from rollout_ray.engines import Engine, EngineDead, FatalEngineError, Generation, GenerationRequest
from rollout_ray.errors import RowError, redact
from rollout_ray.manifest import Layout, now_utc
from rollout_ray.plan import WorkItem
from rollout_ray.prompts import Prompt, build_prompt
from rollout_ray.schema import failures_table, rollouts_table, sampling_record
from rollout_ray.sources import SourceRow, read_shard
from rollout_ray.verification import (
    LocalVerification,
    RemoteVerification,
    dataset_verifiers,
    verifier_record,
)

Verification = LocalVerification | RemoteVerification

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0


class CoordinatorClient(Protocol):
    """What a piece needs from the coordinator (the Ray actor, or a local stand-in)."""

    async def begin(self, piece_id: str, node: str = "") -> dict[str, Any]: ...
    async def commit(self, record: dict[str, Any]) -> None: ...
    def report(
        self,
        partials: dict[str, tuple[int, int]],
        actor: str = "",
        engine_stats: dict[str, float] | None = None,
    ) -> None: ...


class _Rollout:
    """One rollout to generate: where it comes from and what to ask."""

    __slots__ = ("index", "prompt", "request", "row", "sampling")

    def __init__(
        self,
        row: SourceRow,
        prompt: Prompt,
        index: int,
        request: GenerationRequest,
        sampling: dict[str, Any],
    ):
        self.row, self.prompt, self.index, self.request = row, prompt, index, request
        self.sampling = sampling  # as stored in the record's `sampling` column


class PieceRunner:
    def __init__(
        self,
        config: JobConfig,
        engine: Engine,
        coordinator: CoordinatorClient,
        layout: Layout,
        secrets: tuple[str, ...] = (),
        verification: Verification | None = None,
    ):
        self.config = config
        self.engine = engine
        self.coordinator = coordinator
        self.layout = layout
        self.secrets = secrets
        self.verification = verification or LocalVerification(dataset_verifiers(config), secrets)
        # Per dataset: its config, its resolved sampling, and the command line's part of
        # it (which beats a row's own values); plain dicts, as this is per-row work.
        self.datasets: dict[str, tuple[DatasetConfig, dict[str, Any], dict[str, Any]]] = {}
        for i, dataset in enumerate(config.datasets):
            base = JOB_SAMPLING_DEFAULTS.merged(config.sampling, dataset.sampling)
            pinned = base.model_dump(include=config.pinned_sampling(i), exclude_none=True)
            self.datasets[dataset.name] = (dataset, base.model_dump(exclude_none=True), pinned)
        self.io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rollout-io")
        self._partials: dict[str, list[int]] = {}
        self._reporter: asyncio.Task | None = None
        self.actor_id = ""
        self.node_id = ""
        self._gate: asyncio.Condition | None = None
        self._active = 0
        self._reloading = False

    # ------------------------------------------------------------------ the piece

    async def run(self, item: WorkItem) -> dict[str, Any]:
        """Do one piece and commit it; returns its commit record."""
        started = time.monotonic()
        begun = await self.coordinator.begin(item.piece_id, self.node_id)
        if begun.get("committed"):
            return begun["committed"]  # a retried task whose piece already landed
        self._ensure_reporter()
        loop = asyncio.get_running_loop()
        if begun.get("tries", 1) > self.config.max_attempts:
            failures = self._give_up(item, begun["tries"] - 1)
            ok: list[dict[str, Any]] = []
        else:
            rollouts, failures = await loop.run_in_executor(self.io, self._expand, item)
            self._partials[item.piece_id] = [0, 0]
            await self._enter()
            try:
                outcomes = await asyncio.gather(*(self._generate(item, r) for r in rollouts))
            finally:
                await self._leave()
            ok = [o for o in outcomes if "stage" not in o]
            failures += [o for o in outcomes if "stage" in o]
            if ok and self.datasets[item.shard.dataset][0].verifier is not None:
                ok, rejected = await self._verify(item, ok)
                failures += rejected
        record = await loop.run_in_executor(self.io, self._write, item, ok, failures, started)
        await self.coordinator.commit(record)
        self._partials.pop(item.piece_id, None)
        return record

    def _expand(self, item: WorkItem) -> tuple[list[_Rollout], list[dict[str, Any]]]:
        """Read the piece's rows and turn them into requests; unusable rows fail here."""
        shard = item.shard
        dataset, base, pinned = self.datasets[shard.dataset]
        wanted: dict[int, set[int]] | None = None
        if item.keys is not None:
            wanted = {}
            for row_index, rollout_index in item.keys:
                wanted.setdefault(row_index, set()).add(rollout_index)
        try:
            rows = read_shard(shard)
        except Exception as exc:  # storage gone after retries: the rows may be fine later
            rows = [SourceRow(shard.first_row + i, None) for i in range(shard.num_rows)]
            return [], [
                self._failure(item, row, -1, "read", exc, terminal=False)
                for row in rows
                if wanted is None or row.row_index in wanted
            ]
        rollouts, failures = [], []
        for row in rows:
            indices: list[int] = list(range(shard.num_repeats))
            if wanted is not None:
                if row.row_index not in wanted:
                    continue
                if -1 not in wanted[row.row_index]:
                    indices = sorted(wanted[row.row_index])
            try:
                if row.error is not None:
                    raise row.error
                assert row.value is not None
                prompt = build_prompt(row.value, dataset)
                sampling = {**base, **prompt.sampling, **pinned} if prompt.sampling else base
                token_ids = self.engine.prepare(prompt.messages, sampling)
            except RowError as exc:
                failures.append(self._failure(item, row, -1, exc.stage, exc, terminal=True))
                continue
            stored = sampling_record(sampling)
            seed = sampling.get("seed")
            extra = {"gym": prompt.responses_create_params is not None}
            for index in indices:
                request = GenerationRequest(
                    request_id=f"{item.piece_id}/{row.row_index}/{index}/{os.urandom(3).hex()}",
                    messages=prompt.messages,
                    # Rollout i of a row samples with seed + i: repeats differ, reruns agree.
                    sampling=sampling if seed is None else {**sampling, "seed": seed + index},
                    prompt_token_ids=token_ids,
                    extra=extra,
                )
                record_sampling = stored if seed is None else {**stored, "seed": seed + index}
                rollouts.append(_Rollout(row, prompt, index, request, record_sampling))
        return rollouts, failures

    async def _generate(self, item: WorkItem, rollout: _Rollout) -> dict[str, Any]:
        try:
            generation = await self.engine.generate(rollout.request)
        except (EngineDead, FatalEngineError):
            raise
        except RowError as exc:
            return self._failure(item, rollout.row, rollout.index, exc.stage, exc, terminal=True)
        except Exception as exc:
            return self._failure(item, rollout.row, rollout.index, "generate", exc, terminal=False)
        partial = self._partials.get(item.piece_id)
        if partial is not None:
            partial[0] += 1
            partial[1] += generation.output_tokens
        return self._record(item, rollout, generation)

    async def _enter(self) -> None:
        """Start generating; first reload the engine if a new checkpoint is there, once
        the pieces generating with the old one are done (watch_model)."""
        if self._gate is None:
            self._gate = asyncio.Condition()
        watch = getattr(self.config.engine, "watch_model", False)
        async with self._gate:
            while self._reloading:
                await self._gate.wait()
            if watch and await asyncio.to_thread(self.engine.checkpoint_changed):
                self._reloading = True
                while self._active:
                    await self._gate.wait()
                try:
                    await asyncio.to_thread(self.engine.reload)
                finally:
                    self._reloading = False
                    self._gate.notify_all()
            self._active += 1

    async def _leave(self) -> None:
        assert self._gate is not None
        async with self._gate:
            self._active -= 1
            self._gate.notify_all()

    async def _verify(
        self, item: WorkItem, records: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Reward each rollout; one the verifier can't judge becomes a failure that
        keeps its response, never a reward of 0."""
        dataset = self.datasets[item.shard.dataset][0]
        kind = dataset.verifier.kind
        views = [verifier_record(_without_token_data(r)) for r in records]
        outcomes = await self.verification.verify(dataset.name, views)
        ok, failures = [], []
        for record, (reward, details, error, terminal) in zip(records, outcomes, strict=True):
            if error is not None:
                row = SourceRow(record["row_index"], None)
                failure = self._failure(
                    item, row, record["rollout_index"], "verify", VerifierFailed(error), terminal
                )
                failure["response_text"] = record["response_text"]
                failures.append(failure)
                continue
            record.update(reward=reward, verifier=kind, verifier_details=json.dumps(details))
            ok.append(record)
        return ok, failures

    def _record(self, item: WorkItem, rollout: _Rollout, gen: Generation) -> dict[str, Any]:
        shard = item.shard
        return {
            "dataset": shard.dataset,
            "task_id": shard.task_id(rollout.row.row_index),
            "rollout_index": rollout.index,
            "source_file": shard.file_uri,
            "row_index": rollout.row.row_index,
            "prompt_messages": rollout.prompt.messages,
            "response_text": gen.text,
            "finish_reason": gen.finish_reason,
            "prompt_tokens": gen.prompt_tokens,
            "output_tokens": gen.output_tokens,
            "prompt_token_ids": gen.prompt_token_ids,
            "output_token_ids": gen.output_token_ids,
            "output_logprobs": gen.output_logprobs,
            "model": self.engine.model_label,
            "model_version": self.engine.model_version,
            "engine": self.engine.name,
            "sampling": rollout.sampling,
            "attempt": item.round + 1,
            "latency_s": gen.latency_s,
            "ttft_s": gen.ttft_s,
            "created_at": now_utc(),
            "responses_create_params": rollout.prompt.responses_create_params,
            "input": rollout.prompt.carried,
        }

    def _failure(
        self,
        item: WorkItem,
        row: SourceRow,
        rollout_index: int,
        stage: str,
        exc: BaseException,
        terminal: bool,
    ) -> dict[str, Any]:
        shard = item.shard
        message = redact(str(exc) or type(exc).__name__, self.secrets)
        return {
            "dataset": shard.dataset,
            "task_id": shard.task_id(row.row_index),
            "rollout_index": rollout_index,
            "source_file": shard.file_uri,
            "row_index": row.row_index,
            "stage": stage,
            "error_class": type(exc).__name__,
            "error": message,
            "attempt": item.round + 1,
            "terminal": terminal,
            "raw_row": redact(row.raw[:2000], self.secrets) if row.raw else None,
            "created_at": now_utc(),
        }

    def _give_up(self, item: WorkItem, crashes: int) -> list[dict[str, Any]]:
        """A piece whose actor died `crashes` times: its rollouts fail, retryable later."""
        exc = EngineDead(f"the engine actor died {crashes} times while running this piece")
        shard = item.shard
        keys = item.keys or [(shard.first_row + i, -1) for i in range(shard.num_rows)]
        return [
            self._failure(item, SourceRow(row, None), index, "generate", exc, terminal=False)
            for row, index in keys
        ]

    def _write(
        self,
        item: WorkItem,
        ok: list[dict[str, Any]],
        failures: list[dict[str, Any]],
        started: float,
    ) -> dict[str, Any]:
        """Write the piece's files durably and return its commit record."""
        data_uri, failures_uri = self.layout.piece_files(item.shard, item.round)
        if ok:
            storage.write_parquet_atomic(data_uri, rollouts_table(ok))
        if failures:
            storage.write_parquet_atomic(failures_uri, failures_table(failures))
        rewards = [r["reward"] for r in ok if r.get("reward") is not None]
        return {
            "piece_id": item.piece_id,
            "shard_id": item.shard.shard_id,
            "dataset": item.shard.dataset,
            "round": item.round,
            "data_file": data_uri if ok else None,
            "failures_file": failures_uri if failures else None,
            "n_expected": item.num_rollouts,
            "n_ok": len(ok),
            "n_failed": sum(self._rollouts_of(item, f) for f in failures),
            "n_retryable": sum(self._rollouts_of(item, f) for f in failures if not f["terminal"]),
            "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in ok),
            "output_tokens": sum(r["output_tokens"] or 0 for r in ok),
            "reward_sum": float(sum(rewards)),
            "reward_count": len(rewards),
            "seconds": time.monotonic() - started,
            "stats": json.dumps(piece_stats(ok)),
            "actor": self.actor_id,
            "node": self.node_id,
            "committed_at": now_utc(),
        }

    @staticmethod
    def _rollouts_of(item: WorkItem, failure: dict[str, Any]) -> int:
        """Rollouts a failure record stands for: a whole row stands for its repeats."""
        return item.shard.num_repeats if failure["rollout_index"] < 0 else 1

    # ------------------------------------------------------------------ progress

    def _ensure_reporter(self) -> None:
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def _report_loop(self) -> None:
        """Every second: rollouts done in unfinished pieces, and the engine's counters."""
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            try:
                partials = {k: (v[0], v[1]) for k, v in self._partials.items()}
                self.coordinator.report(partials, self.actor_id, self.engine.stats())
            except Exception as exc:  # progress is best effort
                log.debug("progress report failed: %s", exc)


class VerifierFailed(Exception):
    """The verifier could not judge a rollout (its message says why)."""


def _without_token_data(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its token lists: verifiers don't need them, transfers shrink."""
    heavy = ("prompt_token_ids", "output_token_ids", "output_logprobs")
    return {k: v for k, v in record.items() if k not in heavy}


class EngineWorker:
    """The Ray Data callable class: one engine per actor, one piece per call."""

    def __init__(self, config_json: str, coordinator_name: str, namespace: str, device: str):
        import ray

        from rollout_ray.coordinator import RayCoordinatorClient
        from rollout_ray.engines import create_engine
        from rollout_ray.logs import quiet_libraries

        quiet_libraries()
        config = JobConfig.model_validate_json(config_json)
        engine = create_engine(config, device)
        client = RayCoordinatorClient(ray.get_actor(coordinator_name, namespace=namespace))
        secrets = tuple(v for v in (os.environ.get(n) for n in secret_env_names(config)) if v)
        verification = RemoteVerification(config, config.verifier_cpus, secrets)
        self.runner = PieceRunner(
            config, engine, client, Layout(config.output), secrets, verification
        )
        context = ray.get_runtime_context()
        self.runner.actor_id = context.get_actor_id() or ""
        self.runner.node_id = context.get_node_id() or ""
        client.register_actor(self.runner.actor_id)

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        item = WorkItem.from_json(str(batch["item"][0]))
        try:
            record = await self.runner.run(item)
        except EngineDead as exc:
            # Nothing more will succeed here: exit so that Ray replaces this actor and
            # retries its pieces elsewhere.
            log.error("engine died (%s); restarting the actor", exc)
            os._exit(1)
        return {"commit": [json.dumps(record, default=str)]}


def secret_env_names(config: JobConfig) -> list[str]:
    """Environment variables whose values must never be written anywhere."""
    name = getattr(config.engine, "api_key_env", None)
    return [name] if name else []
