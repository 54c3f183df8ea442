"""Engines: the implementations behind the engine blocks, each kind one module that ends
by registering its block with its builder (registry.py).

Implementations import their heavy libraries (vllm, openai) only when built, so that
`rollout-ray --help` and the driver stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollout_ray.engines.base import (
    Engine,
    EngineDead,
    FatalEngineError,
    Generation,
    GenerationRequest,
)
from rollout_ray.engines.registry import EngineKind, kind_of, register_engine

if TYPE_CHECKING:
    from rollout_ray.config import JobConfig

__all__ = [
    "Engine",
    "EngineDead",
    "EngineKind",
    "FatalEngineError",
    "Generation",
    "GenerationRequest",
    "create_engine",
    "kind_of",
    "register_engine",
]


def create_engine(config: JobConfig, device: str = "cpu") -> Engine:
    """Build the engine the config asks for, in this process."""
    return kind_of(config.engine).build(config, config.engine, device)
