"""A warm engine: a detached Ray actor that keeps a loaded engine between runs
(`rollout-ray up`), and the executor through which a run uses it.

A run whose model and engine settings match a warm engine's sends it the whole job: the
actor builds the job's coordinator and piece runner around its engine (as the local
executor does in its own process) and runs the pieces; the driver plans, holds the
lease, shows progress and writes nothing else. So a debug run pays neither Ray's start
nor the engine's load: what is left is the command's own start, the plan and the
generation itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

from rollout_ray.config import JobConfig
from rollout_ray.engines import EngineDead
from rollout_ray.errors import EngineFailed
from rollout_ray.output.manifest import Layout
from rollout_ray.output.schema import Commit
from rollout_ray.output.work import WorkItem


class WarmEngine:
    """The actor body: one engine, any number of jobs over time (or at once)."""

    def __init__(self, config_json: str, device: str, secret_env: dict[str, str]):
        from rollout_ray.run.engine_host import start_engine

        config = JobConfig.model_validate_json(config_json)
        self.model = config.model
        self.device = device
        self.engine, self.start_s = start_engine(config, device, secret_env)
        # What a job needs here, imported now rather than on the first job's clock.
        import rollout_ray.run.coordinator
        import rollout_ray.verifiers.remote  # noqa: F401

        self.jobs: dict[str, _Job] = {}
        self.started_at = time.time()

    def ready(self) -> dict[str, Any]:
        """What `up` and `status` show of it."""
        return {
            "model": self.model,
            "device": self.device,
            "start_s": self.start_s,
            "up_since": self.started_at,
            "jobs": len(self.jobs),
            "pid": os.getpid(),
        }

    async def open_job(
        self,
        config_json: str,
        owner: dict[str, Any],
        name: str,
        watch_s: float,
        secret_env: dict[str, str],
    ) -> str:
        """A job's coordinator and piece runner, around this engine; its id."""
        from rollout_ray import secrets
        from rollout_ray.run.coordinator import Coordinator
        from rollout_ray.run.coordinator_client import LocalCoordinatorClient
        from rollout_ray.run.engine_host import attach_runner
        from rollout_ray.verifiers.remote import LocalVerification, dataset_verifiers

        secrets.apply(secret_env)
        config = JobConfig.model_validate_json(config_json)
        secrets.register(*secrets.config_values(config))
        coordinator = Coordinator(config_json, owner, name, watch_s, secret_env)
        verification = LocalVerification(dataset_verifiers(config), secrets.known())
        await verification.warm()
        client = LocalCoordinatorClient(coordinator)
        # This job did not wait for the engine: its start counts 0 s in the job's phases.
        runner = attach_runner(
            config, self.engine, client, verification, f"warm-{os.getpid()}", "", 0.0
        )
        job_id = uuid.uuid4().hex
        self.jobs[job_id] = _Job(coordinator, runner, verification)
        return job_id

    async def call(self, job_id: str, method: str, *args: Any) -> Any:
        """A method of the job's coordinator (start_run, progress, stop, finish, ...)."""
        result = getattr(self.jobs[job_id].coordinator, method)(*args)
        return await result if asyncio.iscoroutine(result) else result

    async def run(self, job_id: str, in_flight: int) -> None:
        """Every pending piece of the job, `in_flight` at once, until the coordinator has
        none left (or the run stops).

        Raises:
            EngineFailed: the engine died; the next run resumes (after `up` again).
        """
        job = self.jobs[job_id]

        async def worker() -> None:
            while (items := await job.coordinator.next_items(1)) is not None:
                for text in items:
                    try:
                        commit = await job.runner.run(WorkItem.from_json(text))
                    except EngineDead as exc:
                        raise EngineFailed(
                            f"the warm engine died ({exc}); start it again with `rollout-ray up`"
                        ) from None
                    if commit is not None:
                        job.landed.append(json.dumps(commit.to_row(), default=str))

        workers = [asyncio.ensure_future(worker()) for _ in range(max(1, in_flight))]
        try:
            await asyncio.gather(*workers)
        finally:  # a fault in one piece stops the others
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    def take(self, job_id: str) -> list[str]:
        """The job's commit records landed since the last call."""
        job = self.jobs[job_id]
        landed, job.landed = job.landed, []
        return landed

    async def close_job(self, job_id: str) -> None:
        job = self.jobs.pop(job_id, None)
        if job is not None:
            for task in (job.coordinator._ticker, job.coordinator._watcher):
                if task is not None:
                    task.cancel()
            await asyncio.gather(
                job.runner.close(), job.verification.close(), return_exceptions=True
            )

    def shutdown(self) -> None:
        self.engine.close()


class _Job:
    def __init__(self, coordinator: Any, runner: Any, verification: Any):
        self.coordinator = coordinator
        self.runner = runner
        self.verification = verification
        self.landed: list[str] = []


class _Method:
    """`coordinator.progress` as run_job names it: the warm executor's `call` sends it."""

    def __init__(self, name: str):
        self.name = name


class _CoordinatorHandle:
    def __getattr__(self, name: str) -> _Method:
        return _Method(name)


class WarmExecutor:
    """run_job's executor when a warm engine matches the job (see warm.py: find)."""

    kind = "warm"

    def __init__(self, actor: Any, config: JobConfig, secret_env: dict[str, str], watch_s: float):
        self.actor = actor
        self.config = config
        self.secret_env = secret_env
        self.watch_s = watch_s
        self.name = ""
        self.timings: dict[str, float] = {}
        self._job = ""

    def start(self) -> None:
        """Nothing to start: Ray is connected and the engine loaded (warm.find)."""

    def start_coordinator(self, layout: Layout, owner: dict[str, Any], watch_s: float) -> Any:
        import ray

        from rollout_ray.run.placement import coordinator_name

        self.name = coordinator_name(layout)
        config = self.config.model_dump_json()
        opening = self.actor.open_job.remote(config, owner, self.name, watch_s, self.secret_env)
        self._job = ray.get(opening)
        return _CoordinatorHandle()

    def call(self, method: Any, *args: Any, timeout: float | None = None) -> Any:
        import ray

        return ray.get(self.actor.call.remote(self._job, method.name, *args), timeout=timeout)

    def prestart(self, layout: Layout, pieces: int) -> None:
        """Nothing to do: the engine is loaded."""

    def expect(self, pending: int, watch_s: float) -> None:
        """Nothing to do: the engine is loaded."""

    def stream(self, coordinator: Any, pending: int) -> Iterator[Commit]:
        import ray

        from rollout_ray.run.placement import shards_in_flight

        running = self.actor.run.remote(self._job, shards_in_flight(self.config, "cpu"))
        while True:
            done, _ = ray.wait([running], timeout=0.2)
            for row in ray.get(self.actor.take.remote(self._job)):
                yield Commit.from_row(json.loads(row))
            if done:
                ray.get(running)  # the job's fault, if it stopped on one
                for row in ray.get(self.actor.take.remote(self._job)):
                    yield Commit.from_row(json.loads(row))
                return

    def stop(self) -> None:
        """Nothing to do: a stopped run's pieces end in the actor (the coordinator's stop)."""

    def finish(self, coordinator: Any, status: str) -> dict[str, Any]:
        return self.call(_Method("finish"), status, timeout=300)

    def close(self) -> None:
        import ray

        if self._job:
            ray.get(self.actor.close_job.remote(self._job), timeout=60)
