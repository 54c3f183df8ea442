"""The coordinator: one named actor per job that owns the plan and receives commits.

Its state is rebuilt from the manifest files whenever it starts, so losing it loses
nothing: commit records are written before a commit is acknowledged. Commits that
arrive while a write is under way are written together (group commit), so the number
of manifest files grows with time, not with the number of pieces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from rollout_ray import secrets, storage
from rollout_ray.config import JobConfig
from rollout_ray.errors import JobFault
from rollout_ray.inputs.sources import Shard
from rollout_ray.output import manifest
from rollout_ray.output.job_state import JobState
from rollout_ray.output.lease import RENEW_EVERY_S, Lease, LeaseLost
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import Commit
from rollout_ray.output.work import WorkItem, next_round
from rollout_ray.run import ray_facts
from rollout_ray.run.figures import RunFigures
from rollout_ray.run.tries import PieceTries

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0


class Coordinator:
    """The Ray actor body (async): plan, commits, progress and the output's lease."""

    def __init__(
        self,
        config_json: str,
        owner: dict[str, Any],
        job_name: str,
        watch_s: float = 0.0,
        secret_env: dict[str, str] | None = None,
    ):
        secrets.apply(secret_env or {})  # masks its own cloud credentials (from its env)
        self.config = JobConfig.model_validate_json(config_json)
        self.layout = Layout(self.config.output)
        # The driver took the lease; this actor keeps it (and, restarted, takes it up).
        self.lease = Lease(self.layout.lease_dir, owner)
        self.lease.adopt()
        self.max_attempts = self.config.max_attempts
        self.owner = owner
        self.job_name = job_name
        self.watch_s = watch_s
        self.queue: deque[WorkItem] = deque()
        self._watcher: asyncio.Task | None = None
        plan = storage.read_parquet(self.layout.plan)
        shards = [Shard.from_dict(row) for row in plan.to_pylist()]
        commits = manifest.read_commits(self.layout)
        names = [d.name for d in self.config.datasets]
        self.state = JobState(self.layout, shards, commits, self.max_attempts, names)
        self._committed_files: set[str] | None = manifest.committed_files(commits)
        self.closed = False  # the run has ended: late commits are refused
        self.stopping = False  # asked to stop: running pieces commit what is finished
        self.run_started = False  # start_run has queued this run's pieces
        self.shards = {shard.shard_id: shard for shard in shards}
        #: Pieces handed out and not committed yet.
        self.outstanding: set[str] = set()
        #: Pieces whose commit is being written: off their engine, not yet durable.
        self.committing: set[str] = set()
        self.tries = PieceTries(ray_facts.node_alive)
        self.ray_metrics = ray_facts.ray_metrics(job_name) if self.config.metrics else None
        self.figures = RunFigures()
        self.status = "running"
        self._buffer: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._ticker: asyncio.Task | None = None
        # Ray restarted this actor (its process or node died): take the run up again
        # from the manifest, as the driver's start_run would have.
        self.restarted = ray_facts.reconstructed()
        self._resume_on_first_call = self.restarted

    # ------------------------------------------------------------ driver calls

    async def start_run(self) -> int:
        """Queue this run's pending pieces; start progress, lease upkeep and watching.

        Returns:
            How many pieces are pending.
        """
        if self._committed_files is not None and not self.restarted:
            # Before any attempt of this run writes: files no commit names are left by
            # attempts of earlier runs that were lost, and are removed.
            removed = await asyncio.to_thread(
                manifest.sweep_orphans, self.layout, self._committed_files, self.lease.guard
            )
            if removed:
                log.info("removed %d files no commit names (lost attempts)", removed)
        self._committed_files = None
        items = self.state.pending(self.max_attempts)
        self.queue.extend(items)
        self.run_started = True
        self.figures.start(sum(item.num_rollouts for item in items))
        loop = asyncio.get_running_loop()
        if self._ticker is None:
            self._ticker = loop.create_task(self._tick())
        if self.watch_s and self._watcher is None:
            self._watcher = loop.create_task(self._watch())
        return len(items)

    async def next_items(self, max_items: int) -> list[str] | None:
        """Hand out up to `max_items` pending pieces (as JSON).

        Returns:
            The pieces; [] when none is ready yet but more may come (watching); None
            when the run has nothing more to hand out.
        """
        if self._resume_on_first_call:
            self._resume_on_first_call = False
            await self.start_run()
        if self.stopping:
            return None
        deadline = time.monotonic() + 2.0
        while not self.queue:
            # Pieces still running may leave retryable failures, retried in this run.
            # A pipeline started before the run was (Pump) asks before there is work.
            if self.run_started and not self.watch_s and not self.outstanding:
                return None
            if time.monotonic() > deadline:
                return []
            await asyncio.sleep(0.2)
        out = []
        while self.queue and len(out) < max_items:
            item = self.queue.popleft()
            self.outstanding.add(item.piece_id)
            out.append(item.to_json())
        return out

    def stop(self) -> None:
        """Stop the run (the first Ctrl-C): nothing more is handed out, and each running
        piece, told through `report`, commits the rollouts it finished (see
        PieceRunner); the run ends when they have. What they had not finished is
        redone next run."""
        if not self.stopping:
            self.stopping = True
            self.queue.clear()
            log.info("stopping: %d pieces running commit what they finished", len(self.outstanding))

    def _pieces_running(self) -> int:
        """Pieces on an engine now: begun (handed out is not begun) and not yet handed
        back for commit (a commit being written no longer needs its engine)."""
        return sum(
            1
            for piece_id in self.outstanding
            if piece_id in self.tries.nodes and piece_id not in self.committing
        )

    def abandon(self, piece_id: str) -> None:
        """A piece that stopped before finishing any rollout: nothing to commit; it is
        pending again next run, as if never handed out."""
        self.outstanding.discard(piece_id)
        self.figures.partials.pop(piece_id, None)

    def progress(self) -> dict[str, Any]:
        return {
            "job": self.job_name,
            "output": secrets.redact(self.layout.output),
            "status": self.status,
            "updated_at": manifest.now_utc().isoformat(),
            "run": self.figures.run(self.tries, self.restarted, self._pieces_running()),
            "datasets": self.state.totals(),
        }

    async def finish(self, status: str) -> dict[str, Any]:
        """Flush, refuse later commits, write final progress, compact the commits and
        remove files no commit names (the driver then frees the output)."""
        await self._drain()
        self.closed = True
        self.status = status
        for task in (self._ticker, self._watcher):
            if task is not None:
                task.cancel()
        progress = self.progress()
        await asyncio.to_thread(self._write_final, progress)
        if self.lease.lost is not None:
            progress["lease_lost"] = str(self.lease.lost)
        return progress

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """The job's last file, written here under the lease like every other.

        Raises:
            LeaseLost: another job holds the output now; nothing was written.
        """
        self.lease.guard()
        storage.write_json_atomic(self.layout.metrics, metrics)

    # ------------------------------------------------------------ worker calls

    def begin(self, piece_id: str, node: str = "") -> dict[str, Any]:
        """Called when a piece starts: its tries and suspect rows (see tries.py), or
        that it needn't run (committed already, or the run is stopping)."""
        if piece_id in self.state.committed:
            self.outstanding.discard(piece_id)
            return {"committed": True}
        if self.stopping:  # handed out before the stop, not started: left for next run
            self.abandon(piece_id)
            return {"committed": None, "stop": True}
        tries, suspects = self.tries.begin(piece_id, node)
        if self.figures.first_piece_at is None:
            self.figures.first_piece_at = time.time()
        return {"committed": None, "tries": tries, "suspects": suspects}

    def running(self, piece_id: str, row_index: int | None) -> None:
        """Which row of a piece run row by row is on the engine now (None: done)."""
        self.tries.running(piece_id, row_index)

    def report(
        self,
        partials: dict[str, tuple[int, int]],
        actor: str = "",
        engine_stats: dict[str, float] | None = None,
    ) -> bool:
        """Live figures from an engine actor: rollouts done in its unfinished pieces,
        and its engine's own counters (requests running, request retries).

        Returns:
            Whether the run is stopping (the actor's running pieces then wrap up).
        """
        for piece_id, value in partials.items():
            known = piece_id in self.outstanding or self.restarted  # not abandoned
            if piece_id not in self.state.committed and known:
                self.figures.partials[piece_id] = (int(value[0]), int(value[1]))
        if engine_stats is not None:
            self.figures.engine_stats[actor] = engine_stats
        return self.stopping

    def register_actor(
        self, actor: str, start_s: float | None = None, engine: dict[str, Any] | None = None
    ) -> None:
        """Called when an engine actor starts (`start_s`: its imports and engine load;
        `engine`: its effective settings); a second call is a restart."""
        self.figures.actor_started(actor, start_s)
        if engine:
            self.figures.engine_config = engine

    async def commit(self, record: Commit, engine_stats: dict[str, float] | None = None) -> None:
        """Acknowledge a piece once its commit record is durable. The engine's counters
        come along, so the final progress has them whatever the report timing."""
        if engine_stats is not None:
            self.figures.engine_stats[record.actor] = engine_stats
        if record.piece_id in self.state.committed:
            return
        if self.closed:  # an attempt outliving its run: its piece is redone next run
            raise JobFault("the run has ended; this piece is redone on resume")
        future = asyncio.get_running_loop().create_future()
        self._buffer.append((record, future))
        self.committing.add(record.piece_id)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await future

    # ------------------------------------------------------------ internals

    async def _flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            records = [r for r, _ in batch]
            try:
                started = time.monotonic()
                # A commit is written only while the lease is held and fresh (renewed
                # first if this process stalled): a job that took over writes alone.
                await asyncio.to_thread(self.lease.guard)
                await asyncio.to_thread(manifest.write_commits, self.layout, records)
                self.figures.manifest_s += time.monotonic() - started
            except Exception as exc:
                if isinstance(exc, LeaseLost):
                    self.queue.clear()  # nothing more is handed out
                for record, future in batch:
                    self.committing.discard(record.piece_id)
                    if not future.done():  # a caller may have given up (cancelled)
                        future.set_exception(exc)
                continue
            for record, future in batch:
                if self.state.apply(record):
                    self.figures.landed(record)
                    if self.ray_metrics is not None:
                        self.ray_metrics.on_commit(record)
                    await self._queue_retry(record)
                self.figures.partials.pop(record.piece_id, None)
                self.outstanding.discard(record.piece_id)
                self.committing.discard(record.piece_id)
                if not future.done():  # in process, a cancelled piece's commit still lands
                    future.set_result(None)

    async def _queue_retry(self, record: Commit) -> None:
        """A committed piece's next round (its retryable rollouts while tries are
        left), queued in this run after the pieces already queued."""
        shard = self.shards.get(record.shard_id)
        if shard is None or self.stopping or not (record.n_retryable or record.n_interrupted):
            return
        try:
            item = await asyncio.to_thread(
                next_round, shard, record, self.max_attempts, manifest.redo_keys
            )
        except Exception as exc:  # the next run retries it (plan minus commits)
            log.warning("can't queue the retry of %s: %s", record.piece_id, exc)
            return
        if item is not None:
            self.queue.append(item)
            self.figures.todo += item.num_rollouts

    async def _watch(self) -> None:
        """Plan new input files (and grown ones) as they appear, and queue their pieces."""
        from rollout_ray.output.plan import extend_plan

        while True:
            await asyncio.sleep(self.watch_s)
            try:
                shards = await asyncio.to_thread(extend_plan, self.config, self.state.shards)
            except Exception as exc:  # a listing that failed is tried again next time
                log.warning("watch: planning new inputs failed: %s", exc)
                continue
            for shard in shards:
                self.state.add_shard(shard)
                self.shards[shard.shard_id] = shard
                item = WorkItem(shard)
                self.queue.append(item)
                self.figures.todo += item.num_rollouts
            if shards:
                log.info("watch: %d new shards", len(shards))

    async def _drain(self) -> None:
        while self._flusher is not None and not self._flusher.done():
            await self._flusher

    async def _tick(self) -> None:
        while True:
            await self.upkeep()
            await asyncio.sleep(PROGRESS_EVERY_S)

    async def upkeep(self) -> None:
        """Renew the lease when due, and write progress (while the lease is held)."""
        try:
            if self.lease.lost is None and not self._renewed_recently():
                try:
                    await asyncio.to_thread(self.lease.renew)
                except LeaseLost as lost:
                    # Stop handing out work; commits now fail with this reason, and
                    # the job ends with it (everything committed is kept).
                    self.queue.clear()
                    log.error("%s", lost)
            started = time.monotonic()
            progress = self.progress()
            if self.lease.lost is None:
                await asyncio.to_thread(self._write_progress, progress)
            self.figures.manifest_s += time.monotonic() - started
            if self.ray_metrics is not None:
                self.ray_metrics.on_progress(progress["run"])
        except Exception as exc:  # progress and renewal are retried next tick
            log.warning("progress/lease upkeep failed: %s", exc)

    def _renewed_recently(self) -> bool:
        return time.monotonic() - self.lease.renewed_at < RENEW_EVERY_S

    def _write_progress(self, progress: dict[str, Any]) -> None:
        self.lease.guard()
        storage.write_json_atomic(self.layout.progress, progress)

    def _write_final(self, progress: dict[str, Any]) -> None:
        """The last writes of the run, each under the lease (the driver releases it
        after). A holder that lost the lease writes none of them: the files under the
        output, in flight ones included, are the new holder's."""
        try:
            manifest.close_run(self.layout, progress, self.lease.guard)
        except LeaseLost as lost:
            log.error("%s", lost)
