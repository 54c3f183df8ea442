"""rollout-ray: collect LLM rollouts on Ray Data + vLLM, resumable, at any scale."""

__version__ = "0.1.0"

from rollout_ray.config import JobConfig, load_config
from rollout_ray.run.pipeline import JobResult, run_job

__all__ = ["JobConfig", "JobResult", "__version__", "load_config", "run_job"]
