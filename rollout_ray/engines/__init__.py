"""Engines: the implementations behind the engine blocks (config/engines.py registers
the kinds and builds each through its block's `create`).

Implementations import their heavy libraries (vllm, openai) only when built, so that
`rollout-ray --help` and the driver stay light.
"""

from __future__ import annotations

from rollout_ray.config import JobConfig
from rollout_ray.engines.base import (
    Engine,
    EngineDead,
    FatalEngineError,
    Generation,
    GenerationRequest,
)

__all__ = [
    "Engine",
    "EngineDead",
    "FatalEngineError",
    "Generation",
    "GenerationRequest",
    "create_engine",
]


def create_engine(config: JobConfig, device: str = "cpu") -> Engine:
    """Build the engine the config asks for, in this process (see config/engines.py)."""
    return config.engine.create(config, device)
