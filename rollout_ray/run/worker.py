"""One piece of work inside an engine actor: read rows, generate, verify, write, commit.

`PieceRunner` is plain asyncio and is tested without Ray; `EngineWorker`
(engine_actor.py) is the thin Ray Data callable class around it (one per actor, one
engine each). Every rollout of a
piece is submitted at once and several pieces run per actor, so the engine always has
work queued across a piece's long tail.

One rule holds at every stage: an exception while handling one row or rollout is that
row's failure record (stage, error class, message naming the file, line and field),
never the piece's or the job's. Only a JobFault (storage, an input changed, the
engine can't serve) stops the job. If a piece fails as a whole anyway (a bug), or
keeps killing its actor, it is run again row by row, alone on the engine: the rows at
fault become terminal failures and the rest is committed, so no piece is generated
again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rollout_ray.config import JobConfig
from rollout_ray.engines import Engine, EngineDead
from rollout_ray.errors import JobFault, RowError, redact
from rollout_ray.output.manifest import INTERRUPTED, Layout
from rollout_ray.output.schema import Commit
from rollout_ray.output.work import WorkItem
from rollout_ray.run.agent_rollouts import AgentRollouts
from rollout_ray.run.coordinator_client import CoordinatorClient
from rollout_ray.run.engine_gate import EngineGate
from rollout_ray.run.outcomes import (
    EngineCrashed,
    Rollout,
    RunStopped,
    VerifierFailed,
    failure_record,
    generated_failure,
    rollout_record,
    without_token_data,
)
from rollout_ray.run.piece_files import write_piece
from rollout_ray.run.requests import PieceRequests
from rollout_ray.verifiers.remote import (
    LocalVerification,
    RemoteVerification,
    dataset_verifiers,
    verifier_record,
)

Verification = LocalVerification | RemoteVerification

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0


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
        self.episodes = AgentRollouts(engine, secrets)
        self.requests = PieceRequests(config, engine, self.episodes, secrets)
        self.io = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rollout-io")
        self._partials: dict[str, list[int]] = {}
        self._reporter: asyncio.Task | None = None
        self.actor_id = ""
        self.node_id = ""
        self.gate = EngineGate(engine, config.engine.reloads_model())
        self._stopping: asyncio.Event | None = None
        self.begun = 0  # pieces begun on this engine (a crash in one counts against it)

    # ------------------------------------------------------------------ the piece

    async def run(self, item: WorkItem) -> Commit | None:
        """Do one piece and commit it; returns its commit record (None: another attempt
        had committed it already).

        Raises:
            EngineDead: the engine is gone (the actor must be replaced).
            JobFault: the job can't go on (storage, a changed input, the coordinator).
        """
        started = time.monotonic()
        begun = await self.coordinator.begin(item.piece_id, self.node_id)
        self.begun += 1
        if begun.get("committed") or begun.get("stop"):
            return None  # a retried task whose piece already landed, or the run stopped
        self._ensure_reporter()
        crashes = begun.get("tries", 1) - 1
        try:
            if crashes >= self.config.max_attempts:
                suspects = set(begun.get("suspects") or ())
                ok, failures = await self._isolated(item, suspects, crashes)
            else:
                ok, failures = await self._attempt(item)
        except (EngineDead, JobFault):
            raise
        except Exception as exc:
            ok, failures = await self._after_bug(item, exc)
        if not ok and failures and all(f["stage"] == INTERRUPTED for f in failures):
            # Stopped before anything finished: nothing to keep; pending next run.
            self._partials.pop(item.piece_id, None)
            await self.coordinator.abandon(item.piece_id)
            return None
        loop = asyncio.get_running_loop()
        write = functools.partial(
            write_piece, self.layout, item, ok, failures, actor=self.actor_id, node=self.node_id
        )
        record = await loop.run_in_executor(
            self.io, lambda: write(seconds=time.monotonic() - started, secrets=self.secrets)
        )
        await self.coordinator.commit(record, self.engine.stats())
        self._partials.pop(item.piece_id, None)
        return record

    async def _after_bug(
        self, item: WorkItem, exc: Exception
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A piece that failed as a whole (a bug): run it row by row; if even that
        fails, commit nothing as done, so its rollouts are retried (see write_piece)."""
        reason = f"{type(exc).__name__}: {redact(str(exc), self.secrets)[:300]}"
        log.warning("piece %s failed as a whole (%s); running it row by row", item.piece_id, reason)
        try:
            return await self._isolated(item, set(), 0)
        except (EngineDead, JobFault):
            raise
        except Exception as again:
            log.error("piece %s failed row by row too: %r", item.piece_id, again)
            return [], []

    async def _attempt(self, item: WorkItem) -> tuple[list[dict], list[dict]]:
        """The piece as usual: every rollout submitted at once, then verified."""
        loop = asyncio.get_running_loop()
        rollouts, failures = await loop.run_in_executor(self.io, self.requests.expand, item)
        self._partials[item.piece_id] = [0, 0]
        async with self.gate.use():
            ok, failed = await self._generate_and_verify(item, rollouts)
        return ok, failures + failed

    async def _generate_and_verify(
        self, item: WorkItem, rollouts: list[Rollout]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Rollouts on the engine, then the verifier: (records, failure records)."""
        outcomes = await self._generate_all(item, rollouts)
        ok = [o for o in outcomes if "stage" not in o]
        failures = [o for o in outcomes if "stage" in o]
        if ok and self.requests.dataset(item.shard.dataset).verifier is not None:
            ok, rejected = await self._verify(item, ok)
            failures += rejected
        return ok, failures

    async def _isolated(
        self, item: WorkItem, suspects: set[int], crashes: int
    ) -> tuple[list[dict], list[dict]]:
        """The piece row by row, alone on the engine, each row's work guarded.

        Before each row the coordinator is told which row runs; if the actor dies, the
        next try of the piece learns that row as a suspect and fails it (terminal)
        instead of running it: each crash isolates one row, so the piece ends.
        """
        loop = asyncio.get_running_loop()
        rollouts, failures = await loop.run_in_executor(self.io, self.requests.expand, item)
        self._partials[item.piece_id] = [0, 0]
        by_row: dict[int, list[Rollout]] = {}
        for rollout in rollouts:
            by_row.setdefault(rollout.row.row_index, []).append(rollout)
        ok: list[dict[str, Any]] = []
        async with self.gate.use(alone=True):
            for row_index, group in by_row.items():
                if self.stopping.is_set():
                    failures += [self._interrupted(item, r) for r in group]
                    continue
                if row_index in suspects:
                    crashed = EngineCrashed(
                        f"the engine actor died while this row ran alone on it "
                        f"(the piece had killed its actor {crashes} times)"
                    )
                    failures += [self._failed(item, r, "generate", crashed, True) for r in group]
                    continue
                await self.coordinator.running(item.piece_id, row_index)
                try:
                    row_ok, row_failed = await self._generate_and_verify(item, group)
                    ok += row_ok
                    failures += row_failed
                except (EngineDead, JobFault):
                    raise
                except Exception as exc:
                    failures += [self._failed(item, r, "generate", exc, True) for r in group]
            await self.coordinator.running(item.piece_id, None)
        return ok, failures

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the run stops (the coordinator says so through `report`)."""
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    async def _generate_all(self, item: WorkItem, rollouts: list[Rollout]) -> list[dict[str, Any]]:
        """Every rollout's outcome (its record or its failure), all on the engine at once.

        If the run stops meanwhile, the rollouts not finished yet are cancelled (the
        engine drops their requests) and come back as `interrupted`: the piece then
        commits what did finish, and the next run does the rest.
        """
        tasks = [asyncio.ensure_future(self._generate(item, r)) for r in rollouts]
        if not tasks:
            return []
        everything = asyncio.gather(*tasks)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({everything, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            everything.cancel()
            raise
        finally:
            stop.cancel()
        if everything.done():
            return everything.result()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        everything.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await everything
        outcomes = []
        for task, rollout in zip(tasks, rollouts, strict=True):
            if task.cancelled():
                outcomes.append(self._interrupted(item, rollout))
            elif (exc := task.exception()) is not None:
                raise exc  # EngineDead or a JobFault: _generate keeps every other error
            else:
                outcomes.append(task.result())
        return outcomes

    def _interrupted(self, item: WorkItem, rollout: Rollout) -> dict[str, Any]:
        return self._failed(item, rollout, INTERRUPTED, RunStopped(), False)

    async def _generate(self, item: WorkItem, rollout: Rollout) -> dict[str, Any]:
        dataset = self.requests.dataset(item.shard.dataset)
        try:
            if dataset.agent is not None:
                record = await self.episodes.rollout(item, rollout, dataset)
                if "stage" in record:
                    return record
                output_tokens = record["output_tokens"]
            else:
                generation = await self.engine.generate(rollout.request)
                record = rollout_record(item, rollout, generation, self.engine)
                output_tokens = generation.output_tokens
        except (EngineDead, JobFault):
            raise
        except RowError as exc:
            return self._failed(item, rollout, exc.stage, exc, True)
        except Exception as exc:
            return self._failed(item, rollout, "generate", exc, False)
        partial = self._partials.get(item.piece_id)
        if partial is not None:
            partial[0] += 1
            partial[1] += output_tokens
        return record

    async def _verify(
        self, item: WorkItem, records: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Reward each rollout; one the verifier can't judge becomes a failure that
        keeps its response, never a reward of 0."""
        dataset = self.requests.dataset(item.shard.dataset)
        kind = dataset.verifier.kind
        try:
            views = [verifier_record(without_token_data(r)) for r in records]
            outcomes = await self.verification.verify(dataset.name, views)
            if len(outcomes) != len(records):
                raise RuntimeError(f"{len(outcomes)} verdicts for {len(records)} rollouts")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the verifier can't be reached: may pass on retry
            reason = f"verification failed: {type(exc).__name__}: {exc}"
            outcomes = [(None, None, reason, False)] * len(records)
        ok, failures = [], []
        for record, (reward, details, error, terminal) in zip(records, outcomes, strict=True):
            if error is not None:
                failure = VerifierFailed(error)
                failures.append(generated_failure(item, record, "verify", failure, terminal))
                continue
            record.update(reward=reward, verifier=kind, verifier_details=details)
            ok.append(record)
        return ok, failures

    def _failed(
        self, item: WorkItem, rollout: Rollout, stage: str, exc: BaseException, terminal: bool
    ) -> dict[str, Any]:
        return failure_record(item, rollout.row, rollout.index, stage, exc, terminal, self.secrets)

    async def close(self) -> None:
        """Free what the runner holds besides the engine (the engine's owner closes
        it): the progress reporter, agent environments' clients and tool threads, the
        I/O threads."""
        if self._reporter is not None:
            self._reporter.cancel()
        await self.episodes.close()
        self.io.shutdown(wait=False)

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
                if await self.coordinator.report(partials, self.actor_id, self.engine.stats()):
                    self.stopping.set()
            except Exception as exc:  # progress is best effort
                log.debug("progress report failed: %s", exc)
