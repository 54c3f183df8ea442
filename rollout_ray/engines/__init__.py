"""Engines: the registry that maps a config's `engine.kind` to an implementation.

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
    """Build the engine the config asks for, in this process."""
    kind = config.engine.kind
    if kind == "vllm":
        from rollout_ray.engines.vllm_engine import VLLMEngine

        return VLLMEngine(config.model, config.engine, device, metrics=config.metrics)
    if kind == "openai":
        from rollout_ray.engines.openai_engine import OpenAIEngine

        served = config.serve.served_model_name if config.serve else None
        return OpenAIEngine(config.engine.model_name or served or config.model, config.engine)
    if kind == "simulated":
        from rollout_ray.engines.simulated import SimulatedEngine

        return SimulatedEngine(config.model, config.engine)
    raise ValueError(f"unknown engine kind {kind!r}")
