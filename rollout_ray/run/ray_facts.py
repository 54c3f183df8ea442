"""What the coordinator asks of Ray itself: was this actor restarted, is a node alive,
Ray's metrics API, this process's peak memory. Each answers sensibly outside Ray."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def in_ray() -> bool:
    """Whether this process is connected to Ray, without importing it (an import costs
    about a second, and asking Ray anything before ray.init starts a local Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def reconstructed() -> bool:
    import warnings

    try:
        if not in_ray():  # asking would start a Ray
            return False
        import ray

        with warnings.catch_warnings():  # Ray's own property uses a deprecated one
            warnings.simplefilter("ignore")
            return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not inside a Ray actor
        return False


def node_alive(node: str) -> bool:
    """Whether a Ray node is alive (asked only when a piece is started again)."""
    try:
        if not in_ray():
            return True
        import ray

        return any(n["NodeID"] == node and n["Alive"] for n in ray.nodes())
    except Exception:  # no cluster view: treat as alive, so the try is counted
        return True


def ray_metrics(job: str):
    """Ray's metrics API inside a Ray actor (the dashboard's view); None elsewhere."""
    try:
        if not in_ray():
            return None
        from rollout_ray.metrics import RayMetrics

        return RayMetrics(job)
    except Exception as exc:  # metrics must never stop a job
        log.warning("Ray metrics unavailable: %s", exc)
        return None


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
