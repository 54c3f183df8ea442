"""Engine kinds from elsewhere: `register_engine` for a block defined in a user's code,
and the `rollout_ray.engines` entry point group for installed packages (loaded by
every process, driver and actors, when the config package is imported)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from pydantic import Field
from pydantic.fields import FieldInfo

from rollout_ray.config.engines import (
    ENGINE_CONFIGS,
    EngineBlock,
    VLLMEngineConfig,
    engine_union,
)

log = logging.getLogger(__name__)


def register_engine(block: type[EngineBlock]) -> type[EngineBlock]:
    """Add an engine kind (usable as a class decorator). JobConfig accepts it from now
    on, in this process; for Ray actors, declare it as a `rollout_ray.engines` entry
    point so that every process registers it."""
    kind = block.model_fields["kind"].default
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{block.__name__}: set a default for `kind`, e.g. Literal['name']")
    ENGINE_CONFIGS[kind] = block
    from rollout_ray.config.job import JobConfig

    field = JobConfig.model_fields["engine"]
    JobConfig.model_fields["engine"] = FieldInfo.from_annotated_attribute(
        engine_union(),
        Field(default_factory=VLLMEngineConfig, description=field.description),
    )
    JobConfig.model_rebuild(force=True)
    return block


def load_engine_plugins() -> None:
    """Register the engine kinds other installed packages declare."""
    for entry in entry_points(group="rollout_ray.engines"):
        if entry.name in ENGINE_CONFIGS:
            continue
        try:
            register_engine(entry.load())
        except Exception as exc:  # a broken plugin must not stop jobs that don't use it
            log.warning("engine plugin %s (%s) can't be loaded: %s", entry.name, entry.value, exc)
