"""rollout-ray: collect LLM rollouts on Ray Data + vLLM, resumable, at any scale.

The Python API (docs/python-api.md): `run`, `read_rollouts`, `read_failures`, `export`;
`load_config` and `run_job` for finer control.
"""

from rollout_ray.api import read_failures, read_rollouts, run
from rollout_ray.config import JobConfig, load_config
from rollout_ray.exports import export
from rollout_ray.run.pipeline import JobResult, RunInterrupted, run_job
from rollout_ray.version import __version__

__all__ = [
    "JobConfig",
    "JobResult",
    "RunInterrupted",
    "__version__",
    "export",
    "load_config",
    "read_failures",
    "read_rollouts",
    "run",
    "run_job",
]
