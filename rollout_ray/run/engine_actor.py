"""The engine actor: the Ray Data callable class that holds one engine and runs one
piece per call. An engine that dies ends the process, so that Ray replaces the actor
and retries its pieces elsewhere."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from rollout_ray.config import JobConfig
from rollout_ray.engines import EngineDead
from rollout_ray.output.work import WorkItem
from rollout_ray.verifiers.remote import RemoteVerification

log = logging.getLogger(__name__)


class EngineWorker:
    """The Ray Data callable class: one engine per actor, one piece per call."""

    def __init__(
        self,
        config_json: str,
        coordinator_name: str,
        device: str,
        secret_env: dict[str, str] | None = None,
    ):
        started = time.monotonic()
        import ray

        from rollout_ray.run.coordinator_client import RayCoordinatorClient
        from rollout_ray.run.engine_host import attach_runner, start_engine
        from rollout_ray.run.placement import wait_for_actor

        config = JobConfig.model_validate_json(config_json)
        # The verifier actor starts (imports, worker processes) while the engine loads.
        verification = RemoteVerification(config, config.verifier_cpus, secret_env or {})
        verification.warm()
        engine, _ = start_engine(config, device, secret_env or {})
        client = RayCoordinatorClient(wait_for_actor(coordinator_name))
        context = ray.get_runtime_context()
        # Imports and engine load, for the run's phase table (metrics.json `phases`).
        start_s = round(time.monotonic() - started, 3)
        actor_id, node_id = context.get_actor_id() or "", context.get_node_id() or ""
        self.runner = attach_runner(
            config, engine, client, verification, actor_id, node_id, start_s
        )

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        item = WorkItem.from_json(str(batch["item"][0]))
        try:
            record = await self.runner.run(item)
        except EngineDead as exc:
            # Nothing more will succeed here: exit so that Ray replaces this actor and
            # retries its pieces elsewhere.
            log.error("engine died (%s); restarting the actor", exc)
            os._exit(1)
        # An empty commit: the piece had landed already (a retried Ray Data task).
        row = record.to_row() if record is not None else {}
        return {"commit": [json.dumps(row, default=str)]}
