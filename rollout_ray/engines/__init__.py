"""Engines: the registry that maps a config's `engine.kind` to an implementation.

Implementations import their heavy libraries (vllm, openai) only when built, so that
`rollout-ray --help` and the driver stay light.
"""

from __future__ import annotations

from rollout_ray.config import JobConfig
from rollout_ray.engines.base import Engine, EngineDead, Generation, GenerationRequest

__all__ = ["Engine", "EngineDead", "Generation", "GenerationRequest", "create_engine"]


def create_engine(config: JobConfig, device: str = "cpu") -> Engine:
    """Build the engine the config asks for, in this process."""
    kind = config.engine.kind
    if kind == "vllm":
        from rollout_ray.engines.vllm_engine import VLLMEngine

        return VLLMEngine(config.model, config.engine, device)
    if kind == "simulated":
        from rollout_ray.engines.simulated import SimulatedEngine

        return SimulatedEngine(config.model, config.engine)
    raise ValueError(f"unknown engine kind {kind!r}")
