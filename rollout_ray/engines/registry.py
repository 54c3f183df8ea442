"""Engine kinds: what the job does with each engine block.

A kind is its block (config/engines.py, or a plugin's module) and its module here,
which ends with one line:

    register_engine(VLLMEngineConfig, build=build, placement=placement, prepare=prepare)

`build` makes the engine in the process that runs it (an engine actor, or the driver
for the local executor); `placement` gives the Ray options and environment its actors
need; `check` refuses in the driver, before anything starts, what can't work; `prepare`
readies what the actors will need once Ray is up; `explain` turns a failure of `build`
that a setting of the block decides into a message naming that setting. Only `build`
is required. Ray Data
LLM keeps each processor config with its builder in the same way
(`ProcessorBuilder.register(config_type, builder)`); the blocks stay with the config
so that reading one never imports an engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rollout_ray.config.engines import ENGINE_CONFIGS, EngineBlock
from rollout_ray.errors import ConfigError

if TYPE_CHECKING:
    from rollout_ray.config import JobConfig
    from rollout_ray.engines.base import Engine

#: The modules of this package's own kinds (imported when a kind is first needed).
BUILT_IN = ("vllm_engine", "simulated", "openai_engine")


def _no_placement(block: Any, device: str, cores: int) -> tuple[dict[str, Any], dict[str, str]]:
    return {}, {}


def _no_check(job: JobConfig, block: Any, secret_env: dict[str, str]) -> None:
    return None


def _no_explanation(exc: BaseException) -> str | None:
    return None


def _nothing_to_prepare(
    job: JobConfig, block: Any, local: bool, notify: Callable[[str], None]
) -> None:
    return None


@dataclass(frozen=True)
class EngineKind:
    """What the job needs of an engine kind besides its settings."""

    #: (job, block, device) -> the engine, built in the calling process.
    build: Callable[[JobConfig, Any, str], Engine]
    #: (block, device, cores of a node) -> (Ray actor options, environment variables).
    placement: Callable[[Any, str, int], tuple[dict[str, Any], dict[str, str]]] = _no_placement
    #: (job, block, secret env) -> None, or raise to refuse the job before it starts.
    check: Callable[[JobConfig, Any, dict[str, str]], None] = _no_check
    #: (job, block, Ray started here?, notify) -> None: once Ray is up, in the driver.
    prepare: Callable[[JobConfig, Any, bool, Callable[[str], None]], None] = _nothing_to_prepare
    #: (the exception `build` raised) -> what to tell the user, or None to let it be.
    explain: Callable[[BaseException], str | None] = _no_explanation


_KINDS: dict[type[EngineBlock], EngineKind] = {}


def register_engine(
    block: type[EngineBlock],
    build: Callable[[JobConfig, Any, str], Engine],
    placement: Callable[[Any, str, int], tuple[dict[str, Any], dict[str, str]]] | None = None,
    check: Callable[[JobConfig, Any, dict[str, str]], None] | None = None,
    prepare: Callable[[JobConfig, Any, bool, Callable[[str], None]], None] | None = None,
    explain: Callable[[BaseException], str | None] | None = None,
) -> None:
    """Add an engine kind: JobConfig accepts its block from now on, in this process (a
    plugin's module is imported in every process that reads a config naming it)."""
    kind = block.model_fields["kind"].default
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{block.__name__}: set a default for `kind`, e.g. Literal['name']")
    ENGINE_CONFIGS[kind] = block
    _KINDS[block] = EngineKind(
        build,
        placement or _no_placement,
        check or _no_check,
        prepare or _nothing_to_prepare,
        explain or _no_explanation,
    )


def kind_of(block: EngineBlock) -> EngineKind:
    """The kind a block belongs to.

    Raises:
        ConfigError: its module never registered it (a plugin without its
            register_engine line).
    """
    found = _KINDS.get(type(block))
    if found is None and type(block).__module__.startswith("rollout_ray."):
        for name in BUILT_IN:
            importlib.import_module(f"rollout_ray.engines.{name}")
        found = _KINDS.get(type(block))
    if found is None:
        raise ConfigError(
            f"engine kind {block.kind!r} has no engine: its module must end with "
            "rollout_ray.engines.register_engine(Block, build=...)"
        )
    return found
