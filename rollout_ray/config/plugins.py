"""Engine kinds from installed packages: the `rollout_ray.engines` entry point group.

A package declares `name = module:Block` under the group; its module defines the block
and ends with `rollout_ray.engines.register_engine(Block, build=...)`. The entry points
are loaded the first time a config names a kind not built in, in whichever process
reads it (the driver, an engine actor): then every installed plugin is imported, so a
job on built-in kinds imports none.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from rollout_ray.config.engines import ENGINE_CONFIGS

log = logging.getLogger(__name__)
_loaded = False


def load_engine_plugins() -> None:
    """Import every installed engine plugin (once per process); each registers itself."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in entry_points(group="rollout_ray.engines"):
        if entry.name in ENGINE_CONFIGS:
            continue
        try:
            entry.load()  # the module's register_engine line adds the kind
        except Exception as exc:  # a broken plugin must not stop jobs that don't use it
            log.warning("engine plugin %s (%s) can't be loaded: %s", entry.name, entry.value, exc)
            continue
        if entry.name not in ENGINE_CONFIGS:
            log.warning(
                "engine plugin %s (%s) registered no kind named %r: its module must end "
                "with rollout_ray.engines.register_engine(...)",
                entry.name,
                entry.value,
                entry.name,
            )
