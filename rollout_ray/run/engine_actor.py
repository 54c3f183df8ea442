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
from rollout_ray.output.manifest import Layout
from rollout_ray.output.plan import WorkItem
from rollout_ray.run.worker import PieceRunner
from rollout_ray.verifiers.remote import RemoteVerification

log = logging.getLogger(__name__)


class EngineWorker:
    """The Ray Data callable class: one engine per actor, one piece per call."""

    def __init__(
        self,
        config_json: str,
        coordinator_name: str,
        namespace: str,
        device: str,
        secret_env: dict[str, str] | None = None,
    ):
        started = time.monotonic()
        import ray

        from rollout_ray import secrets
        from rollout_ray.engines import create_engine
        from rollout_ray.logs import quiet_libraries
        from rollout_ray.run.coordinator_client import RayCoordinatorClient

        quiet_libraries()
        secret_env = secret_env or {}
        secrets.apply(secret_env)  # the API key, the cloud credentials: set, and masked
        config = JobConfig.model_validate_json(config_json)
        secrets.register(*secrets.config_values(config))
        # The verifier actor starts (imports, worker processes) while the engine loads.
        verification = RemoteVerification(config, config.verifier_cpus, secret_env)
        verification.warm()
        engine = create_engine(config, device)
        client = RayCoordinatorClient(ray.get_actor(coordinator_name, namespace=namespace))
        self.runner = PieceRunner(
            config, engine, client, Layout(config.output), secrets.known(), verification
        )
        context = ray.get_runtime_context()
        self.runner.actor_id = context.get_actor_id() or ""
        self.runner.node_id = context.get_node_id() or ""
        # Import and engine load, for the run's phase table (metrics.json `phases`).
        client.register_actor(self.runner.actor_id, round(time.monotonic() - started, 3))

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
