"""An engine and the piece runner around it, set up the same way wherever they run: in
a Ray engine actor (engine_actor.py) or in the local executor's process (local.py).

Both go through these two steps, so a limit, a secret or a registration added here
holds on both executors (they had drifted apart when each did its own set-up).
"""

from __future__ import annotations

import time
from typing import Any

from rollout_ray import secrets
from rollout_ray.config import JobConfig
from rollout_ray.engines import Engine, create_engine, kind_of
from rollout_ray.errors import EngineFailed
from rollout_ray.output.manifest import Layout
from rollout_ray.run.coordinator_client import CoordinatorClient
from rollout_ray.run.worker import PieceRunner


def start_engine(
    config: JobConfig, device: str, secret_env: dict[str, str]
) -> tuple[Engine, float]:
    """Set this process up for an engine (quiet libraries; the API key and cloud
    credentials set and masked), then build the engine.

    Returns:
        The engine, and the seconds its start took (for the run's phase table).

    Raises:
        EngineFailed: the engine can't start for a reason its kind explains (a setting
            of the config decides it: the message names the setting).
    """
    from rollout_ray.logs import quiet_libraries

    started = time.monotonic()
    quiet_libraries()
    secrets.apply(secret_env)
    secrets.register(*secrets.config_values(config))
    try:
        engine = create_engine(config, device)
    except Exception as exc:
        reason = kind_of(config.engine).explain(exc)
        if reason is None:
            raise
        raise EngineFailed(reason) from None
    return engine, round(time.monotonic() - started, 3)


def attach_runner(
    config: JobConfig,
    engine: Engine,
    client: CoordinatorClient,
    verification: Any,
    actor_id: str,
    node_id: str = "",
    start_s: float | None = None,
) -> PieceRunner:
    """The piece runner around a started engine, registered with the job's coordinator
    (a second registration of the same actor counts as a restart)."""
    runner = PieceRunner(
        config, engine, client, Layout(config.output), secrets.known(), verification
    )
    runner.actor_id, runner.node_id = actor_id, node_id
    client.register_actor(actor_id, start_s, engine.describe())
    return runner
